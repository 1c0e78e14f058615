"""Pages and their fragments, shared by the staff counter and the member portal.

One URL serves the page and, to an htmx request, just its named partial
("page.html#partial"); a restore from the browser's history needs the whole page.
"""

from django import forms
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.template.response import TemplateResponse


def wants_fragment(request: HttpRequest) -> bool:
    htmx = getattr(request, "htmx", None)
    return bool(htmx) and not htmx.history_restore_request  # type: ignore[union-attr]


def page_or_partial(request: HttpRequest, template: str, partial: str, context: dict[str, object]) -> TemplateResponse:
    """Render a page, or for htmx just its named partial (form errors come back with status 200)."""
    fragment = wants_fragment(request)
    response = TemplateResponse(request, f"{template}#{partial}" if fragment else template, {**context, "fragment": fragment})
    response["Vary"] = "HX-Request"
    return response


class ServiceForm(forms.Form):
    """A form that shows a service's refusal next to the fields it names, and above the form for any other."""

    # A page may hold several forms: each names its inputs' ids after itself.
    id_prefix = "form"

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("auto_id", f"{self.id_prefix}-%s")
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def add_service_error(self, error: ValidationError) -> None:
        if not hasattr(error, "error_dict"):
            self.add_error(None, error)
            return
        for field, errors in error.error_dict.items():
            self.add_error(field if field in self.fields else None, errors)
