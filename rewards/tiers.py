"""Tiers: levels members reach by what they buy, keep by buying again, or are invited to by staff.

A member's tier sits on one `MemberTier` row, written under the member's `PointsAccount` lock
(the order every writer locks in); every change leaves a `TierChange` row with its reason and
figures. What counts towards a tier (spend, points earned, purchases) is summed in SQL from
purchases and returns, never from the spendable balance, so spending points never lowers a tier.

Upgrades happen at once on a purchase; downgrades only at the scheduled evaluation, after a
grace period. A purchase earns at the tier held when it was recorded, so the one that crosses a
threshold earns at the old rate and the next one at the new rate.
"""

import datetime as dt
import zoneinfo
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal

import psycopg
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper
from django.db.models import F, QuerySet
from django.utils import timezone
from django.utils.functional import lazy
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from modeltranslation.utils import build_localized_fieldname

from members.models import Member, Notification, User
from members.notifications import notify
from rewards import config, services
from rewards.explanations import points_text
from rewards.models import MemberTier, Purchase, Tier, TierChange
from rewards.money import format_money

# Staff who may change a member's tier may invite one.
INVITE_PERMISSION = "rewards.change_membertier"

# The window a tier `t` counts over as of %(today)s in the programme's time zone %(tz)s:
# [starts, ends). A calendar year also gives the year before, [previous_starts, starts):
# what was reached in a year keeps the tier until the end of the next one.
WINDOW_SQL = """
CROSS JOIN LATERAL (
    SELECT CASE t."window"
               WHEN 'rolling' THEN
                   ((%(today)s::date - make_interval(months => t.window_months))::date + 1)::timestamp AT TIME ZONE %(tz)s
               WHEN 'calendar_year' THEN make_date(extract(year FROM %(today)s::date)::int, 1, 1)::timestamp AT TIME ZONE %(tz)s
               ELSE '-infinity'::timestamptz
           END AS starts,
           CASE WHEN t."window" = 'calendar_year'
                THEN make_date(extract(year FROM %(today)s::date)::int - 1, 1, 1)::timestamp AT TIME ZONE %(tz)s
           END AS previous_starts,
           (%(today)s::date + 1)::timestamp AT TIME ZONE %(tz)s AS ends
) w
"""

# What member {member} did in the window `w` by the tier's metric. Returns count against the
# purchase they came from, whenever they happened: spend is what was paid less what was refunded,
# points are what purchases earned less what returns took back (spending them changes nothing),
# and a purchase returned in full is no purchase.
VALUE_SQL = """
CROSS JOIN LATERAL (
    SELECT COALESCE(SUM(x.figure) FILTER (WHERE x.occurred_at >= w.starts), 0) AS value,
           COALESCE(SUM(x.figure) FILTER (WHERE x.occurred_at < w.starts), 0) AS previous_value
    FROM (
        SELECT p.occurred_at,
               CASE t.metric
                   WHEN 'spend' THEN GREATEST(p.net - COALESCE(r.refunded, 0), 0)
                   WHEN 'points' THEN p.points_earned - COALESCE(r.clawed, 0)
                   ELSE CASE WHEN COALESCE(r.refunded, 0) < p.gross THEN 1 ELSE 0 END
               END::numeric AS figure
        FROM rewards_purchase p
        LEFT JOIN LATERAL (
            SELECT SUM(amount) AS refunded, SUM(points_clawed_back) AS clawed FROM rewards_return WHERE purchase_id = p.id
        ) r ON true
        WHERE p.member_id = {member} AND p.occurred_at >= COALESCE(w.previous_starts, w.starts) AND p.occurred_at < w.ends
    ) x
) q
"""

VALUES_SQL = (
    """
SELECT x.tier_id, q.value, q.previous_value
FROM unnest(%(tiers)s::bigint[]) AS x(tier_id)
JOIN rewards_tier t ON t.id = x.tier_id
"""
    + WINDOW_SQL
    + VALUE_SQL.format(member="%(member)s")
)

# Lock the members' accounts in id order first, so tier changes queue behind their purchases.
LOCK_ACCOUNTS_SQL = "SELECT member_id FROM rewards_pointsaccount WHERE member_id = ANY(%(ids)s) ORDER BY member_id FOR UPDATE"

# Move each member to the highest open tier above the one they hold whose entry threshold they
# now reach; the rank is checked again on the locked row, so a concurrent move up is never undone.
UPGRADE_SQL = (
    """
WITH held AS (
    SELECT x.member_id, s.tier_id AS from_tier_id,
           -- An invitation past its end no longer counts.
           CASE WHEN s.invited_until IS NULL OR s.invited_until >= %(today)s THEN h.rank END AS rank
    FROM unnest(%(ids)s::bigint[]) AS x(member_id)
    LEFT JOIN rewards_membertier s ON s.member_id = x.member_id
    LEFT JOIN rewards_tier h ON h.id = s.tier_id
), reached AS (
    SELECT DISTINCT ON (held.member_id) held.member_id, held.from_tier_id, t.id AS tier_id, t.metric, t.entry_threshold, q.value
    FROM held
    JOIN rewards_tier t ON t.active AND NOT t.invitation_only AND (held.rank IS NULL OR t.rank > held.rank)
"""
    + WINDOW_SQL
    + VALUE_SQL.format(member="held.member_id")
    + """
    WHERE q.value >= t.entry_threshold
    ORDER BY held.member_id, t.rank DESC
), moved AS (
    INSERT INTO rewards_membertier AS s (member_id, tier_id, since, invited_until, missed_since, evaluated_on)
    SELECT member_id, tier_id, %(now)s, NULL, NULL, NULL FROM reached ORDER BY member_id
    ON CONFLICT (member_id) DO UPDATE
    SET tier_id = EXCLUDED.tier_id, since = EXCLUDED.since, invited_until = NULL, missed_since = NULL
    WHERE NOT EXISTS (
        SELECT 1 FROM rewards_tier c
        WHERE c.id = s.tier_id AND (s.invited_until IS NULL OR s.invited_until >= %(today)s)
          AND c.rank >= (SELECT rank FROM rewards_tier WHERE id = EXCLUDED.tier_id)
    )
    RETURNING s.member_id
)
INSERT INTO rewards_tierchange (member_id, from_tier_id, to_tier_id, reason, detail, note, actor_id, created_at)
SELECT r.member_id, r.from_tier_id, r.tier_id, 'upgrade',
       jsonb_build_object('metric', r.metric, 'value', r.value::text, 'threshold', r.entry_threshold::text), '', NULL, %(now)s
FROM reached r JOIN moved USING (member_id)
ORDER BY r.member_id
RETURNING id
"""
)

# One chunk of the evaluation, for members holding a tier not yet evaluated today. Each member is
# judged against their tier's retain threshold and every open tier below it (for an invitation that
# ended: every open tier), then the outcome is applied to all of them at once:
#   invited   an invitation still running: nothing to judge
#   kept      the keep threshold is met (a grace period, if any, ends)
#   missed    not met: a grace period starts, or goes on
#   lowered   not met by the end of the grace period: down to the highest tier still met, or none
#   invitation_ended   down (or up) to the highest tier met, or none
EVALUATE_SQL = (
    """
WITH status AS (
    SELECT s.member_id, s.tier_id, s.since, s.invited_until, s.missed_since, s.evaluated_on, t.rank, t.grace_days
    FROM rewards_membertier s JOIN rewards_tier t ON t.id = s.tier_id
    WHERE s.member_id = ANY(%(ids)s) AND s.evaluated_on IS DISTINCT FROM %(today)s
), judged AS (
    SELECT status.member_id, t.id AS tier_id, t.rank, t.metric, t.retain_threshold, t.id = status.tier_id AS own,
           q.value, GREATEST(q.value, q.previous_value) >= t.retain_threshold AS met
    FROM status
    JOIN rewards_tier t
      ON (t.id = status.tier_id AND status.invited_until IS NULL)
      OR (t.active AND NOT t.invitation_only AND t.id <> status.tier_id
          AND (t.rank < status.rank OR status.invited_until IS NOT NULL))
"""
    + WINDOW_SQL
    + VALUE_SQL.format(member="status.member_id")
    + """
    WHERE status.invited_until IS NULL OR status.invited_until < %(today)s
), fallback AS (
    SELECT DISTINCT ON (member_id) member_id, tier_id, metric, value, retain_threshold
    FROM judged WHERE NOT own AND met
    ORDER BY member_id, rank DESC
), plan AS (
    SELECT s.member_id, s.tier_id AS from_tier_id, f.tier_id AS to_tier_id, s.missed_since, s.since, s.evaluated_on,
           CASE WHEN s.invited_until IS NOT NULL AND s.invited_until >= %(today)s THEN 'invited'
                WHEN s.invited_until IS NOT NULL THEN 'invitation_ended'
                WHEN o.met THEN 'kept'
                WHEN COALESCE(s.missed_since, %(today)s) + s.grace_days <= %(today)s THEN 'lowered'
                ELSE 'missed'
           END AS outcome,
           CASE WHEN s.invited_until IS NULL
                THEN jsonb_build_object('metric', o.metric, 'value', o.value::text, 'threshold', o.retain_threshold::text,
                                        'missed_since', COALESCE(s.missed_since, %(today)s)::text)
                WHEN f.tier_id IS NOT NULL
                THEN jsonb_build_object('metric', f.metric, 'value', f.value::text, 'threshold', f.retain_threshold::text,
                                        'invited_until', s.invited_until::text)
                ELSE jsonb_build_object('invited_until', s.invited_until::text)
           END AS detail
    FROM status s
    LEFT JOIN judged o ON o.member_id = s.member_id AND o.own
    LEFT JOIN fallback f ON f.member_id = s.member_id
), updated AS (
    UPDATE rewards_membertier m
    SET evaluated_on = %(today)s,
        missed_since = CASE WHEN p.outcome = 'missed' THEN COALESCE(m.missed_since, %(today)s) END,
        tier_id = CASE WHEN p.outcome IN ('lowered', 'invitation_ended') THEN p.to_tier_id ELSE m.tier_id END,
        since = CASE WHEN p.outcome IN ('lowered', 'invitation_ended') THEN %(now)s ELSE m.since END,
        invited_until = CASE WHEN p.outcome = 'invitation_ended' THEN NULL ELSE m.invited_until END
    FROM plan p WHERE m.member_id = p.member_id
), changes AS (
    INSERT INTO rewards_tierchange (member_id, from_tier_id, to_tier_id, reason, detail, note, actor_id, created_at)
    SELECT member_id, from_tier_id, to_tier_id, CASE outcome WHEN 'lowered' THEN 'evaluation' ELSE outcome END, detail, '', NULL,
           %(now)s
    FROM plan WHERE outcome IN ('lowered', 'invitation_ended')
    ORDER BY member_id
    RETURNING id, member_id
)
SELECT p.outcome, count(*),
       -- Who to write to: every change; a kept tier once a year (not in the year it was reached),
       -- or when a grace period ends because the member caught up.
       array_agg(c.id) FILTER (WHERE c.id IS NOT NULL),
       array_agg(p.member_id) FILTER (
           WHERE p.outcome = 'kept' AND p.missed_since IS NULL
             AND (p.evaluated_on IS NULL OR p.evaluated_on < %(year_starts)s) AND p.since < %(year_starts_at)s
       ),
       array_agg(p.member_id) FILTER (WHERE p.outcome = 'kept' AND p.missed_since IS NOT NULL)
FROM plan p LEFT JOIN changes c ON c.member_id = p.member_id
GROUP BY p.outcome
"""
)


# --- reading a member's tier ------------------------------------------------------------


def _today(tz: zoneinfo.ZoneInfo | None = None) -> dt.date:
    return timezone.localdate(timezone.now(), tz or services.programme_get().tz)


def tiers_current(member_ids: list[int], *, today: dt.date) -> dict[int, Tier]:
    """Return the tier each of these members holds today; members at the base level are left out."""
    statuses = MemberTier.objects.filter(member_id__in=member_ids, tier__isnull=False).values_list(
        "member_id", "tier_id", "invited_until"
    )
    return {member_id: config.tier(tier_id) for member_id, tier_id, until in statuses if until is None or until >= today}


# Set on members read `with_tier_held`: their tier status as it stood when they were read.
HELD = ("held_tier_id", "held_tier_until", "held_tier_missed_since")


def with_tier_held(members: QuerySet[Member]) -> QuerySet[Member]:
    """Read each member's tier status in the same query, so `tier_current` and `tier_progress` need not read it."""
    return members.annotate(
        held_tier_id=F("tier_status__tier_id"),
        held_tier_until=F("tier_status__invited_until"),
        held_tier_missed_since=F("tier_status__missed_since"),
    )


def _forget_held(member: Member) -> None:
    for name in HELD:
        member.__dict__.pop(name, None)


def _status(member: Member) -> MemberTier:
    """Return the member's tier status, as read `with_tier_held` or else from the database; blank at the base level."""
    if hasattr(member, HELD[0]):
        held = {"tier_id": member.held_tier_id, "invited_until": member.held_tier_until}  # type: ignore[attr-defined]
        return MemberTier(member_id=member.pk, missed_since=member.held_tier_missed_since, **held)  # type: ignore[attr-defined]
    # By id: MemberTier(member=...) would set the relation on the member as a side effect.
    return MemberTier.objects.filter(member=member).first() or MemberTier(member_id=member.pk)


def tier_current(member: Member, *, today: dt.date | None = None) -> Tier | None:
    """Return the member's tier; an invitation past its end no longer counts.

    A member read `with_tier_held` is not read again; a tier change through this module forgets what it held.
    """
    status = _status(member)
    if status.tier_id is None:
        return None
    if status.invited_until is not None and status.invited_until < (today or _today()):
        return None
    return config.tier(status.tier_id)


def tier_names(tier: Tier) -> dict[str, str | None]:
    """Return the tier's name in every language, as the earn explanation stores it."""
    return {code: getattr(tier, build_localized_fieldname("name", code)) for code, _name in settings.LANGUAGES}


# The same figures in SQL, for the tier `t` (see `bulk.STAGE_SALES`).
TIER_NAMES_SQL = (
    "jsonb_build_object("
    + ", ".join(f"'{code}', t.{build_localized_fieldname('name', code)}" for code, _name in settings.LANGUAGES)
    + ")"
)


def window_ends_on(tier: Tier, today: dt.date) -> dt.date | None:
    """Return the last day of the window a tier counts over as of a day; None when it rolls on or never ends."""
    return dt.date(today.year, 12, 31) if tier.window == Tier.Window.CALENDAR_YEAR else None


@contextmanager
def _prepared_cursor() -> Iterator[CursorWrapper]:
    """Give a cursor whose statements are prepared on the server, once per database connection.

    The statements of one member's tier (the upgrade check on every sale, the progress on every
    balance read) took about 1 ms each, 0.9 ms of it PostgreSQL planning them. Django leaves
    psycopg's preparing off for the sake of connection poolers (PgBouncer before 1.21 in
    transaction mode): `DATABASE_PREPARE=false` leaves it off here too.
    """
    connection.ensure_connection()
    raw = psycopg.Cursor(connection.connection)  # binding on the server: only such statements can be prepared
    if settings.DATABASE_PREPARE:
        connection.connection.prepare_threshold = 0  # Django's own cursors bind on the client and are never prepared
    # Wrapped as Django wraps its own, so the statements are logged and counted like any other.
    with connection.make_debug_cursor(raw) if connection.queries_logged else connection.make_cursor(raw) as cursor:
        yield cursor


def _values(member: Member, tiers: list[Tier], *, today: dt.date, tz: str) -> dict[int, tuple[Decimal, Decimal]]:
    with _prepared_cursor() as cursor:
        cursor.execute(VALUES_SQL, {"tiers": [t.pk for t in tiers], "member": member.pk, "today": today, "tz": tz})
        return {tier_id: (value, previous) for tier_id, value, previous in cursor.fetchall()}


def tier_value(member: Member, tier: Tier, *, today: dt.date | None = None) -> Decimal:
    """Return what the member did towards a tier in its window as of a day (amount, points or purchases)."""
    programme = services.programme_get()
    return _values(member, [tier], today=today or _today(programme.tz), tz=programme.timezone)[tier.pk][0]


def _ref(tier: Tier | None) -> dict[str, object] | None:
    return None if tier is None else {"code": tier.code, "name": tier.name, "rank": tier.rank}


def tier_progress(member: Member, *, today: dt.date | None = None) -> dict[str, object]:
    """Say what the member needs, and by when, to reach the next tier and to keep the one they hold.

    `metric`, `value` and `window_ends_on` are the next tier's (at the top, the current one's);
    `needed_to_keep` counts by the current tier's own measure; `keep_by` is the last day to do it:
    the end of an invitation, of a grace period or of a calendar-year window.
    """
    programme = services.programme_get()
    today = today or _today(programme.tz)
    status = _status(member)
    current, until = config.tier(status.tier_id) if status.tier_id else None, status.invited_until
    if until is not None and until < today:
        current = None
    kept = current if until is None else None  # an invitation is kept by its end date, not by buying
    for _attempt in range(2):
        following = next((t for t in config.current().ladder if current is None or t.rank > current.rank), None)
        counted = [t for t in (following, kept) if t]
        values = _values(member, counted, today=today, tz=programme.timezone) if counted else {}
        if all(t.pk in values for t in counted):
            break
        config.forget()  # a tier deleted since this process's snapshot was taken: read them afresh
    measured = following or kept
    keep_by = None
    if current is not None and until is not None:
        keep_by = until
    elif kept is not None and status.missed_since is not None:
        # The evaluation on the last day of grace lowers the tier; the day before is the last to catch up.
        keep_by = status.missed_since + dt.timedelta(days=kept.grace_days - 1)
    elif kept is not None:
        keep_by = window_ends_on(kept, today)
    return {
        "current": _ref(current),
        "next": _ref(following),
        "metric": measured.metric if measured else None,
        "value": values[measured.pk][0] if measured else None,
        "needed_to_reach": max(following.entry_threshold - values[following.pk][0], Decimal(0)) if following else None,
        "needed_to_keep": max(kept.retain_threshold - values[kept.pk][0], Decimal(0)) if kept else None,
        "window_ends_on": window_ends_on(measured, today) if measured else None,
        "keep_by": keep_by,
    }


# --- figures in messages -----------------------------------------------------------------


def _figure(metric: str, value: object, currency: str) -> str:
    amount = Decimal(str(value))
    if metric == Tier.Metric.SPEND:
        return format_money(amount, currency)
    if metric == Tier.Metric.POINTS:
        return points_text(int(amount))
    return ngettext("%(count)s purchase", "%(count)s purchases", int(amount)) % {"count": f"{int(amount):,}"}


# Written when the message is rendered, in the member's language.
figure_text = lazy(_figure, str)


def _notify_changes(change_ids: list[int], currency: str) -> None:
    changes = TierChange.objects.filter(pk__in=change_ids).select_related("member", "from_tier", "to_tier").order_by("pk")
    for change in changes:
        up = change.to_tier is not None and (change.from_tier is None or change.to_tier.rank > change.from_tier.rank)
        d = change.detail
        context = {
            "tier": change.to_tier,
            "previous": change.from_tier,
            "reason": change.reason,
            "until": dt.date.fromisoformat(d["until"]) if "until" in d else None,
            "value": figure_text(d["metric"], d["value"], currency) if "metric" in d else "",
            "threshold": figure_text(d["metric"], d["threshold"], currency) if "metric" in d else "",
            "multiplier": f"{change.to_tier.earn_multiplier.normalize():f}" if change.to_tier else "",
        }
        kind = Notification.Kind.TIER_UP if up else Notification.Kind.TIER_LOWERED
        notify(member=change.member, kind=kind, key=f"tier_change:{change.pk}", context=context)


# --- moving up ---------------------------------------------------------------------------


def tiers_upgrade_reached(
    *, member_ids: list[int], now: dt.datetime, tz: zoneinfo.ZoneInfo, lock: bool = True, tell: bool = True
) -> list[int]:
    """Move members up to the highest tier they now reach, in one statement; return the changes' ids.

    Call it inside the transaction that recorded their purchases. `lock=False` when the caller
    already holds every one of these members' account locks; `tell=False` writes no messages.
    """
    if not member_ids:
        return []
    params = {"ids": sorted(member_ids), "now": now, "today": timezone.localdate(now, tz), "tz": str(tz)}
    # One buyer's check runs on every sale: prepared. A batch's, planned for its own number of members.
    with _prepared_cursor() if len(member_ids) == 1 else connection.cursor() as cursor:
        if lock:
            cursor.execute(LOCK_ACCOUNTS_SQL, params)
        cursor.execute(UPGRADE_SQL, params)
        change_ids = [row[0] for row in cursor.fetchall()]
    if change_ids and tell:
        _notify_changes(change_ids, services.programme_get().currency)
    return change_ids


def tier_upgrade_after_purchase(*, purchase: Purchase, now: dt.datetime, held: Tier | None) -> TierChange | None:
    """Move the buyer up at once if this purchase took them over a higher tier's entry threshold.

    `held` is the tier the buyer held before it (`tier_current`). Called inside the purchase's
    transaction after its earn entry was written, so the member's account is locked already
    when the purchase earned points.
    """
    if purchase.member_id is None or not any(held is None or t.rank > held.rank for t in config.current().ladder):
        return None  # nothing above to reach: a member at the top, or a programme without tiers
    programme = purchase.rules.programme
    changes = tiers_upgrade_reached(member_ids=[purchase.member_id], now=now, tz=programme.tz, lock=purchase.points_earned <= 0)
    if not changes:
        return None
    _forget_held(purchase.member)  # type: ignore[arg-type]
    return TierChange.objects.get(pk=changes[0])


# --- staff: invitations and overrides ----------------------------------------------------


def _status_locked(member: Member) -> MemberTier:
    _forget_held(member)  # about to change
    services._account_locked(member)
    MemberTier.objects.bulk_create([MemberTier(member=member, tier=None)], ignore_conflicts=True)
    return MemberTier.objects.select_for_update(of=("self",)).select_related("tier").get(member=member)


def _require_permission(by: User) -> None:
    if not by.has_perm(INVITE_PERMISSION):
        raise PermissionDenied(_("You are not allowed to change members' tiers."))


def _member_errors(member: Member) -> dict[str, str]:
    if member.status != Member.Status.ACTIVE:
        return {"member": _("This membership is %(status)s.") % {"status": member.get_status_display().lower()}}
    return {}


def tier_invite_errors(*, member: Member, tier: Tier, until: dt.date | None, today: dt.date) -> dict[str, str]:
    """Return what is wrong with an invitation, by field; empty when it can be given."""
    errors = _member_errors(member)
    if not tier.invitation_only:
        errors["tier"] = _("Only tiers by invitation can be given this way; the others are reached by buying.")
    elif not tier.active:
        errors["tier"] = _("This tier is not active.")
    elif (held := tier_current(member, today=today)) is not None and held.rank > tier.rank:
        errors["tier"] = _("The member already holds %(tier)s, a higher tier.") % {"tier": held.name}
    if until is None:
        errors["until"] = _("Give the last day of the invitation.")
    elif until < today:
        errors["until"] = _("The invitation cannot end in the past.")
    return errors


@transaction.atomic
def tier_invite(*, member: Member, tier: Tier, until: dt.date | None, by: User, note: str = "") -> TierChange:
    """Give a member an invitation-only tier until a day; inviting again with the same end is a no-op."""
    _require_permission(by)
    programme = services.programme_get()
    today = _today(programme.tz)
    status = _status_locked(member)
    if errors := tier_invite_errors(member=member, tier=tier, until=until, today=today):
        raise ValidationError(errors)
    invitation = member.tier_changes.filter(to_tier=tier, reason=TierChange.Reason.INVITED).order_by("-created_at", "-pk")
    if status.tier_id == tier.pk and status.invited_until == until and invitation.exists():
        return invitation.first()  # type: ignore[return-value]
    previous = status.tier if status.invited_until is None or status.invited_until >= today else None
    now = timezone.now()
    change = TierChange.objects.create(
        member=member,
        from_tier=status.tier,
        to_tier=tier,
        reason=TierChange.Reason.INVITED,
        detail={"until": until.isoformat()},  # type: ignore[union-attr]
        note=note.strip(),
        actor=by,
        created_at=now,
    )
    if status.tier_id != tier.pk:
        status.since = now
    status.tier, status.invited_until, status.missed_since = tier, until, None
    status.save(update_fields=["tier", "since", "invited_until", "missed_since"])
    if previous is None or previous.pk != tier.pk:
        _notify_changes([change.pk], programme.currency)
    return change


@transaction.atomic
def tier_set(*, member: Member, tier: Tier | None, by: User, note: str) -> TierChange | None:
    """Put a member in a tier (or at the base level) by hand, with the reason; None if already there."""
    _require_permission(by)
    errors = _member_errors(member)
    if tier is not None and tier.invitation_only:
        errors["tier"] = _("Invite the member to this tier instead: an invitation needs an end date.")
    if not note.strip():
        errors["note"] = _("Give a reason: it is kept in the tier history.")
    if errors:
        raise ValidationError(errors)
    status = _status_locked(member)
    if status.tier_id == (tier.pk if tier else None) and status.invited_until is None:
        return None
    now = timezone.now()
    change = TierChange.objects.create(
        member=member,
        from_tier=status.tier,
        to_tier=tier,
        reason=TierChange.Reason.STAFF,
        note=note.strip(),
        actor=by,
        created_at=now,
    )
    status.tier, status.since, status.invited_until, status.missed_since = tier, now, None, None
    status.save(update_fields=["tier", "since", "invited_until", "missed_since"])
    _notify_changes([change.pk], services.programme_get().currency)
    return change


# --- the scheduled evaluation --------------------------------------------------------------


@dataclass(frozen=True)
class TierEvaluation:
    evaluated: int = 0
    kept: int = 0
    missed: int = 0
    lowered: int = 0
    invitations_ended: int = 0


def tiers_evaluate(*, today: dt.date | None = None, chunk: int | None = None) -> TierEvaluation:
    """Judge every member holding a tier against what it takes to keep it; safe to run twice a day.

    Members who miss it start a grace period and come down when it ends without them catching
    up; members who keep it hear so once a year; invitations past their end come to an end.
    """
    programme = services.programme_get()
    today = today or _today(programme.tz)
    chunk = chunk or services.BULK_CHUNK
    year_starts = dt.date(today.year, 1, 1)
    params = {
        "today": today,
        "tz": programme.timezone,
        "now": timezone.now(),
        "year_starts": year_starts,
        "year_starts_at": dt.datetime.combine(year_starts, dt.time(), tzinfo=programme.tz),
    }
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT member_id FROM rewards_membertier WHERE tier_id IS NOT NULL AND evaluated_on IS DISTINCT FROM %s "
            "ORDER BY member_id",
            [today],
        )
        due = [row[0] for row in cursor.fetchall()]
    counts = dict.fromkeys(["kept", "missed", "lowered", "invitation_ended", "invited"], 0)
    for start in range(0, len(due), chunk):
        ids = due[start : start + chunk]
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(LOCK_ACCOUNTS_SQL, {"ids": ids})
            cursor.execute(
                "SELECT member_id FROM rewards_membertier WHERE member_id = ANY(%s) ORDER BY member_id FOR UPDATE", [ids]
            )
            cursor.execute(EVALUATE_SQL, {**params, "ids": ids})
            rows = cursor.fetchall()
            changed, kept, recovered = [], [], []
            for outcome, number, change_ids, kept_ids, recovered_ids in rows:
                counts[outcome] += number
                changed += change_ids or []
                kept += kept_ids or []
                recovered += recovered_ids or []
            _notify_changes(changed, programme.currency)
            _notify_kept(kept, key="{tier}:{today.year}", today=today)
            _notify_kept(recovered, key="{tier}:caught-up:{today}", today=today)
    return TierEvaluation(
        evaluated=sum(counts.values()),
        kept=counts["kept"],
        missed=counts["missed"],
        lowered=counts["lowered"],
        invitations_ended=counts["invitation_ended"],
    )


def _notify_kept(member_ids: list[int], *, key: str, today: dt.date) -> None:
    statuses = MemberTier.objects.filter(member_id__in=member_ids).select_related("member", "tier").order_by("member_id")
    for status in statuses:
        notify(
            member=status.member,
            kind=Notification.Kind.TIER_KEPT,
            key="tier_kept:" + key.format(tier=status.tier_id, today=today),
            context={"tier": status.tier, "today": today},
        )
