"""Messages and gifts along a member's life: points earned, reminders before points expire,
and birthday bonuses.

Each job finds its members with one set-based query, counting days in the programme's time
zone, then works through them in chunks of members, a transaction each. Both are idempotent:
a reminder is once per member, kind and expiry day (the notification key), a birthday bonus
once per member and year (the ledger entry's idempotency key), so a second run the same day,
or a task delivered again after a worker died, finds nothing left to do.
"""

import calendar
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import connection, transaction
from django.utils import timezone

from members.models import Member, Notification
from members.notifications import inbox_write, notify
from rewards import bulk, hooks, services, tiers
from rewards.bulk import CREDIT_STAGING, _apply_credits

NOTIFY_CHUNK = 500


def _chunks(ids: Sequence[int], size: int) -> list[Sequence[int]]:
    return [ids[start : start + size] for start in range(0, len(ids), size)]


# --- points earned -------------------------------------------------------------------------


def on_purchases(events: Sequence[hooks.PurchaseRecorded]) -> None:
    """Tell each member what a new purchase earned, in the inbox only (an e-mail per coffee would be noise)."""
    inbox_write(
        kind=Notification.Kind.POINTS_EARNED,
        messages=[
            (
                event.purchase.member,
                f"earned:{event.entry.pk}",
                {"entry": event.entry, "pending": event.entry.lot is not None and event.entry.lot.status == "pending"},
            )
            for event in events
            if event.entry is not None and event.purchase.member is not None
        ],
    )


# --- reminders before points expire -----------------------------------------------------


# A lot's last day is the local day before its expiry moment (as `selectors.upcoming_expiries`
# shows it); days_left is 0 on that day. Reminders already written are left out here, and
# `notify` refuses a twin anyway.
EXPIRING_SQL = """
WITH due AS (
    SELECT l.account_id AS member_id,
           ((l.expires_at AT TIME ZONE %(tz)s) - interval '1 day')::date AS expires_on,
           SUM(l.remaining) AS points
    FROM rewards_pointslot l
    WHERE l.status IN ('pending', 'available') AND l.remaining > 0
      AND l.expires_at > %(now)s AND l.expires_at <= %(horizon)s
    GROUP BY 1, 2
), keyed AS (
    SELECT member_id, expires_on, points,
           CASE WHEN expires_on - %(today)s < %(last_chance_days)s THEN 'points_last_chance' ELSE 'points_expiring' END AS kind
    FROM due
)
SELECT k.member_id, k.expires_on, k.points, k.kind
FROM keyed k JOIN members_member m ON m.id = k.member_id
WHERE m.status = 'active'
  AND NOT EXISTS (
      SELECT 1 FROM members_notification n
      WHERE n.member_id = k.member_id AND n.key = k.kind || ':' || to_char(k.expires_on, 'YYYY-MM-DD')
  )
ORDER BY k.member_id, k.expires_on
"""


@dataclass(frozen=True)
class ReminderResult:
    expiring: int = 0
    last_chance: int = 0


def points_expiry_remind_due(*, now: dt.datetime | None = None, chunk: int = NOTIFY_CHUNK) -> ReminderResult:
    """Tell members, once per expiry day, that points expire soon, and again at the last chance."""
    now = now or timezone.now()
    rules = services.rules_in_force(at=now)
    tz = rules.programme.tz
    today = now.astimezone(tz).date()
    remind_days, last_chance_days = rules.expiry_reminder_days, rules.expiry_last_chance_days
    horizon_days = max(remind_days, last_chance_days)
    if not horizon_days:
        return ReminderResult()
    params = {
        "tz": rules.programme.timezone,
        "now": now,
        "today": today,
        "last_chance_days": last_chance_days,
        # Lots whose last day is fewer than N days away expire by local midnight N days from today.
        "horizon": dt.datetime.combine(today + dt.timedelta(days=horizon_days), dt.time(), tzinfo=tz),
    }
    with connection.cursor() as cursor:
        cursor.execute(EXPIRING_SQL, params)
        rows = cursor.fetchall()
    counts = {Notification.Kind.POINTS_EXPIRING: 0, Notification.Kind.POINTS_LAST_CHANCE: 0}
    for part in _chunks(rows, chunk):
        with transaction.atomic():
            members = Member.objects.in_bulk({row[0] for row in part})
            for member_id, expires_on, points, kind in part:
                last_chance = kind == Notification.Kind.POINTS_LAST_CHANCE
                sent = notify(
                    member=members[member_id],
                    kind=kind,
                    key=f"{kind}:{expires_on.isoformat()}",
                    context={"points": int(points), "expires_on": expires_on},
                    sms=last_chance,
                )
                counts[kind] += sent is not None
    return ReminderResult(
        expiring=counts[Notification.Kind.POINTS_EXPIRING], last_chance=counts[Notification.Kind.POINTS_LAST_CHANCE]
    )


# --- birthday bonuses --------------------------------------------------------------------


BIRTHDAYS_SQL = """
SELECT m.id FROM members_member m
WHERE m.status = 'active' AND m.birthday IS NOT NULL AND to_char(m.birthday, 'MM-DD') = ANY(%(days)s)
  AND NOT EXISTS (SELECT 1 FROM rewards_ledgerentry e WHERE e.account_id = m.id AND e.idempotency_key = %(key)s)
ORDER BY m.id
"""

# The bonus of the member's tier today (as `tiers.tier_current`: an invitation that has ended
# does not count), else the programme's; the tier's names go in the detail, as an earn's do.
STAGE_BIRTHDAYS = (
    """
INSERT INTO bulk_credit (member_id, kind, points, earned_at, available_at, expires_at, detail, idempotency_key)
SELECT m.id, 'bonus', b.points, %(now)s, %(available_at)s, %(expires_at)s,
       jsonb_strip_nulls(jsonb_build_object('birthday', %(year)s::int, 'tier', b.tier)), %(key)s
FROM members_member m
LEFT JOIN rewards_membertier mt
       ON mt.member_id = m.id AND (mt.invited_until IS NULL OR mt.invited_until >= %(today)s)
LEFT JOIN rewards_tier t ON t.id = mt.tier_id
CROSS JOIN LATERAL (
    SELECT CASE WHEN t.id IS NULL THEN %(programme_points)s ELSE t.birthday_bonus_points END AS points,
           CASE WHEN t.id IS NOT NULL THEN """
    + tiers.TIER_NAMES_SQL
    + """ END AS tier
) b
WHERE m.id = ANY(%(ids)s) AND b.points > 0
"""
)

# Run under the accounts' locks, so a twin run that granted meanwhile is seen and not repeated.
DROP_GRANTED = """
DELETE FROM bulk_credit c USING rewards_ledgerentry e
WHERE e.account_id = c.member_id AND e.idempotency_key = c.idempotency_key
"""


@dataclass(frozen=True)
class BirthdayResult:
    members: int = 0
    points: int = 0


def birthday_days(today: dt.date) -> list[str]:
    """Return the birthdays (MM-DD) celebrated on a day: 29 February falls on 28 February in other years."""
    days = [today.strftime("%m-%d")]
    if (today.month, today.day) == (2, 28) and not calendar.isleap(today.year):
        days.append("02-29")
    return days


def birthday_bonuses_grant(*, today: dt.date | None = None, chunk: int = services.BULK_CHUNK) -> BirthdayResult:
    """Give members whose birthday it is their tier's birthday bonus, once a year, with a greeting."""
    now = timezone.now()
    rules = services.rules_in_force(at=now)
    today = today or now.astimezone(rules.programme.tz).date()
    available_at, expires_at = rules.lot_dates(now, return_window=False)
    key = f"birthday:{today.year}"
    params = {
        "now": now,
        "today": today,
        "year": today.year,
        "key": key,
        "available_at": available_at,
        "expires_at": expires_at,
        "programme_points": rules.birthday_bonus_points,
    }
    with connection.cursor() as cursor:
        cursor.execute(BIRTHDAYS_SQL, {"days": birthday_days(today), "key": key})
        due = [row[0] for row in cursor.fetchall()]
    members = points = 0
    for ids in _chunks(due, chunk):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(CREDIT_STAGING)
            cursor.execute(STAGE_BIRTHDAYS, {**params, "ids": list(ids)})
            cursor.execute(bulk.CREATE_ACCOUNTS, {"now": now})
            cursor.execute(bulk.LOCK_ACCOUNTS)
            cursor.execute(DROP_GRANTED)
            _apply_credits(cursor, now=now, by=None)
            cursor.execute("SELECT member_id, points FROM bulk_credit ORDER BY member_id")
            granted = cursor.fetchall()
            by_id = Member.objects.in_bulk([member_id for member_id, _points in granted])
            for member_id, bonus in granted:
                notify(
                    member=by_id[member_id],
                    kind=Notification.Kind.BIRTHDAY_BONUS,
                    key=f"birthday_bonus:{today.year}",
                    context={"points": bonus, "year": today.year},
                )
        members += len(granted)
        points += sum(bonus for _member_id, bonus in granted)
    return BirthdayResult(members=members, points=points)
