"""Referral pieces for pages of the apps below (rewards' portal pages), which may not import `referrals`.

`{% load referrals %}` needs no Python import, so the layers stay as they are.
"""

from django import template
from django.http import HttpRequest
from django.utils.translation import gettext as _

from members.middleware import REFERRAL_CODE
from members.models import Member
from referrals import selectors, services
from referrals.models import ReferralSettings
from rewards.explanations import points_text
from rewards.models import Reward
from rewards.services import ProgrammeNotConfigured

register = template.Library()


def _settings_or_none() -> ReferralSettings | None:
    try:
        return services.settings_get()
    except ProgrammeNotConfigured:  # a fresh installation: no programme, so no referrals either
        return None


def _settings(context: template.Context) -> ReferralSettings | None:
    """Return the programme's referral settings (None before the programme is set up), read once per request."""
    request: HttpRequest | None = context.get("request")
    if request is None:
        return _settings_or_none()
    if not hasattr(request, "_referral_settings"):
        request._referral_settings = _settings_or_none()  # type: ignore[attr-defined]
    return request._referral_settings  # type: ignore[attr-defined]


def gift_text(points: int, reward: Reward | None) -> str:
    """Say what one side of a referral gets, in the reader's language: "100 pts and a voucher for Free latte"."""
    if points and reward is not None:
        return _("%(points)s and a voucher for %(reward)s") % {"points": points_text(points), "reward": reward.title}
    if reward is not None:
        return _("a voucher for %(reward)s") % {"reward": reward.title}
    return points_text(points) if points else ""


@register.simple_tag
def referral_gift(offer: ReferralSettings, side: str) -> str:
    """Say what the friend ("friend") or the member who invites ("referrer") gets: `{% referral_gift offer "friend" as g %}`."""
    if side == "friend":
        return gift_text(offer.friend_points, offer.friend_reward)
    return gift_text(offer.referrer_points, offer.referrer_reward)


@register.simple_tag(takes_context=True)
def referrals_active(context: template.Context) -> bool:
    """Say whether the programme takes referrals: `{% referrals_active as referrals_on %}`."""
    settings = _settings(context)
    return settings is not None and settings.active


@register.inclusion_tag("referrals/portal_invite_card.html", takes_context=True)
def referral_invite_card(context: template.Context, brief: bool = True) -> dict[str, object]:
    """Show what inviting friends gives, with the way to the invite page (nothing when referrals are off).

    `brief=False` adds the conditions (qualifying purchase, hold, monthly limit), as "How it works" explains them.
    """
    settings = _settings(context)
    return {"offer": settings if settings is not None and settings.active else None, "brief": brief}


@register.inclusion_tag("referrals/join_banner.html", takes_context=True)
def referral_join_banner(context: template.Context) -> dict[str, object]:
    """Show who invited the person joining, from the code their invitation link left in the session, and what they get."""
    settings = _settings(context)
    request: HttpRequest | None = context.get("request")
    code = request.session.get(REFERRAL_CODE, "") if request is not None else ""
    found = services.referral_code_find(code) if settings is not None and settings.active and code else None
    if found is None:
        return {"offer": None}
    return {"offer": settings, "name": services.member_display_name(found.member)}


# --- the staff counter (helper D) ---------------------------------------------------------------


@register.inclusion_tag("referrals/panel.html", takes_context=True)
def referral_panel(context: template.Context, member: Member) -> dict[str, object]:
    """Show the counter who invited the member and how many friends they brought."""
    return {"summary": selectors.member_summary(member), "perms": context.get("perms")}
