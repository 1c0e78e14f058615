"""Forms of the staff counter's member pages: they parse what staff type; the services judge it."""

from django import forms
from django.core.exceptions import ValidationError
from django.utils import translation
from django.utils.translation import gettext_lazy as _

from members.models import Member


class CounterForm(forms.Form):
    """A counter form that shows a service's refusal next to the fields it names."""

    # Several forms share the member panel: each names its inputs' ids after itself.
    id_prefix = "counter"

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("auto_id", f"{self.id_prefix}-%s")
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def add_service_error(self, error: ValidationError) -> None:
        """Show a service's errors on the fields they name, and above the form for any other."""
        if not hasattr(error, "error_dict"):
            self.add_error(None, error)
            return
        for field, errors in error.error_dict.items():
            self.add_error(field if field in self.fields else None, errors)


def _language_initial() -> str:
    # Staff usually serve customers in the language the counter is shown in.
    language = (translation.get_language() or "").lower()
    return language if language in Member.Language.values else Member.Language.ENGLISH


class MemberEnrolForm(CounterForm):
    id_prefix = "enrol"

    phone = forms.CharField(
        label=_("Phone"),
        max_length=32,
        help_text=_("Any common format: 138 0000 1234, +86 138-0000-1234."),
        widget=forms.TextInput(attrs={"type": "tel", "autocomplete": "off", "inputmode": "tel", "autofocus": True}),
    )
    name = forms.CharField(label=_("Name"), max_length=150, required=False, widget=forms.TextInput(attrs={"autocomplete": "off"}))
    email = forms.CharField(
        label=_("E-mail"), max_length=254, required=False, widget=forms.EmailInput(attrs={"autocomplete": "off"})
    )
    birthday = forms.DateField(
        label=_("Birthday"),
        required=False,
        input_formats=["%Y-%m-%d"],
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
    )
    language = forms.ChoiceField(label=_("Language for messages"), choices=Member.Language.choices, initial=_language_initial)
    sms_consent = forms.BooleanField(
        label=_("Offers by SMS"), required=False, help_text=_("Only if the customer says yes: marketing by text message.")
    )
    email_consent = forms.BooleanField(
        label=_("Offers by e-mail"), required=False, help_text=_("Only if the customer says yes: marketing by e-mail.")
    )
    terms = forms.BooleanField(
        label=_("The customer accepts the programme terms"),
        error_messages={"required": _("The customer must accept the programme terms to join.")},
    )

    def enrolment(self) -> dict[str, object]:
        """Return the arguments of `members.services.member_enrol` that were typed in."""
        fields = ("phone", "name", "email", "birthday", "language", "sms_consent", "email_consent")
        return {field: self.cleaned_data[field] for field in fields}
