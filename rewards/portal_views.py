"""The member portal's pages about points: home, joining the programme, and (more) what members do there."""

import contextlib
import datetime as dt
import re
import uuid
from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import urlencode

import barcode
from django import forms
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_http_methods
from django_htmx.http import HttpResponseClientRedirect

from members import access, claims
from members import services as member_services
from members.middleware import REFERRAL_CODE
from members.models import Member
from members.pages import wants_fragment
from rewards import catalog, selectors, services, stamps, tiers
from rewards.middleware import terms_remember
from rewards.models import LedgerEntry, ProgrammeRules, Reward, StampProgramme, TermsVersion, Tier, Voucher
from rewards.money import format_money
from rewards.privacy import member_account_close, member_data_export
from rewards.services import ProgrammeNotConfigured, RewardsError


@access.member_view
def home(request: HttpRequest) -> HttpResponse:
    """Show the member their points, what expires when, their tier and progress, vouchers and stamp cards."""
    member = request.member  # type: ignore[attr-defined]
    return TemplateResponse(request, "portal/home.html", {"member": member, **selectors.member_panel(member)})


class JoinForm(forms.Form):
    phone = forms.CharField(
        label=_("Mobile phone"), required=False, max_length=32, help_text=_("Optional: staff can then find you by it.")
    )
    # Shown only while the programme takes referrals ({% referrals_active %}); an empty one is ignored.
    referral_code = forms.CharField(
        label=_("Referral code"), required=False, max_length=32, help_text=_("From a friend's invitation, if you have one.")
    )
    accept_terms = forms.BooleanField(label=_("I accept the programme's terms and conditions"))


@login_required
@require_http_methods(["GET", "POST"])
def join(request: HttpRequest) -> HttpResponse:
    """Join the programme with the account just made: accept the current terms, optionally give a phone and a friend's code."""
    if Member.objects.filter(user=request.user).exists():
        return redirect("portal:home")
    terms = services.terms_current()
    form = JoinForm(request.POST or None, initial={"referral_code": request.session.get(REFERRAL_CODE, "")})
    if request.method == "POST" and form.is_valid() and terms is not None:
        try:
            with transaction.atomic():
                member = member_services.member_enrol(
                    channel=Member.Channel.ONLINE,
                    email=request.user.email,  # type: ignore[union-attr]
                    phone=form.cleaned_data["phone"],
                    language=translation.get_language() or Member.Language.ENGLISH,
                    user=request.user,  # type: ignore[arg-type]
                    referral_code=form.cleaned_data["referral_code"],
                    ip=access.client_ip(request),
                    device=access.device_id(request),
                )
                services.terms_accept(member=member, channel=Member.Channel.ONLINE, terms=terms)
        except member_services.DuplicateMember as duplicate:
            # Never say whose it is: the member number is half of what claiming a membership online asks for.
            form.add_error(
                "phone" if duplicate.field == "phone" else None,
                _("This is already a member's. If the membership is yours, claim it instead of joining again."),
            )
        except ValidationError as error:
            for field, messages in error.message_dict.items():
                form.add_error(field if field in form.fields else None, messages)
        else:
            request.session.pop(REFERRAL_CODE, None)
            return redirect("portal:home")
    return TemplateResponse(request, "portal/join.html", {"form": form, "terms": terms, "terms_text": _terms_text(terms)})


# --- the digital card ----------------------------------------------------------------------

QR_SCALE = 8  # pixels a module: about 230-260 px square, read by a counter scanner from a phone screen
BARCODE_QUIET = 10  # modules of white on each side, as Code 128 asks
BARCODE_HEIGHT = 96  # pixels: tall bars forgive a scanner held at an angle


def _card_barcode_svg(code: str) -> str:
    """Draw the member's card code as an inline SVG Code 128 barcode as wide as the screen allows."""
    modules = barcode.get("code128", code).build()[0]
    bars = [(match.start() + BARCODE_QUIET, len(match.group())) for match in re.finditer("1+", modules)]
    path = "".join(f"M{x} 0h{width}v1h-{width}z" for x, width in bars)
    # Drawn as one path without style attributes (the CSP forbids inline styles); the height stretches to
    # the bars' length, and crisp edges keep each bar sharp on any screen.
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {len(modules) + 2 * BARCODE_QUIET} 1" '
        f'width="100%" height="{BARCODE_HEIGHT}" preserveAspectRatio="none" shape-rendering="crispEdges">'
        f'<title>{code}</title><rect width="100%" height="1" fill="#fff"/><path fill="#000" d="{path}"/></svg>'
    )


@access.member_view
def card(request: HttpRequest) -> HttpResponse:
    """Show the member's card as a QR code and a barcode for the counter to scan, with their member number."""
    member = request.member  # type: ignore[attr-defined]
    code = member.card_code
    context = {
        "member": member,
        "code": " ".join(code[i : i + 4] for i in range(0, len(code), 4)),
        # Drawn from a code of the card alphabet (letters and digits only): nothing of the user's to escape.
        "qr": mark_safe(catalog.voucher_qr_svg(code, scale=QR_SCALE)),  # noqa: S308
        "barcode": mark_safe(_card_barcode_svg(code)),  # noqa: S308
    }
    return TemplateResponse(request, "portal/card.html", context)


# --- history ---------------------------------------------------------------------------------

HISTORY_PAGE_SIZE = 20


class HistoryFilterForm(forms.Form):
    kind = forms.ChoiceField(label=_("Show"), required=False, choices=[("", _("Every change")), *LedgerEntry.Kind.choices])


@access.member_view
def history(request: HttpRequest) -> HttpResponse:
    """List every change of the member's points with its explanation and receipt, by kind and page, then their stamps."""
    member = request.member  # type: ignore[attr-defined]
    form = HistoryFilterForm(request.GET)
    entries = selectors.ledger_entries(member)
    # An unknown kind is shown as the form's error and filters nothing.
    if form.is_valid() and form.cleaned_data["kind"]:
        entries = entries.filter(kind=form.cleaned_data["kind"])
    context: dict[str, object] = {
        "form": form,
        "page": Paginator(entries, HISTORY_PAGE_SIZE).get_page(request.GET.get("page")),
        "tz": services.programme_get().tz,
    }
    partial = wants_fragment(request)
    if not partial:
        context["stamps"] = stamps.stamp_history(member)
    response = TemplateResponse(request, "portal/history.html#entries" if partial else "portal/history.html", context)
    response["Vary"] = "HX-Request"
    return response


# --- rewards and vouchers --------------------------------------------------------------------


class RedeemForm(forms.Form):
    """Confirm one reward; the token makes a double tap or a resent form redeem once."""

    reward = forms.ModelChoiceField(queryset=Reward.objects.all(), widget=forms.HiddenInput)
    token = forms.UUIDField(widget=forms.HiddenInput, initial=uuid.uuid4)


def _catalog_item(items: list[catalog.CatalogItem], reward_id: object) -> catalog.CatalogItem | None:
    return next((item for item in items if str(item.reward.pk) == str(reward_id)), None)


@require_http_methods(["GET", "POST"])
@access.member_view
def reward_catalog(request: HttpRequest) -> HttpResponse:
    """Show the catalog as the member can have it; redeem a reward after a confirmation, then show its voucher."""
    member = request.member  # type: ignore[attr-defined]
    # What the member can have now first, then what is nearest in points; each group in the catalog's order.
    items = sorted(catalog.catalog_for(member), key=lambda item: (not item.can_redeem, item.points_needed or 0))
    form: RedeemForm | None = None
    chosen = None
    if request.method == "POST":
        form = RedeemForm(request.POST)
        chosen = _catalog_item(items, request.POST.get("reward"))
        if form.is_valid():
            try:
                redemption = catalog.redemption_create(
                    member=member,
                    reward=form.cleaned_data["reward"],
                    via="portal",
                    idempotency_key=f"portal:{form.cleaned_data['token']}",
                )
            except (ValidationError, RewardsError) as error:
                # The reward and token are hidden fields: every refusal is shown above the button.
                form.add_error(None, error.messages if isinstance(error, ValidationError) else error.message)
            else:
                voucher = redemption.voucher
                messages.success(request, _("Redeemed %(reward)s: your voucher is ready.") % {"reward": voucher.reward.title})
                url = reverse("portal:voucher", args=[voucher.code])
                return HttpResponseClientRedirect(url) if request.htmx else redirect(url)  # type: ignore[attr-defined]
    elif re.fullmatch(r"[0-9]{1,18}", request.GET.get("reward", "")):
        chosen = _catalog_item(items, request.GET["reward"])
        if chosen is not None and chosen.can_redeem:
            form = RedeemForm(initial={"reward": chosen.reward})
    account = selectors.account_for(member)
    context = {
        "items": items,
        "form": form,
        "chosen": chosen,
        "account": account,
        "after": account.available - chosen.reward.points_cost if chosen and chosen.can_redeem else None,
        "tz": services.programme_get().tz,
    }
    partial = wants_fragment(request) and (request.method == "POST" or "reward" in request.GET)
    response = TemplateResponse(request, "portal/rewards.html#redeem" if partial else "portal/rewards.html", context)
    response["Vary"] = "HX-Request"
    return response


@access.member_view
def voucher_detail(request: HttpRequest, code: str) -> HttpResponse:
    """Show one of the member's vouchers: the reward, until when, its status, and the code with its QR image."""
    normalised = catalog.voucher_code_normalise(code)
    if not normalised:
        raise Http404
    # Looked up among this member's vouchers only: another member's code is a 404.
    found = get_object_or_404(request.member.vouchers.select_related("reward", "used_store"), code=normalised)  # type: ignore[attr-defined]
    status = catalog.voucher_status(found)
    context = {
        "voucher": found,
        "status": status,
        # Larger than on the counter's screen: this one is scanned off a phone.
        # segno writes the SVG itself from a code of our own alphabet: there is nothing of the user's to escape.
        "qr": mark_safe(catalog.voucher_qr_svg(found.code, scale=QR_SCALE)) if status == Voucher.Status.ISSUED else "",  # noqa: S308
        "tz": services.programme_get().tz,
    }
    return TemplateResponse(request, "portal/voucher.html", context)


# --- how the programme works -------------------------------------------------------------------


@dataclass(frozen=True)
class TierTerms:
    """A tier's benefits and what it takes, in the reader's language."""

    tier: Tier
    reach: str
    keep: str
    window: str
    multiplier: str
    perks: list[str]


def _tier_window(tier: Tier) -> str:
    if tier.window == Tier.Window.ROLLING:
        months = tier.window_months
        return ngettext("counted over the last %(months)s month", "counted over the last %(months)s months", months) % {
            "months": months
        }
    if tier.window == Tier.Window.CALENDAR_YEAR:
        return _("counted over each calendar year")
    return _("counted since joining")


def _tier_figure(tier: Tier, value: Decimal, currency: str) -> str:
    figure = tiers.figure_text(tier.metric, value, currency)
    if tier.metric == Tier.Metric.SPEND:
        return _("%(amount)s spent") % {"amount": figure}
    if tier.metric == Tier.Metric.POINTS:
        return _("%(points)s earned") % {"points": figure}
    return str(figure)


def _tier_terms(tier: Tier, currency: str) -> TierTerms:
    if tier.invitation_only:
        reach, keep, window = _("By invitation only."), _("Until the end date of the invitation."), ""
    else:
        reach, window = _tier_figure(tier, tier.entry_threshold, currency), _tier_window(tier)
        if tier.retain_threshold:
            keep = ngettext(
                "%(figure)s in each period; if you fall short you keep the tier %(days)s more day.",
                "%(figure)s in each period; if you fall short you keep the tier %(days)s more days.",
                tier.grace_days,
            ) % {"figure": _tier_figure(tier, tier.retain_threshold, currency), "days": tier.grace_days}
        else:
            keep = _("Once reached, it is yours to keep.")
    perks = [line.strip() for line in (tier.perks or "").splitlines() if line.strip()]
    multiplier = f"{tier.earn_multiplier.normalize():f}" if tier.earn_multiplier > 1 else ""
    return TierTerms(tier=tier, reach=reach, keep=keep, window=window, multiplier=multiplier, perks=perks)


def _earn_rate(rules: ProgrammeRules) -> str:
    rate = rules.points_per_unit.normalize()
    unit = format_money(1, rules.programme.currency, whole=True)
    # English says "1 point" but "0.5 points" and "2 points"; the languages without plurals read the same.
    return ngettext(
        "%(rate)s point for every %(unit)s spent.", "%(rate)s points for every %(unit)s spent.", 1 if rate == 1 else 2
    ) % {"rate": f"{rate:f}", "unit": unit}


def _terms_text(terms: TermsVersion | None) -> str:
    """Return the terms in the reader's language, or in English, or in whichever language they were written."""
    if terms is None:
        return ""
    texts = {text.language: text.body for text in terms.texts.all()}
    language = (translation.get_language() or "en").lower()
    return texts.get(language) or texts.get(Member.Language.ENGLISH) or next(iter(texts.values()), "")


def how(request: HttpRequest) -> HttpResponse:
    """Explain the programme from the rules in force: earning, expiry, tiers, stamp cards and the current terms.

    Public, so people can read it before they join; a member still sees their menu.
    """
    if request.user.is_authenticated:
        # Only to show a member their menu: nothing on this page is the member's own.
        request.member = Member.objects.filter(user=request.user, status=Member.Status.ACTIVE).first()  # type: ignore[attr-defined]
    try:
        rules = services.rules_in_force()
    except ProgrammeNotConfigured:
        return TemplateResponse(request, "portal/how.html", {"rules": None})
    programme = rules.programme
    today = timezone.localdate(timezone=programme.tz)
    terms = services.terms_current()
    context = {
        "programme": programme,
        "rules": rules,
        "earn_rate": _earn_rate(rules),
        "expiry_example": {"year": today.year, "until": dt.date(today.year + rules.expiry_years, 12, 31)},
        "tiers": [_tier_terms(tier, programme.currency) for tier in Tier.objects.filter(active=True).order_by("rank")],
        "stamp_cards": list(StampProgramme.objects.filter(active=True).select_related("reward").order_by("pk")),
        "terms": terms,
        "terms_text": _terms_text(terms),
    }
    return TemplateResponse(request, "portal/how.html", context)


# --- claiming a membership enrolled at the counter; accepting newer terms -------------------


class ClaimPhoneForm(forms.Form):
    phone = forms.CharField(label=_("Mobile phone"), max_length=32, help_text=_("The number you gave at the counter."))


class ClaimCodeForm(forms.Form):
    code = forms.RegexField(
        label=_("Code from the text message"),
        regex=r"^\s*[0-9]{6}\s*$",
        error_messages={"invalid": _("Enter the 6 digits of the code.")},
    )
    accept_terms = forms.BooleanField(label=_("I accept the programme's terms and conditions"))


class ClaimNumberForm(forms.Form):
    member_number = forms.CharField(label=_("Member number"), max_length=20, help_text=_("On your card or receipt."))
    email = forms.CharField(
        label=_("E-mail address"),
        max_length=254,
        help_text=_("The one given at the counter; it must be an address you have confirmed for this login."),
    )
    accept_terms = forms.BooleanField(label=_("I accept the programme's terms and conditions"))


def _claim_link(request: HttpRequest, member: Member, terms: TermsVersion) -> HttpResponse:
    with transaction.atomic():
        member_services.member_claim(member=member, user=request.user)  # type: ignore[arg-type]
        services.terms_accept(member=member, channel=Member.Channel.ONLINE, terms=terms)
    terms_remember(request, terms)
    messages.success(request, _("Your membership is now linked to this login. Welcome!"))
    return redirect("portal:home")


@login_required
@require_http_methods(["GET", "POST"])
def claim(request: HttpRequest) -> HttpResponse:
    """Link a membership enrolled at the counter to this login, proven by a texted code or by member number and e-mail."""
    user = request.user
    if Member.objects.filter(user=user).exists():
        return redirect("portal:home")
    terms = services.terms_current()
    step = request.POST.get("step") if request.method == "POST" else None
    phone_form = ClaimPhoneForm(request.POST if step == "phone" else None)
    code_form = ClaimCodeForm(request.POST if step == "code" else None)
    number_form = ClaimNumberForm(request.POST if step == "number" else None, initial={"email": user.email})  # type: ignore[union-attr]
    if terms is not None and step == "phone" and phone_form.is_valid():
        try:
            claims.claim_code_send(user=user, phone=phone_form.cleaned_data["phone"])  # type: ignore[arg-type]
        except ValidationError as error:
            phone_form.add_error(None, error)
        else:
            messages.info(request, _("If a membership has this number, a code is on its way to it. It is valid for 10 minutes."))
            return redirect("portal:claim")
    elif terms is not None and step == "code" and code_form.is_valid():
        try:
            return _claim_link(request, claims.claim_code_check(user=user, code=code_form.cleaned_data["code"]), terms)  # type: ignore[arg-type]
        except ValidationError as error:
            code_form.add_error(None, error)
    elif terms is not None and step == "number" and number_form.is_valid():
        data = number_form.cleaned_data
        try:
            member = claims.claim_by_number(user=user, member_number=data["member_number"], email=data["email"])  # type: ignore[arg-type]
            return _claim_link(request, member, terms)
        except ValidationError as error:
            number_form.add_error(None, error)
    context = {
        "terms": terms,
        "terms_text": _terms_text(terms),
        "pending_phone": claims.claim_code_pending(user=user),  # type: ignore[arg-type]
        "phone_form": phone_form,
        "code_form": code_form,
        "number_form": number_form,
    }
    return TemplateResponse(request, "portal/claim.html", context)


class TermsForm(forms.Form):
    version = forms.IntegerField(widget=forms.HiddenInput)
    accept_terms = forms.BooleanField(label=_("I accept the programme's terms and conditions"))


def _next_url(request: HttpRequest) -> str:
    url = request.POST.get("next") or request.GET.get("next") or ""
    safe = url_has_allowed_host_and_scheme(url, allowed_hosts={request.get_host()}, require_https=request.is_secure())
    return url if safe else reverse("portal:home")


@access.member_view
@require_http_methods(["GET", "POST"])
def terms(request: HttpRequest) -> HttpResponse:
    """Show the current terms and record that the member accepts them (the version and when)."""
    member = request.member  # type: ignore[attr-defined]
    current, next_url = services.terms_current(), _next_url(request)
    acceptance = member.terms_acceptances.filter(terms=current).first() if current else None
    if acceptance is not None:
        terms_remember(request, current)  # type: ignore[arg-type]
        if "next" in request.GET:  # accepted on another device since this session last looked
            return redirect(next_url)
    form = TermsForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and current is not None and acceptance is None and form.is_valid():
        if form.cleaned_data["version"] != current.pk:
            messages.warning(request, _("A newer version of the terms was published meanwhile: please read it."))
            return redirect(f"{reverse('portal:terms')}?{urlencode({'next': next_url})}")
        services.terms_accept(member=member, channel=Member.Channel.ONLINE, terms=current)
        terms_remember(request, current)
        messages.success(request, _("Thank you: you accepted the terms (version %(version)s).") % {"version": current.version})
        return redirect(next_url)
    context = {"terms": current, "terms_text": _terms_text(current), "acceptance": acceptance, "form": form, "next": next_url}
    return TemplateResponse(request, "portal/terms.html", context)


# --- privacy: my data, and closing my account -------------------------------------------------


class CloseAccountForm(forms.Form):
    password = forms.CharField(
        label=_("Your password"),
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
        help_text=_("To be sure it is you."),
    )
    confirm = forms.BooleanField(
        label=_("I understand that this cannot be undone"),
        error_messages={"required": _("Tick this box to close your account.")},
    )

    # A stolen session must not become a way to guess the password: a few tries an hour.
    WRONG_PASSWORDS_PER_HOUR = 5

    def __init__(self, *args: object, user: object, **kwargs: object) -> None:
        kwargs.setdefault("auto_id", "close-%s")
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.user = user

    def clean_password(self) -> str:
        password = self.cleaned_data["password"]
        key = f"portal:close_wrong_passwords:{self.user.pk}"  # type: ignore[attr-defined]
        if cache.get(key, 0) >= self.WRONG_PASSWORDS_PER_HOUR:
            raise ValidationError(_("Too many wrong passwords. Please try again in an hour."), code="throttled")
        if not self.user.check_password(password):  # type: ignore[attr-defined]
            cache.add(key, 0, timeout=3600)
            with contextlib.suppress(ValueError):  # the hour ran out meanwhile
                cache.incr(key)
            raise ValidationError(_("This is not your password."), code="wrong_password")
        return password


def _privacy_page(request: HttpRequest, form: CloseAccountForm) -> HttpResponse:
    member = request.member  # type: ignore[attr-defined]
    context = {"member": member, "account": selectors.account_for(member), "form": form}
    template = "portal/privacy.html#close" if wants_fragment(request) else "portal/privacy.html"
    response = TemplateResponse(request, template, context)
    response["Vary"] = "HX-Request"
    return response


@access.member_view
@require_http_methods(["GET"])
def privacy(request: HttpRequest) -> HttpResponse:
    """Offer the member a download of all their data, and closing their account."""
    return _privacy_page(request, CloseAccountForm(user=request.user))


@access.member_view
@require_http_methods(["GET"])
def privacy_export(request: HttpRequest) -> HttpResponse:
    """Send the member everything held about them as a zip of JSON and CSV files."""
    member = request.member  # type: ignore[attr-defined]
    response = HttpResponse(member_data_export(member), content_type="application/zip")
    name = f"my-data-{member.member_number}-{timezone.localdate():%Y-%m-%d}.zip"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    response["Cache-Control"] = "no-store"
    return response


@access.member_view
@require_http_methods(["POST"])
def privacy_close(request: HttpRequest) -> HttpResponse:
    """Close the member's account for good once they confirm with their password, then log them out."""
    form = CloseAccountForm(request.POST, user=request.user)
    if not form.is_valid():
        return _privacy_page(request, form)
    member_account_close(member=request.member, user=request.user)  # type: ignore[attr-defined, arg-type]
    logout(request)
    messages.success(request, _("Your account is closed and your personal data erased. Thank you for having been a member."))
    return HttpResponseClientRedirect(reverse("home")) if request.htmx else redirect("home")  # type: ignore[attr-defined]
