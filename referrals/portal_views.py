"""The referral pages of the member portal: a friend's landing page at /join/<code>/, and "Invite friends" at /me/invite/.

Every query of the invite page starts from `request.member`: another member's friends are never shown.
"""

from dataclasses import dataclass
from urllib.parse import quote, urlencode

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Exists, OuterRef, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST, require_safe

from members import access
from members.middleware import REFERRAL_CODE
from members.models import Member
from members.pages import wants_fragment
from referrals import selectors, services
from referrals.models import Referral, ReferralSettings
from referrals.templatetags.referrals import gift_text
from rewards import catalog
from rewards import services as reward_services
from rewards.models import Return

QR_SCALE = 6  # pixels a module: a link makes a denser code than a card number, drawn as wide as the screen allows
FRIENDS_PAGE_SIZE = 20


# --- the friend's landing page -----------------------------------------------------------------


@require_safe
def join_landing(request: HttpRequest, code: str) -> HttpResponse:
    """Welcome a friend who followed a member's invitation: who invited them, what they both get, and sign up or log in."""
    try:
        offer = services.settings_get()
    except reward_services.ProgrammeNotConfigured:
        return TemplateResponse(request, "referrals/portal_join_unknown.html", {"programme": None}, status=404)
    programme = reward_services.programme_get()
    if not offer.active:
        # No promise when referrals are off: just the way in.
        return TemplateResponse(request, "referrals/portal_join.html", {"programme": programme, "offer": None})
    found = services.referral_code_find(code)
    if found is None or found.member.status != Member.Status.ACTIVE:
        return TemplateResponse(request, "referrals/portal_join_unknown.html", {"programme": programme}, status=404)
    if request.user.is_authenticated and Member.objects.filter(user=request.user, status=Member.Status.ACTIVE).exists():
        messages.info(request, _("You are a member already: invite your own friends from “Invite friends”."))
        return redirect("portal:home")
    # Counted once a browser session, so reloading the page or coming back to it does not inflate the funnel.
    if request.method == "GET" and request.session.get(REFERRAL_CODE) != found.code:
        services.referral_link_visited(code=found)
    request.session[REFERRAL_CODE] = found.code
    if request.user.is_authenticated:  # a login without a membership yet joins with the code filled in
        response = redirect("portal:join")
        access.device_remember(request, response)
        return response
    join_next = urlencode({"next": reverse("portal:join")})
    context = {
        "programme": programme,
        "offer": offer,
        "name": services.member_display_name(found.member),
        "signup_url": f"{reverse('account_signup')}?{urlencode({'ref': found.code})}",
        "login_url": f"{reverse('account_login')}?{join_next}",
    }
    response = TemplateResponse(request, "referrals/portal_join.html", context)
    access.device_remember(request, response)
    return response


# --- the member's "Invite friends" page ----------------------------------------------------------


@dataclass(frozen=True)
class Friend:
    """A friend as the member who invited them sees them: a first name or a masked contact, never more."""

    referral: Referral
    name: str
    returned: bool  # the qualifying purchase came back


def _friends(member: Member) -> "QuerySet[Referral]":
    returned = Return.objects.filter(purchase_id=OuterRef("purchase_id"))
    return member.referrals_made.select_related("friend").annotate(returned=Exists(returned)).order_by("-joined_at", "-pk")


def _share_links(link: str, offer: ReferralSettings, programme_name: str) -> dict[str, str]:
    """Write the share links of the channels that take a message in their address: e-mail, SMS and LINE."""
    gift = gift_text(offer.friend_points, offer.friend_reward)
    if gift:
        message = _("Join me at %(programme)s and get %(gift)s with your first purchase.") % {
            "programme": programme_name,
            "gift": gift,
        }
    else:
        message = _("Join me at %(programme)s.") % {"programme": programme_name}
    text = f"{message} {link}"
    subject = _("An invitation to %(programme)s") % {"programme": programme_name}
    return {
        "email": f"mailto:?{urlencode({'subject': subject, 'body': text}, quote_via=quote)}",
        # "?&body=" is read by both iOS and Android.
        "sms": f"sms:?&body={quote(text)}",
        "line": f"https://social-plugins.line.me/lineit/share?{urlencode({'url': link})}",
        # The phone's share sheet (WeChat, KakaoTalk) takes the message and the link apart.
        "message": message,
    }


@require_safe
@access.member_view
def invite(request: HttpRequest) -> HttpResponse:
    """Show the member their invitation (code, link, QR, share buttons), what it gives, their friends and points earned."""
    member = request.member  # type: ignore[attr-defined]
    try:
        offer = services.settings_get()
    except reward_services.ProgrammeNotConfigured:
        raise Http404 from None
    programme = reward_services.programme_get()
    page = Paginator(_friends(member), FRIENDS_PAGE_SIZE).get_page(request.GET.get("page"))
    context: dict[str, object] = {
        "offer": offer,
        "page": page,
        "friends": [Friend(referral=r, name=services.member_display_name(r.friend), returned=r.returned) for r in page],
        "tz": programme.tz,
    }
    if wants_fragment(request):
        response = TemplateResponse(request, "referrals/portal_invite.html#friends", context)
        response["Vary"] = "HX-Request"
        return response
    response = TemplateResponse(request, "referrals/portal_invite.html", context)
    response["Vary"] = "HX-Request"
    device = access.device_remember(request, response)
    context["points_earned"] = selectors.points_earned(member, role="referrer")
    if offer.active:
        code = services.referral_code_for(member)
        services.device_seen(member=member, device=device)
        link = request.build_absolute_uri(reverse("referral_join", args=[code.code]))
        context.update(
            code=code,
            link=link,
            # segno writes the SVG from our own address and a code of our alphabet, escaping its title.
            qr=mark_safe(catalog.voucher_qr_svg(link, scale=QR_SCALE)),  # noqa: S308
            share=_share_links(link, offer, programme.name),
        )
    return response


@require_POST
@access.member_view
def invite_shared(request: HttpRequest) -> HttpResponse:
    """Count a press of a share button (the browser goes on to the channel by itself)."""
    if services.settings_get().active:
        services.referral_shared(member=request.member)  # type: ignore[attr-defined]
    return HttpResponse(status=204) if request.htmx else redirect("portal:invite")  # type: ignore[attr-defined]
