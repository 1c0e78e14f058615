"""The sentence a member reads next to every ledger entry, in the language being shown.

Entries store the figures (`LedgerEntry.detail`); the sentence is written when it is read,
so a member who switches language sees their whole history in the new one.
"""

import datetime as dt
from decimal import Decimal
from typing import TYPE_CHECKING

from django.utils.formats import date_format
from django.utils.translation import get_language, ngettext
from django.utils.translation import gettext as _

from rewards.money import format_money

if TYPE_CHECKING:
    from rewards.models import LedgerEntry, StampEvent


def points_text(points: int) -> str:
    return ngettext("%(points)s pt", "%(points)s pts", abs(points)) % {"points": f"{points:,}"}


def _rate(detail: dict) -> str:
    rate = Decimal(detail["rate"]).normalize()
    return _("%(rate)s pt per %(unit)s") % {"rate": f"{rate:f}", "unit": format_money(1, detail["currency"], whole=True)}


def _earn(entry: "LedgerEntry", d: dict) -> str:
    figures = {
        "receipt": d["receipt"],
        "base": format_money(d["base"], d["currency"]),
        "rate": _rate(d),
        "points": points_text(entry.points),
    }
    if "multiplier" in d:
        names = d.get("tier") or {}
        # The tier's name when the points were earned, in the reader's language if the merchant gave one.
        tier = names.get(get_language() or "en") or names.get("en") or next((n for n in names.values() if n), "")
        figures.update(multiplier=f"{Decimal(d['multiplier']).normalize():f}", tier=tier)
        text = _("Receipt %(receipt)s: %(base)s × %(rate)s × %(multiplier)s for %(tier)s = %(points)s") % figures
    else:
        text = _("Receipt %(receipt)s: %(base)s × %(rate)s = %(points)s") % figures
    if Decimal(d.get("excluded", "0")):
        text += " " + _("(%(amount)s in categories that earn no points)") % {"amount": format_money(d["excluded"], d["currency"])}
    return text


def _clawback(entry: "LedgerEntry", d: dict) -> str:
    text = _(
        "Return %(return)s of receipt %(receipt)s: %(refunded)s of %(gross)s refunded, "
        "so %(points)s of the %(earned)s earned are taken back"
    ) % {
        "return": d["return"],
        "receipt": d["receipt"],
        "refunded": format_money(d["refunded"], d["currency"]),
        "gross": format_money(d["gross"], d["currency"]),
        "points": points_text(-entry.points),
        "earned": points_text(d["earned"]),
    }
    if entry.owed_points:
        text += " " + _("(%(owed)s had already been spent: they are owed and come off your next points)") % {
            "owed": points_text(entry.owed_points)
        }
    return text


def day_text(iso_date: str) -> str:
    """Write a stored day (YYYY-MM-DD) as the reader's language writes dates."""
    return date_format(dt.date.fromisoformat(iso_date), "DATE_FORMAT")


def _expire(entry: "LedgerEntry", d: dict) -> str:
    return _("%(points)s earned on %(earned_on)s reached the end of their validity") % {
        "points": points_text(-entry.points),
        "earned_on": day_text(d["earned_on"]),
    }


def _birthday(entry: "LedgerEntry", d: dict) -> str:
    names = d.get("tier") or {}
    # The tier's name as it was when granted, in the reader's language when the merchant gave one.
    tier = names.get(get_language() or "en") or names.get("en") or next((n for n in names.values() if n), "")
    values = {"year": d["birthday"], "points": points_text(entry.points), "tier": tier}
    if tier:
        return _("Happy birthday! Your %(year)s birthday bonus as a %(tier)s member: %(points)s") % values
    return _("Happy birthday! Your %(year)s birthday bonus: %(points)s") % values


def _referral(entry: "LedgerEntry", d: dict) -> str:
    values = {"name": d.get("name", ""), "points": points_text(entry.points)}
    if entry.kind == entry.Kind.WITHDRAWAL:
        if d.get("why") == "returned":
            return _("Referral reward withdrawn: the qualifying purchase was returned (%(points)s)") % values
        return _("Referral reward withdrawn after our review (%(points)s)") % values
    if d.get("role") == "referrer":
        return _("Thank you for inviting %(name)s, who joined and made a first purchase: %(points)s") % values
    return _("Welcome reward for joining with %(name)s's invitation: %(points)s") % values


def explain(entry: "LedgerEntry") -> str:
    """Write the member-facing sentence for a ledger entry."""
    d = entry.detail or {}
    kind = entry.Kind
    if entry.kind == kind.EARN and "receipt" in d:
        return _earn(entry, d)
    if entry.kind == kind.CLAWBACK and "return" in d:
        return _clawback(entry, d)
    if entry.kind == kind.EXPIRE and "earned_on" in d:
        return _expire(entry, d)
    if entry.kind == kind.OPENING and "earned_on" in d:
        return _("Opening balance brought over from your previous card, earned on %(earned_on)s") % {
            "earned_on": day_text(d["earned_on"])
        }
    if entry.kind == kind.ADJUSTMENT and d.get("why") == "account_closed":
        return _("Forfeited when the account was closed: %(points)s") % {"points": points_text(-entry.points)}
    if entry.kind == kind.ADJUSTMENT:
        return _("Adjusted by our staff: %(reason)s") % {"reason": entry.reason}
    if entry.kind == kind.BONUS and "birthday" in d:
        return _birthday(entry, d)
    if entry.kind in (kind.REFERRAL, kind.WITHDRAWAL) and "referral" in d:
        return _referral(entry, d)
    if entry.kind in (kind.SPEND, kind.REVERSAL) and "redemption" in d:
        return _redemption(entry, d)
    return entry.reason or str(entry.get_kind_display())


# --- stamp cards ------------------------------------------------------------------------


def stamps_text(stamps: int) -> str:
    return ngettext("%(count)s stamp", "%(count)s stamps", abs(stamps)) % {"count": f"{abs(stamps):,}"}


def _stamp_figures(d: dict) -> str:
    """Say what earned the stamps: the amount paid against the minimum, or the items counted."""
    if d["rule"] == "purchase_over":
        amount = format_money(d["amount"], d["currency"])
        if not Decimal(d["minimum"]):
            return _("purchase of %(amount)s") % {"amount": amount}
        return _("purchase of %(amount)s over %(minimum)s") % {
            "amount": amount,
            "minimum": format_money(d["minimum"], d["currency"]),
        }
    return _("%(product)s × %(items)s") % {"product": d["label"], "items": d["items"]}


def explain_stamps(event: "StampEvent") -> str:
    """Write the member-facing sentence for stamps added to or taken off a stamp card."""
    d = event.detail or {}
    if event.stamps < 0:
        text = _("−%(stamps)s: return of receipt %(receipt)s") % {"stamps": stamps_text(event.stamps), "receipt": d["receipt"]}
        if d.get("short") and d.get("completed_card"):
            text += " " + ngettext(
                "(%(count)s stamp is not taken back: it was on a card already complete)",
                "(%(count)s stamps are not taken back: they were on a card already complete)",
                d["short"],
            ) % {"count": d["short"]}
        return text
    figures = {"stamps": stamps_text(event.stamps), "receipt": d["receipt"], "figures": _stamp_figures(d)}
    if d.get("completed") and event.card.voucher is not None:
        return _("%(stamps)s for receipt %(receipt)s (%(figures)s): card complete, your reward “%(reward)s” is ready") % {
            **figures,
            "reward": event.card.voucher.reward.title,
        }
    if d.get("carried_over"):
        return _("%(stamps)s for receipt %(receipt)s (%(figures)s), carried over to your new card") % figures
    return _("%(stamps)s for receipt %(receipt)s (%(figures)s)") % figures


# --- redemptions and vouchers -------------------------------------------------------------


def _redemption(entry: "LedgerEntry", d: dict) -> str:
    titles = d.get("reward") or {}
    # The reward's title as it was when redeemed, in the reader's language when the merchant gave one.
    title = titles.get(get_language() or "en") or titles.get("en") or next(iter(titles.values()), "")
    if entry.kind == entry.Kind.SPEND:
        return _("Redeemed: %(title)s") % {"title": title}
    values = {"title": title, "code": d["voucher"]}
    if d.get("why") == "expired":
        return _("Points back for your voucher %(code)s (%(title)s), which expired unused") % values
    text = _("Points back: your voucher %(code)s (%(title)s) was cancelled") % values
    if entry.reason:
        text += " " + _("(%(reason)s)") % {"reason": entry.reason}
    return text
