"""Forms of the staff counter's member pages: they parse what staff type; the services judge it."""

from django import forms
from django.utils import translation
from django.utils.translation import gettext_lazy as _

from members.models import Member
from members.pages import ServiceForm


class CounterForm(ServiceForm):
    """A form of the staff counter, where several share the member panel."""

    id_prefix = "counter"


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
