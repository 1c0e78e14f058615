"""The sentence a member reads next to every ledger entry, in the language being shown.

Entries store the figures (`LedgerEntry.detail`); the sentence is written when it is read,
so a member who switches language sees their whole history in the new one.
"""

from decimal import Decimal
from typing import TYPE_CHECKING

from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from rewards.money import format_money

if TYPE_CHECKING:
    from rewards.models import LedgerEntry


def points_text(points: int) -> str:
    return ngettext("%(points)s pt", "%(points)s pts", abs(points)) % {"points": f"{points:,}"}


def _rate(detail: dict) -> str:
    rate = Decimal(detail["rate"]).normalize()
    return _("%(rate)s pt per %(unit)s") % {"rate": f"{rate:f}", "unit": format_money(1, detail["currency"], whole=True)}


def _earn(entry: "LedgerEntry", d: dict) -> str:
    money = format_money(d["base"], d["currency"])
    text = _("Receipt %(receipt)s: %(base)s × %(rate)s = %(points)s") % {
        "receipt": d["receipt"],
        "base": money,
        "rate": _rate(d),
        "points": points_text(entry.points),
    }
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


def _expire(entry: "LedgerEntry", d: dict) -> str:
    return _("%(points)s earned on %(earned_on)s reached the end of their validity") % {
        "points": points_text(-entry.points),
        "earned_on": d["earned_on"],
    }


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
        return _("Opening balance brought over from your previous card, earned on %(earned_on)s") % {"earned_on": d["earned_on"]}
    if entry.kind == kind.ADJUSTMENT:
        return _("Adjusted by our staff: %(reason)s") % {"reason": entry.reason}
    return entry.reason or str(entry.get_kind_display())
