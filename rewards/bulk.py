"""The set-based twin of `services.purchase_record`, for till batches and imports.

Same validation (`services.purchase_input`), same earning rules (`services.unsaved_purchase`,
`ProgrammeRules.lot_dates`), same rows as the single path; only the writes differ: the sales
are copied into a staging table and every table is written with one INSERT … SELECT.
"""

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from members.models import User
from rewards import hooks, services, tiers
from rewards.models import LedgerEntry, Purchase
from rewards.services import PurchaseInput

STAGING = """
DROP TABLE IF EXISTS pg_temp.bulk_sale, pg_temp.bulk_line;
CREATE TEMP TABLE bulk_sale (
    ord integer PRIMARY KEY, first_of_key boolean NOT NULL,
    store_id bigint NOT NULL, receipt_number text NOT NULL, member_id bigint, channel text NOT NULL,
    gross numeric NOT NULL, discount numeric NOT NULL, tax numeric NOT NULL, net numeric NOT NULL,
    occurred_at timestamptz NOT NULL, rules_id bigint NOT NULL, earn_base numeric NOT NULL, points bigint NOT NULL,
    fingerprint text NOT NULL, available_at timestamptz NOT NULL, expires_at timestamptz, detail jsonb NOT NULL,
    payment_fingerprint text NOT NULL,
    purchase_id bigint, created boolean NOT NULL DEFAULT false, conflict boolean NOT NULL DEFAULT false
) ON COMMIT DROP;
CREATE TEMP TABLE bulk_line (
    ord integer NOT NULL, line_number integer NOT NULL, sku text NOT NULL, name text NOT NULL,
    category text NOT NULL, quantity integer NOT NULL, amount numeric NOT NULL
) ON COMMIT DROP;
"""

CREDIT_STAGING = """
DROP TABLE IF EXISTS pg_temp.bulk_credit;
CREATE TEMP TABLE bulk_credit (
    member_id bigint NOT NULL, kind text NOT NULL, points bigint NOT NULL CHECK (points > 0),
    earned_at timestamptz NOT NULL, available_at timestamptz NOT NULL, expires_at timestamptz,
    purchase_id bigint, detail jsonb NOT NULL, idempotency_key text, lot_id bigint
) ON COMMIT DROP;
"""
SALE_COLUMNS = (
    "ord, first_of_key, store_id, receipt_number, member_id, channel, gross, discount, tax, net, occurred_at, "
    "rules_id, earn_base, points, fingerprint, available_at, expires_at, detail, payment_fingerprint"
)

# Each sale's purchase id is drawn before the insert (an import draws them as it stages its sales)
# and the sale counted as created; only the few that met a receipt already recorded are rewritten,
# not every row of a million-row staging table.
INSERT_PURCHASES = """
UPDATE bulk_sale SET purchase_id = nextval((SELECT pg_get_serial_sequence('rewards_purchase', 'id'))::regclass), created = true
WHERE first_of_key AND purchase_id IS NULL;
WITH inserted AS (
    INSERT INTO rewards_purchase
        (id, store_id, receipt_number, member_id, channel, gross, discount, tax, net, occurred_at, recorded_at,
         recorded_by_id, recorded_via, rules_id, earn_base, points_earned, claimed_at, fingerprint, payment_fingerprint)
    SELECT purchase_id, store_id, receipt_number, member_id, channel, gross, discount, tax, net, occurred_at, %(now)s,
           %(by)s, %(via)s, rules_id, earn_base, points, NULL, fingerprint, payment_fingerprint
    FROM bulk_sale WHERE first_of_key
    -- One order for every writer, so overlapping batches never wait on each other in a cycle.
    ORDER BY store_id, receipt_number
    ON CONFLICT (store_id, receipt_number) DO NOTHING
    RETURNING id
)
UPDATE bulk_sale s SET purchase_id = NULL, created = false
WHERE s.first_of_key AND NOT EXISTS (SELECT FROM inserted i WHERE i.id = s.purchase_id)
"""

MATCH_REPLAYS = """
UPDATE bulk_sale s SET purchase_id = p.id, conflict = p.fingerprint <> s.fingerprint
FROM rewards_purchase p
WHERE NOT s.created AND p.store_id = s.store_id AND p.receipt_number = s.receipt_number
"""

INSERT_LINES = """
INSERT INTO rewards_purchaseline (purchase_id, line_number, sku, name, category, quantity, amount)
SELECT s.purchase_id, l.line_number, l.sku, l.name, l.category, l.quantity, l.amount
FROM bulk_line l JOIN bulk_sale s ON s.ord = l.ord
WHERE s.created
"""

CREDIT_PURCHASES = """
INSERT INTO bulk_credit (member_id, kind, points, earned_at, available_at, expires_at, purchase_id, detail, lot_id)
SELECT member_id, 'earn', points, occurred_at, available_at, expires_at, purchase_id, detail,
       nextval((SELECT pg_get_serial_sequence('rewards_pointslot', 'id'))::regclass)
FROM bulk_sale WHERE created AND member_id IS NOT NULL AND points > 0
"""

CREATE_ACCOUNTS = """
INSERT INTO rewards_pointsaccount (member_id, available, pending, owed, lifetime_earned, lifetime_spent, updated_at)
SELECT DISTINCT member_id, 0, 0, 0, 0, 0, %(now)s::timestamptz FROM bulk_credit ORDER BY member_id
ON CONFLICT DO NOTHING
"""

# Every buyer of the batch, in id order, before anything else locks one: those who earned nothing
# are still locked by the tier upgrade and the purchase hooks, and must not be taken out of order.
LOCK_BUYERS = """
SELECT member_id FROM rewards_pointsaccount
WHERE member_id IN (SELECT member_id FROM bulk_sale WHERE created AND member_id IS NOT NULL)
ORDER BY member_id FOR UPDATE
"""

LOCK_ACCOUNTS = """
SELECT member_id, owed FROM rewards_pointsaccount
WHERE member_id IN (SELECT member_id FROM bulk_credit)
ORDER BY member_id FOR UPDATE
"""

# Lot ids are drawn first (purchases' credits draw them as they are staged) so each entry can name
# its lot without relying on RETURNING order.
APPLY_CREDITS = """
UPDATE bulk_credit SET lot_id = nextval((SELECT pg_get_serial_sequence('rewards_pointslot', 'id'))::regclass)
WHERE lot_id IS NULL;
WITH lots AS (
    INSERT INTO rewards_pointslot (id, account_id, points, remaining, status, available_at, expires_at, purchase_id, earned_at)
    SELECT lot_id, member_id, points, CASE WHEN expires_at <= %(expired_before)s THEN 0 ELSE points END,
           CASE WHEN expires_at <= %(expired_before)s THEN 'expired'
                -- Points of a member who owes go through the release job, which repays the debt first.
                WHEN available_at > %(now)s OR member_id = ANY(%(owing)s) THEN 'pending'
                ELSE 'available' END,
           available_at, expires_at, purchase_id, earned_at
    FROM bulk_credit
    RETURNING account_id, points, status
), entries AS (
    INSERT INTO rewards_ledgerentry
        (account_id, kind, points, occurred_at, created_at, purchase_id, lot_id, actor_id,
         source_ref, reason, detail, owed_points, idempotency_key)
    SELECT member_id, kind, points, earned_at, %(now)s, purchase_id, lot_id, %(by)s, '', '', detail, 0, idempotency_key
    FROM bulk_credit
), sums AS (
    SELECT account_id,
           COALESCE(SUM(points) FILTER (WHERE status = 'pending'), 0) AS pending,
           COALESCE(SUM(points) FILTER (WHERE status = 'available'), 0) AS available,
           SUM(points) AS earned
    FROM lots GROUP BY account_id
)
UPDATE rewards_pointsaccount a
SET pending = a.pending + s.pending, available = a.available + s.available,
    lifetime_earned = a.lifetime_earned + s.earned, updated_at = %(now)s
FROM sums s WHERE a.member_id = s.account_id
"""


# What `services.EXPIRE_SQL` writes for a lot the clock expires: an explained entry dated at the
# expiry and an allocation of the whole lot. test_imports proves the two agree.
EXPIRE_CREDITS = """
WITH entries AS (
    INSERT INTO rewards_ledgerentry
        (account_id, kind, points, occurred_at, created_at, lot_id, source_ref, reason, detail, owed_points)
    SELECT member_id, 'expire', -points, expires_at, %(now)s, lot_id, '', '',
           jsonb_build_object('earned_on', to_char(earned_at AT TIME ZONE %(tz)s, 'YYYY-MM-DD')), 0
    FROM bulk_credit WHERE expires_at <= %(now)s
    ORDER BY member_id, lot_id
    RETURNING id, lot_id, -points AS points
)
INSERT INTO rewards_lotallocation (lot_id, entry_id, kind, points, created_at)
SELECT lot_id, id, 'expire', points, %(now)s FROM entries
"""


def _apply_credits(cursor: CursorWrapper, *, now: dt.datetime, by: User | None, expire_due: bool = False) -> None:
    """Turn the rows of `bulk_credit` into lots, explained entries and balances, as `_credit` does.

    With `expire_due`, credits already past their expiry are written as the clock would leave them
    (expired, with their expiry entry) instead of being written spendable and expired a moment later.
    """
    cursor.execute(CREATE_ACCOUNTS, {"now": now})
    cursor.execute(LOCK_ACCOUNTS)
    owing = [member_id for member_id, owed in cursor.fetchall() if owed]
    params = {"now": now, "by": by.pk if by else None, "owing": owing, "expired_before": now if expire_due else None}
    cursor.execute(APPLY_CREDITS, params)  # expires_at <= NULL: without `expire_due` nothing is written expired
    if expire_due:
        cursor.execute(EXPIRE_CREDITS, {"now": now, "tz": services.programme_get().timezone})
    if owing:
        cursor.execute(services.RELEASE_SQL, {"now": now, "ids": owing})


SOURCE_STAGING = """
DROP TABLE IF EXISTS pg_temp.sale_source;
CREATE TEMP TABLE sale_source (
    ord integer PRIMARY KEY, first_of_key boolean NOT NULL, store_id bigint NOT NULL, receipt_number text NOT NULL,
    member_id bigint, member_number text, gross numeric NOT NULL, category text NOT NULL, occurred_at timestamptz NOT NULL
) ON COMMIT DROP;
"""

# The set-based twin of `services.unsaved_purchase` and `ProgrammeRules.lot_dates` for sales of one
# line (an import row: an amount and maybe a category), at the member's tier of today (as
# `tiers.tier_current`: an invitation that has ended does not count). test_bulk proves it agrees with Python.
STAGE_SALES = (
    """
INSERT INTO bulk_sale
SELECT s.ord, s.first_of_key, s.store_id, s.receipt_number, s.member_id, 'import', s.gross, 0, 0, s.gross,
       s.occurred_at, r.id, e.base, e.points, md5(concat_ws('|', 'import', s.member_number, s.gross::text, s.occurred_at::text)),
       CASE WHEN x.expires_at IS NULL THEN s.occurred_at + r.pending_days * interval '1 day'
            ELSE LEAST(s.occurred_at + r.pending_days * interval '1 day', x.expires_at) END,
       x.expires_at,
       jsonb_build_object('receipt', s.receipt_number, 'store', st.name, 'currency', p.currency,
                          'base', to_char(e.base, 'FM999999999990.00'),
                          'excluded', to_char(s.gross - e.base, 'FM999999999990.00'),
                          'rate', r.points_per_unit::text)
       || CASE WHEN t.earn_multiplier > 1
               THEN jsonb_build_object('multiplier', t.earn_multiplier::text, 'tier', """
    + tiers.TIER_NAMES_SQL
    + """)
               ELSE '{}'::jsonb END,
       '', CASE WHEN s.first_of_key THEN nextval((SELECT pg_get_serial_sequence('rewards_purchase', 'id'))::regclass) END,
       s.first_of_key, false
FROM sale_source s
JOIN members_store st ON st.id = s.store_id
-- The rules in force when it happened; before the first version, the first.
CROSS JOIN LATERAL (
    SELECT * FROM rewards_programmerules v
    ORDER BY v.effective_from <= s.occurred_at DESC,
             CASE WHEN v.effective_from <= s.occurred_at THEN v.effective_from END DESC NULLS LAST, v.effective_from
    LIMIT 1
) r
JOIN rewards_programme p ON p.id = r.programme_id
LEFT JOIN rewards_membertier mt ON mt.member_id = s.member_id
LEFT JOIN rewards_tier t
       ON t.id = mt.tier_id AND (mt.invited_until IS NULL OR mt.invited_until >= (now() AT TIME ZONE p.timezone)::date)
CROSS JOIN LATERAL (
    SELECT CASE WHEN s.category <> '' AND EXISTS (
                    SELECT 1 FROM unnest(r.excluded_categories) c WHERE lower(btrim(c)) = lower(btrim(s.category)))
                THEN 0::numeric ELSE s.gross END AS base
) b
CROSS JOIN LATERAL (
    SELECT b.base,
           CASE WHEN b.base < r.minimum_purchase THEN 0
                WHEN r.rounding = 'down' THEN floor(b.base * r.points_per_unit * COALESCE(t.earn_multiplier, 1))
                WHEN r.rounding = 'nearest' THEN round(b.base * r.points_per_unit * COALESCE(t.earn_multiplier, 1))
                ELSE ceil(b.base * r.points_per_unit * COALESCE(t.earn_multiplier, 1)) END::bigint AS points
) e
CROSS JOIN LATERAL (
    SELECT CASE r.expiry_policy
        WHEN 'never' THEN NULL
        WHEN 'year_end' THEN (make_date(extract(year FROM s.occurred_at AT TIME ZONE p.timezone)::int + r.expiry_years, 12, 31)
                              + 1)::timestamp AT TIME ZONE p.timezone
        ELSE (((s.occurred_at AT TIME ZONE p.timezone)::date + make_interval(months => r.expiry_months))::date + 1)::timestamp
             AT TIME ZONE p.timezone
    END AS expires_at
) x
"""
)


def stage_sales_from_source(cursor: CursorWrapper) -> None:
    """Fill `bulk_sale` from `sale_source`, working out each sale's points in SQL."""
    cursor.execute(STAGING)
    cursor.execute(STAGE_SALES)


@dataclass(frozen=True)
class BulkOutcome:
    """What became of one sale of a batch, in the order given."""

    purchase_id: int
    created: bool
    conflict: bool


def _sale_rows(sales: Sequence[PurchaseInput], now: dt.datetime, by: User | None, via: str) -> list[tuple[object, ...]]:
    # Every sale earns at the tier its member held before the batch; upgrades follow it.
    today = timezone.localdate(now, services.programme_get().tz)
    held = tiers.tiers_current([sale.member.pk for sale in sales if sale.member], today=today)
    seen: set[tuple[int, str]] = set()
    rows = []
    for ord_, sale in enumerate(sales):
        occurred_at = sale.occurred_at or now
        rules = services.rules_in_force(at=occurred_at)
        tier = held.get(sale.member.pk) if sale.member else None
        purchase = services.unsaved_purchase(sale, rules=rules, now=now, by=by, via=via, tier=tier)
        available_at, expires_at = rules.lot_dates(occurred_at, return_window=True)
        key = (sale.store.pk, sale.receipt_number)
        rows.append(
            (
                ord_,
                key not in seen,
                sale.store.pk,
                sale.receipt_number,
                sale.member.pk if sale.member else None,
                sale.channel,
                sale.gross,
                sale.discount,
                sale.tax,
                sale.net,
                occurred_at,
                rules.pk,
                purchase.earn_base,
                purchase.points_earned,
                purchase.fingerprint,
                available_at,
                expires_at,
                json.dumps(services.earn_detail(purchase, tier)),
                purchase.payment_fingerprint,
            )
        )
        seen.add(key)
    return rows


@transaction.atomic
def purchases_record_bulk(
    sales: Sequence[PurchaseInput], *, by: User | None = None, via: str = "", fire_hooks: bool = True
) -> list[BulkOutcome]:
    """Record many validated sales at once, each idempotent on its store and receipt number.

    A sale whose receipt was recorded before with other details is left alone and reported
    as a conflict. Imports of history pass `fire_hooks=False`: old sales trigger no referral
    or campaign rewards.
    """
    if not sales:
        return []
    now = timezone.now()
    rows = _sale_rows(sales, now, by, via)
    with connection.cursor() as cursor:
        cursor.execute(STAGING)
        with cursor.copy(f"COPY bulk_sale ({SALE_COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        with cursor.copy("COPY bulk_line (ord, line_number, sku, name, category, quantity, amount) FROM STDIN") as copy:
            for ord_, sale in enumerate(sales):
                for number, line in enumerate(sale.lines, start=1):
                    copy.write_row((ord_, number, line.sku, line.name, line.category.strip(), line.quantity, line.amount))
        outcomes = write_staged_sales(cursor, now=now, by=by, via=via)
    if fire_hooks:
        _fire_hooks([o.purchase_id for o in outcomes if o.created])
    return outcomes


def write_staged_sales(
    cursor: CursorWrapper, *, now: dt.datetime, by: User | None, via: str, collect: bool = True, expire_due: bool = False
) -> list[BulkOutcome]:
    """Record the sales in `bulk_sale` (and their `bulk_line`s); return an outcome per sale, in order.

    An import of a million rows passes `collect=False` and counts in SQL instead, and `expire_due`
    to write the points of sales older than their validity already expired (see `_apply_credits`).
    """
    cursor.execute(INSERT_PURCHASES, {"now": now, "by": by.pk if by else None, "via": via})
    cursor.execute(MATCH_REPLAYS)
    cursor.execute(INSERT_LINES)
    cursor.execute(LOCK_BUYERS)
    cursor.execute(CREDIT_STAGING)
    cursor.execute(CREDIT_PURCHASES)
    _apply_credits(cursor, now=now, by=by, expire_due=expire_due)
    cursor.execute("SELECT DISTINCT member_id FROM bulk_sale WHERE created AND member_id IS NOT NULL")
    # Members move up as after single purchases. An import of history (`collect=False`) moves them
    # up too, so their tiers agree with the purchases now on record, but tells nobody: old sales are no news.
    tiers.tiers_upgrade_reached(
        member_ids=[row[0] for row in cursor.fetchall()], now=now, tz=services.programme_get().tz, lock=False, tell=collect
    )
    if not collect:
        return []
    cursor.execute("SELECT purchase_id, created, conflict FROM bulk_sale ORDER BY ord")
    return [BulkOutcome(purchase_id=p, created=c, conflict=x) for p, c, x in cursor.fetchall()]


def _fire_hooks(purchase_ids: list[int]) -> None:
    purchases = Purchase.objects.filter(pk__in=purchase_ids).select_related("member", "store", "rules__programme")
    purchases = purchases.prefetch_related("lines")  # stamp cards count items
    entries = {
        e.purchase_id: e
        for e in LedgerEntry.objects.filter(purchase_id__in=purchase_ids, kind=LedgerEntry.Kind.EARN).select_related("lot")
    }
    # In member order, as the accounts were locked, so two batches sharing members never deadlock in a handler.
    hooks.purchases_recorded(
        [hooks.PurchaseRecorded(purchase=p, entry=entries.get(p.pk)) for p in purchases.order_by("member_id", "pk")]
    )


@dataclass(frozen=True)
class OpeningBalance:
    member_id: int
    points: int
    earned_at: dt.datetime


@transaction.atomic
def opening_balances_grant(balances: Sequence[OpeningBalance]) -> int:
    """Bring members' balances over from a previous system, once per member; return the points granted."""
    if not balances:
        return 0
    now = timezone.now()
    # Every row is worked out before COPY begins: finding the rules may read the database (the
    # programme's snapshot is renewed every few seconds), and the connection can do nothing else
    # while it copies; a read then would wait on the COPY for ever.
    rows = []
    for balance in balances:
        rules = services.rules_in_force(at=balance.earned_at)
        available_at, expires_at = rules.lot_dates(balance.earned_at, return_window=False)
        earned_on = balance.earned_at.astimezone(rules.programme.tz).date().isoformat()
        detail = json.dumps({"earned_on": earned_on})
        rows.append(
            (
                balance.member_id,
                "opening",
                balance.points,
                balance.earned_at,
                available_at,
                expires_at,
                detail,
                f"opening:{balance.member_id}",
            )
        )
    with connection.cursor() as cursor:
        cursor.execute(CREDIT_STAGING)
        with cursor.copy(
            "COPY bulk_credit (member_id, kind, points, earned_at, available_at, expires_at, detail, idempotency_key) FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row(row)
        cursor.execute(
            "DELETE FROM bulk_credit c USING rewards_ledgerentry e "
            "WHERE e.account_id = c.member_id AND e.idempotency_key = c.idempotency_key"
        )
        cursor.execute("SELECT COALESCE(SUM(points), 0) FROM bulk_credit")
        (granted,) = cursor.fetchone()
        _apply_credits(cursor, now=now, by=None)
    return granted
