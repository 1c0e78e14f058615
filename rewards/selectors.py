"""Reads that shape ledger data for pages, the API and the reconciliation command."""

import datetime as dt
import zoneinfo
from dataclasses import dataclass, fields
from decimal import Decimal

from django.db import connection
from django.db.models import Count, F, Q, QuerySet, Sum
from django.utils import timezone

from members.models import Member, Store
from rewards.models import LedgerEntry, PointsAccount, Programme, Purchase, Redemption, Return, Voucher


@dataclass(frozen=True)
class Drift:
    member_id: int
    problem: str


ACCOUNT_DRIFT_SQL = """
WITH e AS (
    SELECT account_id, SUM(points) AS total, SUM(owed_points) AS owed_created,
           -COALESCE(SUM(points) FILTER (WHERE kind = 'spend'), 0) AS spent
    FROM rewards_ledgerentry GROUP BY account_id
), l AS (
    SELECT account_id,
           COALESCE(SUM(remaining) FILTER (WHERE status = 'available'), 0) AS available,
           COALESCE(SUM(remaining) FILTER (WHERE status = 'pending'), 0) AS pending,
           SUM(points) AS earned
    FROM rewards_pointslot GROUP BY account_id
), r AS (
    SELECT l.account_id, SUM(x.points) AS repaid
    FROM rewards_lotallocation x JOIN rewards_pointslot l ON l.id = x.lot_id
    WHERE x.kind = 'repay' GROUP BY l.account_id
)
SELECT a.member_id, concat_ws('; ',
    CASE WHEN a.available <> COALESCE(l.available, 0)
         THEN format('available %s but lots hold %s', a.available, COALESCE(l.available, 0)) END,
    CASE WHEN a.pending <> COALESCE(l.pending, 0)
         THEN format('pending %s but lots hold %s', a.pending, COALESCE(l.pending, 0)) END,
    CASE WHEN a.available + a.pending - a.owed <> COALESCE(e.total, 0)
         THEN format('balance %s but entries sum to %s', a.available + a.pending - a.owed, COALESCE(e.total, 0)) END,
    CASE WHEN a.owed <> COALESCE(e.owed_created, 0) - COALESCE(r.repaid, 0)
         THEN format('owed %s but clawbacks owe %s', a.owed, COALESCE(e.owed_created, 0) - COALESCE(r.repaid, 0)) END,
    CASE WHEN a.lifetime_earned <> COALESCE(l.earned, 0)
         THEN format('earned to date %s but lots total %s', a.lifetime_earned, COALESCE(l.earned, 0)) END,
    CASE WHEN a.lifetime_spent <> COALESCE(e.spent, 0)
         THEN format('spent to date %s but spends total %s', a.lifetime_spent, COALESCE(e.spent, 0)) END
)
FROM rewards_pointsaccount a
LEFT JOIN e ON e.account_id = a.member_id
LEFT JOIN l ON l.account_id = a.member_id
LEFT JOIN r ON r.account_id = a.member_id
WHERE a.available <> COALESCE(l.available, 0) OR a.pending <> COALESCE(l.pending, 0)
   OR a.available + a.pending - a.owed <> COALESCE(e.total, 0)
   OR a.owed <> COALESCE(e.owed_created, 0) - COALESCE(r.repaid, 0)
   OR a.lifetime_earned <> COALESCE(l.earned, 0) OR a.lifetime_spent <> COALESCE(e.spent, 0)
ORDER BY a.member_id
"""

LOT_DRIFT_SQL = """
SELECT l.account_id, format('lot %s: %s points, %s taken, but %s remaining', l.id, l.points, COALESCE(x.taken, 0), l.remaining)
FROM rewards_pointslot l
LEFT JOIN (SELECT lot_id, SUM(points) AS taken FROM rewards_lotallocation GROUP BY lot_id) x ON x.lot_id = l.id
WHERE l.points - COALESCE(x.taken, 0) <> l.remaining
ORDER BY l.account_id, l.id
"""

EARN_DRIFT_SQL = """
SELECT COALESCE(p.member_id, e.account_id),
       format('purchase %s earned %s points but its earn entry gives %s to member %s',
              p.id, p.points_earned, COALESCE(e.points, 0), e.account_id)
FROM rewards_purchase p
LEFT JOIN rewards_ledgerentry e ON e.purchase_id = p.id AND e.kind = 'earn'
WHERE (p.member_id IS NOT NULL AND p.points_earned <> COALESCE(e.points, 0))
   OR e.account_id IS DISTINCT FROM p.member_id AND e.id IS NOT NULL
ORDER BY 1
"""

RETURN_DRIFT_SQL = """
SELECT p.member_id,
       format('return %s took back %s points but its entry says %s', r.id, r.points_clawed_back, COALESCE(-e.points, 0))
FROM rewards_return r
JOIN rewards_purchase p ON p.id = r.purchase_id
LEFT JOIN rewards_ledgerentry e ON e.return_record_id = r.id AND e.kind = 'clawback'
WHERE r.points_clawed_back <> COALESCE(-e.points, 0)
UNION ALL
SELECT p.member_id, format('purchase %s earned %s points but returns took back %s', p.id, p.points_earned, -SUM(e.points))
FROM rewards_purchase p
JOIN rewards_ledgerentry e ON e.purchase_id = p.id AND e.kind = 'clawback'
GROUP BY p.id HAVING -SUM(e.points) > p.points_earned
ORDER BY 1
"""


def ledger_drift() -> list[Drift]:
    """Reconcile every account against its entries and lots; an empty list means no drift."""
    drifts: list[Drift] = []
    with connection.cursor() as cursor:
        for sql in (ACCOUNT_DRIFT_SQL, LOT_DRIFT_SQL, EARN_DRIFT_SQL, RETURN_DRIFT_SQL):
            cursor.execute(sql)
            drifts.extend(Drift(member_id=row[0], problem=row[1]) for row in cursor.fetchall())
    return drifts


def account_for(member: Member) -> PointsAccount:
    """Return the member's balances, all zero before their first points."""
    return PointsAccount.objects.filter(member=member).first() or PointsAccount(member=member)


def account_fetched(member: Member) -> PointsAccount:
    """Return the balances of a member just fetched with `select_related("points")`, zero before their first points.

    Only on a fresh fetch: making a `PointsAccount(member=...)` sets the relation on the member too,
    so a member that went through a write may hold a stale one.
    """
    try:
        return member.points
    except PointsAccount.DoesNotExist:
        return PointsAccount(member_id=member.pk)


# Read on every balance answer: the (account, status, expires_at) index answers it.
UPCOMING_EXPIRIES_SQL = """
SELECT ((expires_at AT TIME ZONE %(tz)s) - interval '1 day')::date AS expires_on, SUM(remaining)::bigint AS points
FROM rewards_pointslot
WHERE account_id = %(member)s AND status IN ('pending', 'available') AND remaining > 0 AND expires_at IS NOT NULL
GROUP BY expires_at ORDER BY expires_at LIMIT %(limit)s
"""


def upcoming_expiries(member: Member, *, tz: zoneinfo.ZoneInfo, limit: int = 3) -> list[dict[str, object]]:
    """Return the next expiries as {points, expires_on}: the last day the points can be used."""
    with connection.cursor() as cursor:
        cursor.execute(UPCOMING_EXPIRIES_SQL, {"member": member.pk, "tz": str(tz), "limit": limit})
        return [{"points": points, "expires_on": expires_on} for expires_on, points in cursor.fetchall()]


def ledger_entries(member: Member) -> "QuerySet[LedgerEntry]":
    """Return the member's history, newest first, with what each entry came from."""
    return LedgerEntry.objects.filter(account_id=member.pk).select_related("purchase__store", "return_record", "lot")


def member_panel(member: Member, *, today: dt.date | None = None) -> dict[str, object]:
    """Return what the counter shows of a member: balances, tier and progress, next expiries,
    vouchers ready to use, stamp cards and recent history, in a fixed number of queries."""
    from rewards import stamps, tiers  # they read this module's selectors

    programme = Programme.objects.get()
    return {
        "account": account_for(member),
        "expiries": upcoming_expiries(member, tz=programme.tz),
        "tier": tiers.tier_current(member, today=today),
        "progress": tiers.tier_progress(member, today=today),
        "vouchers": list(
            member.vouchers.filter(status=Voucher.Status.ISSUED, expires_at__gt=timezone.now()).select_related("reward")[:20]
        ),
        "cards": stamps.stamp_cards_for(member),
        "history": list(ledger_entries(member)[:10]),
    }


# --- the staff counter's shift summary ---------------------------------------------------


@dataclass(frozen=True)
class ShiftFigures:
    """What one staff member did at a store in a day; `staff_id` None gathers what no staff member did (tills, online)."""

    staff_id: int | None
    name: str
    purchases: int = 0
    purchase_amount: Decimal = Decimal(0)
    points_awarded: int = 0
    enrolments: int = 0
    redemptions: int = 0
    redemption_points: int = 0
    vouchers_used: int = 0
    returns: int = 0
    refunded: Decimal = Decimal(0)
    points_clawed_back: int = 0
    adjustments: int = 0
    points_added: int = 0
    points_removed: int = 0


@dataclass(frozen=True)
class ShiftSummary:
    store: Store
    day: dt.date
    staff: list[ShiftFigures]
    total: ShiftFigures


def shift_summary(*, store: Store, day: dt.date) -> ShiftSummary:
    """Total what each staff member did at a store on a day of the store's time zone, in one grouped query per kind."""
    tz = zoneinfo.ZoneInfo(store.timezone)
    start = dt.datetime.combine(day, dt.time(), tzinfo=tz)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=tz)
    kinds = [
        (
            Purchase.objects.filter(store=store, occurred_at__gte=start, occurred_at__lt=end),
            "recorded_by",
            # A sale without a card earns nothing until it is claimed: its points are not yet awarded.
            {
                "purchases": Count("pk"),
                "purchase_amount": Sum("gross"),
                "points_awarded": Sum("points_earned", filter=Q(member__isnull=False)),
            },
        ),
        (
            Member.objects.filter(enrolled_store=store, enrolled_at__gte=start, enrolled_at__lt=end),
            "enrolled_by",
            {"enrolments": Count("pk")},
        ),
        (
            # A cancelled redemption gave its points back, so it does not count.
            Redemption.objects.filter(store=store, status=Redemption.Status.REDEEMED, created_at__gte=start, created_at__lt=end),
            "created_by",
            {"redemptions": Count("pk"), "redemption_points": Sum("points")},
        ),
        (
            Voucher.objects.filter(used_store=store, status=Voucher.Status.USED, used_at__gte=start, used_at__lt=end),
            "used_by",
            {"vouchers_used": Count("pk")},
        ),
        (
            Return.objects.filter(store=store, recorded_at__gte=start, recorded_at__lt=end),
            "recorded_by",
            {"returns": Count("pk"), "refunded": Sum("amount"), "points_clawed_back": Sum("points_clawed_back")},
        ),
        (
            # An adjustment names no store: it counts for the stores its author works in.
            LedgerEntry.objects.filter(
                kind=LedgerEntry.Kind.ADJUSTMENT, actor__stores=store, created_at__gte=start, created_at__lt=end
            ),
            "actor",
            {
                "adjustments": Count("pk"),
                "points_added": Sum("points", filter=Q(points__gt=0)),
                "points_removed": Sum(-F("points"), filter=Q(points__lt=0)),
            },
        ),
    ]
    figures: dict[int | None, dict[str, object]] = {}
    for rows, staff, aggregates in kinds:
        for row in rows.values(staff, f"{staff}__name", f"{staff}__email").annotate(**aggregates):
            staff_id, name, email = row.pop(staff), row.pop(f"{staff}__name"), row.pop(f"{staff}__email")
            mine = figures.setdefault(staff_id, {"name": name or email or ""})
            mine.update((key, value) for key, value in row.items() if value is not None)
    people = sorted(
        (ShiftFigures(staff_id=staff_id, **values) for staff_id, values in figures.items()),  # type: ignore[arg-type]
        key=lambda person: (person.staff_id is None, person.name.casefold(), person.staff_id or 0),
    )
    total = ShiftFigures(
        staff_id=None,
        name="",
        **{
            field.name: sum((getattr(person, field.name) for person in people), field.default)
            for field in fields(ShiftFigures)
            if field.name not in ("staff_id", "name")
        },
    )
    return ShiftSummary(store=store, day=day, staff=people, total=total)
