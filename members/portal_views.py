"""The member portal's pages about the member themselves: profile, phone number and inbox.

Only `members` is imported here; the pages about points live in `rewards/portal_views.py`.
Every query starts from `request.member`, so another member's message is a 404.
"""

import datetime as dt
import zoneinfo

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from members import access, services
from members.models import Category, Member, Notification, Store
from members.notifications import notification_mark_read
from members.pages import ServiceForm, page_or_partial

PHONE_CHALLENGE = "portal_phone_challenge"
INBOX_PAGE_SIZE = 20


class PortalForm(ServiceForm):
    """A form of the member portal, where the profile page holds several."""

    id_prefix = "portal"


# --- profile ---------------------------------------------------------------------------------


class ProfileForm(PortalForm):
    id_prefix = "profile"

    name = forms.CharField(
        label=gettext_lazy("Name"), max_length=150, required=False, widget=forms.TextInput(attrs={"autocomplete": "name"})
    )
    birthday = forms.DateField(
        label=gettext_lazy("Birthday"),
        required=False,
        input_formats=["%Y-%m-%d"],
        widget=forms.DateInput(attrs={"type": "date", "autocomplete": "bday"}, format="%Y-%m-%d"),
        help_text=gettext_lazy("You can set it once: after that, staff can correct it."),
    )
    preferred_store = forms.ModelChoiceField(
        label=gettext_lazy("Preferred store"),
        queryset=Store.objects.filter(is_active=True),
        required=False,
        empty_label=gettext_lazy("No preference"),
    )
    favourite_categories = forms.ModelMultipleChoiceField(
        label=gettext_lazy("Favourite categories"),
        queryset=Category.objects.filter(is_active=True),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=gettext_lazy("So our offers are about what you like."),
    )
    language = forms.ChoiceField(label=gettext_lazy("Language"), choices=Member.Language.choices)
    sms_consent = forms.BooleanField(
        label=gettext_lazy("Offers by SMS"), required=False, help_text=gettext_lazy("Marketing by text message.")
    )
    email_consent = forms.BooleanField(
        label=gettext_lazy("Offers by e-mail"), required=False, help_text=gettext_lazy("Marketing by e-mail.")
    )

    def __init__(self, *args: object, member: Member, **kwargs: object) -> None:
        kwargs["initial"] = {
            "name": member.name,
            "birthday": member.birthday,
            "preferred_store": member.preferred_store_id,
            "favourite_categories": list(member.favourite_categories.all()),
            "language": member.language,
            "sms_consent": member.sms_consent,
            "email_consent": member.email_consent,
        }
        super().__init__(*args, **kwargs)
        if member.birthday is not None:  # shown read-only: only staff correct a birthday
            del self.fields["birthday"]
        if not self.fields["favourite_categories"].queryset.exists():  # type: ignore[attr-defined]
            del self.fields["favourite_categories"]


class PhoneForm(PortalForm):
    id_prefix = "phone"

    phone = forms.CharField(
        label=gettext_lazy("New phone number"),
        max_length=32,
        help_text=gettext_lazy("We text a code to it: the number changes once you type the code back."),
        widget=forms.TextInput(attrs={"type": "tel", "inputmode": "tel", "autocomplete": "tel"}),
    )


class PhoneCodeForm(PortalForm):
    id_prefix = "phone-code"

    code = forms.RegexField(
        label=gettext_lazy("Code from the text message"),
        regex=r"^\s*[0-9]{6}\s*$",
        error_messages={"invalid": gettext_lazy("Enter the 6 digits of the code.")},
        widget=forms.TextInput(attrs={"inputmode": "numeric", "autocomplete": "one-time-code", "maxlength": 6}),
    )


def _pending_challenge(request: HttpRequest) -> dict[str, object] | None:
    """Return the phone change waiting for its code, forgetting one that can no longer succeed."""
    challenge = request.session.get(PHONE_CHALLENGE)
    if challenge is None:
        return None
    expired = timezone.now() >= dt.datetime.fromisoformat(challenge["expires_at"])
    if expired or challenge["attempts"] >= services.PHONE_CODE_ATTEMPTS:
        del request.session[PHONE_CHALLENGE]
        return None
    return challenge


def _profile_context(
    request: HttpRequest,
    *,
    form: ProfileForm | None = None,
    phone_form: PhoneForm | None = None,
    code_form: PhoneCodeForm | None = None,
) -> dict[str, object]:
    member = request.member  # type: ignore[attr-defined]
    challenge = _pending_challenge(request)
    return {
        "member": member,
        "form": form or ProfileForm(member=member),
        "phone_form": phone_form or PhoneForm(),
        "pending_phone": challenge["phone"] if challenge else None,
        "code_form": (code_form or PhoneCodeForm()) if challenge else None,
    }


@require_http_methods(["GET", "POST"])
@access.member_view
def profile(request: HttpRequest) -> HttpResponse:
    """Show and save the member's name, birthday (once), preferred store, favourite categories, language and consent."""
    member = request.member  # type: ignore[attr-defined]
    form = ProfileForm(request.POST if request.method == "POST" else None, member=member)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            member = services.member_profile_update(
                member=member,
                name=data["name"],
                birthday=data.get("birthday"),
                preferred_store=data["preferred_store"],
                favourite_categories=data.get("favourite_categories"),
                language=data["language"],
                sms_consent=data["sms_consent"],
                email_consent=data["email_consent"],
                source="portal",
                by=request.user,  # type: ignore[arg-type]
            )
        except ValidationError as error:
            form.add_service_error(error)
        else:
            # The portal follows the language chosen here from now on, as the header's switcher would.
            translation.activate(member.language)
            messages.success(request, _("Your profile is saved."))
            response = redirect("portal:profile")
            access.language_remember(response, member.language)
            return response
    return page_or_partial(request, "portal/profile.html", "profile-form", _profile_context(request, form=form))


@require_POST
@access.member_view
def phone_change(request: HttpRequest) -> HttpResponse:
    """Text a code to the new phone number the member typed; the number changes once the code comes back."""
    form = PhoneForm(request.POST)
    if form.is_valid():
        try:
            challenge = services.phone_code_send(member=request.member, phone=form.cleaned_data["phone"])  # type: ignore[attr-defined]
        except ValidationError as error:
            form.add_service_error(error)
        else:
            request.session[PHONE_CHALLENGE] = challenge
            messages.success(request, _("We sent a code to %(phone)s: type it below.") % {"phone": challenge["phone"]})
            if not request.htmx:  # type: ignore[attr-defined]
                return redirect("portal:profile")
            form = PhoneForm()
    return page_or_partial(request, "portal/profile.html", "phone", _profile_context(request, phone_form=form))


@require_POST
@access.member_view
def phone_confirm(request: HttpRequest) -> HttpResponse:
    """Change the member's phone number to the one the typed code was texted to."""
    challenge = _pending_challenge(request)
    if challenge is None:
        messages.error(request, _("There is no code waiting: ask for a new one."))
        return page_or_partial(request, "portal/profile.html", "phone", _profile_context(request))
    form = PhoneCodeForm(request.POST)
    if form.is_valid():
        try:
            member = services.member_phone_confirm(
                member=request.member,  # type: ignore[attr-defined]
                challenge=challenge,
                code=form.cleaned_data["code"],
            )
        except ValidationError as error:
            form.add_service_error(error)
            request.session[PHONE_CHALLENGE] = challenge  # the try counts
        else:
            del request.session[PHONE_CHALLENGE]
            request.member = member  # type: ignore[attr-defined]
            messages.success(request, _("Your phone number is now %(phone)s.") % {"phone": member.phone})
            if not request.htmx:  # type: ignore[attr-defined]
                return redirect("portal:profile")
            return page_or_partial(request, "portal/profile.html", "phone", _profile_context(request))
    return page_or_partial(request, "portal/profile.html", "phone", _profile_context(request, code_form=form))


# --- inbox -----------------------------------------------------------------------------------


def _member_tz(member: Member) -> zoneinfo.ZoneInfo:
    """Return the time zone of the member's store, where they read times as the shop shows them."""
    store_id = member.preferred_store_id or member.enrolled_store_id
    name = Store.objects.filter(pk=store_id).values_list("timezone", flat=True).first() if store_id else None
    return zoneinfo.ZoneInfo(name or settings.TIME_ZONE)


def _inbox_context(request: HttpRequest, opened: Notification | None = None) -> dict[str, object]:
    member = request.member  # type: ignore[attr-defined]
    page = Paginator(member.notifications.defer("body"), INBOX_PAGE_SIZE).get_page(request.GET.get("page"))
    return {"page": page, "opened": opened, "tz": _member_tz(member)}


def _mark_read(request: HttpRequest, notification_id: int) -> Notification:
    try:
        return notification_mark_read(member=request.member, notification_id=notification_id)  # type: ignore[attr-defined]
    except Notification.DoesNotExist:
        raise Http404 from None


@require_GET
@access.member_view
def inbox(request: HttpRequest) -> HttpResponse:
    """List the member's messages, newest first, the unread ones marked."""
    return page_or_partial(request, "portal/inbox.html", "inbox-list", _inbox_context(request))


@require_GET
@access.member_view
def inbox_open(request: HttpRequest, notification_id: int) -> HttpResponse:
    """Show one of the member's messages and mark it read."""
    notification = _mark_read(request, notification_id)
    return page_or_partial(request, "portal/inbox.html", "message", _inbox_context(request, opened=notification))


@require_POST
@access.member_view
def inbox_mark_read(request: HttpRequest, notification_id: int) -> HttpResponse:
    """Mark one of the member's messages read without opening it."""
    notification = _mark_read(request, notification_id)
    if request.htmx:  # type: ignore[attr-defined]
        return page_or_partial(
            request,
            "portal/inbox.html",
            "item",
            {"notification": notification, "standalone": True, "tz": _member_tz(request.member)},
        )
    page = request.POST.get("page", "")
    return redirect(reverse("portal:inbox") + (f"?page={page}" if page.isdigit() else ""))
