"""The member portal's pages about points: home, joining the programme, and (more) what members do there."""

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils import translation
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_http_methods

from members import access
from members import services as member_services
from members.models import Member
from rewards import selectors, services


@access.member_view
def home(request: HttpRequest) -> HttpResponse:
    """Show the member their points, what expires when, their tier and progress, vouchers and stamp cards."""
    member = request.member  # type: ignore[attr-defined]
    return TemplateResponse(request, "portal/home.html", {"member": member, **selectors.member_panel(member)})


class JoinForm(forms.Form):
    phone = forms.CharField(
        label=_("Mobile phone"), required=False, max_length=32, help_text=_("Optional: staff can then find you by it.")
    )
    accept_terms = forms.BooleanField(label=_("I accept the programme's terms and conditions"))


@login_required
@require_http_methods(["GET", "POST"])
def join(request: HttpRequest) -> HttpResponse:
    """Join the programme with the account just made: accept the current terms, optionally give a phone."""
    if Member.objects.filter(user=request.user).exists():
        return redirect("portal:home")
    terms = services.terms_current()
    form = JoinForm(request.POST or None)
    if request.method == "POST" and form.is_valid() and terms is not None:
        try:
            with transaction.atomic():
                member = member_services.member_enrol(
                    channel=Member.Channel.ONLINE,
                    email=request.user.email,  # type: ignore[union-attr]
                    phone=form.cleaned_data["phone"],
                    language=translation.get_language() or Member.Language.ENGLISH,
                    user=request.user,  # type: ignore[arg-type]
                )
                services.terms_accept(member=member, channel=Member.Channel.ONLINE, terms=terms)
        except ValidationError as error:
            for field, messages in error.message_dict.items():
                form.add_error(field if field in form.fields else None, messages)
        else:
            return redirect("portal:home")
    return TemplateResponse(request, "portal/join.html", {"form": form, "terms": terms})
