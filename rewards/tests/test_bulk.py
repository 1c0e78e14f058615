import datetime as dt
import json
import threading
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from members.tests.factories import MemberFactory, StoreFactory, UserFactory
from rewards import bulk, hooks, services, tiers
from rewards.models import LedgerEntry, PointsLot, Programme, ProgrammeRules, Purchase, PurchaseLine, Tier
from rewards.selectors import ledger_drift
from rewards.services import LineInput
from rewards.tests.factories import programme_create

pytestmark = pytest.mark.django_db


def sale(store, receipt, amount="10", member=None, **kwargs):
    return services.purchase_input(store=store, receipt_number=receipt, amount=amount, member=member, **kwargs)


def test_a_batch_earns_exactly_what_single_purchases_earn(store, member):
    programme_create(pending_days=14, excluded_categories=["gift-cards"])
    other_store = StoreFactory()
    long_ago = timezone.now() - dt.timedelta(days=30)
    lines = (LineInput(amount=Decimal("30"), category="coffee"), LineInput(amount=Decimal("12.50"), category="gift-cards"))

    outcome = bulk.purchases_record_bulk([sale(store, "B-1", "42.50", member, lines=lines, occurred_at=long_ago)])
    single = services.purchase_record(
        store=other_store, receipt_number="B-1", amount="42.50", member=member, lines=lines, occurred_at=long_ago
    )

    batch_entry = LedgerEntry.objects.get(purchase_id=outcome[0].purchase_id)
    assert outcome == [bulk.BulkOutcome(purchase_id=batch_entry.purchase_id, created=True, conflict=False)]
    assert batch_entry.points == single.entry.points == 30
    assert batch_entry.explanation == single.entry.explanation
    assert (batch_entry.lot.available_at, batch_entry.lot.expires_at, batch_entry.lot.status) == (
        single.entry.lot.available_at,
        single.entry.lot.expires_at,
        single.entry.lot.status,
    )
    assert PurchaseLine.objects.filter(purchase_id=batch_entry.purchase_id).count() == 2
    assert ledger_drift() == []


def test_replays_and_conflicts_within_and_across_batches(rules, store, member):
    services.purchase_record(store=store, receipt_number="OLD", amount="10", member=member)
    outcomes = bulk.purchases_record_bulk(
        [
            sale(store, "N-1", "10", member),
            sale(store, "N-1", "10", member),  # the same sale twice in one batch
            sale(store, "N-1", "99", member),  # the same receipt with another amount
            sale(store, "OLD", "10", member),  # sent before, alone
            sale(store, "OLD", "11", member),
            sale(store, "ANON", "20"),
        ]
    )
    assert [(o.created, o.conflict) for o in outcomes] == [
        (True, False),
        (False, False),
        (False, True),
        (False, False),
        (False, True),
        (True, False),
    ]
    assert outcomes[0].purchase_id == outcomes[1].purchase_id == outcomes[2].purchase_id
    again = bulk.purchases_record_bulk([sale(store, "N-1", "10", member), sale(store, "ANON", "20")])
    assert [o.created for o in again] == [False, False]
    assert Purchase.objects.count() == 3
    member.points.refresh_from_db()
    assert member.points.available == 20
    assert ledger_drift() == []


def test_points_from_a_batch_repay_what_a_member_owes(rules, store, member):
    first = services.purchase_record(store=store, receipt_number="R-1", amount="50", member=member).purchase
    services.points_spend(member=member, points=50, reason="Free lunch")
    services.purchase_return(purchase=first, return_number="X-1", amount="50")

    bulk.purchases_record_bulk([sale(store, "B-1", "80", member)])

    member.points.refresh_from_db()
    assert (member.points.available, member.points.pending, member.points.owed) == (30, 0, 0)
    assert ledger_drift() == []


def test_hooks_fire_once_per_new_purchase_unless_asked_not_to(rules, store, member):
    seen: list[hooks.PurchaseRecorded] = []
    hooks.on_purchase_recorded(seen.append)
    try:
        bulk.purchases_record_bulk([sale(store, "B-1", "10", member), sale(store, "B-1", "10", member)])
        bulk.purchases_record_bulk([sale(store, "B-2", "10", member)], fire_hooks=False)
    finally:
        hooks.unregister(seen.append)
    assert [event.purchase.receipt_number for event in seen] == ["B-1"]
    assert seen[0].entry.points == 10


def test_a_batch_leaves_points_past_their_validity_to_the_clock(rules, store, member):
    bulk.purchases_record_bulk([sale(store, "OLD", "10", member, occurred_at=timezone.now() - dt.timedelta(days=500))])
    assert PointsLot.objects.get().status == "available"
    assert not LedgerEntry.objects.filter(kind="expire").exists()


def test_old_sales_end_up_expired_after_the_clock_runs(rules, store, member):
    bulk.purchases_record_bulk([sale(store, "OLD", "10", member, occurred_at=timezone.now() - dt.timedelta(days=500))])
    services.points_expire_due()
    assert PointsLot.objects.get().status == "expired"
    assert LedgerEntry.objects.filter(kind="expire").count() == 1
    assert ledger_drift() == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_overlapping_batches_in_opposite_orders_neither_deadlock_nor_duplicate(rules, store):
    members = [MemberFactory() for _ in range(5)]
    forward = [sale(store, f"R-{i}", "10", members[i % 5]) for i in range(40)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def run(batch: list) -> None:
        try:
            barrier.wait()
            bulk.purchases_record_bulk(batch)
        except BaseException as error:  # reported by the assertion below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(batch,)) for batch in (forward, forward[::-1], forward[::2], forward[1::2])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert Purchase.objects.count() == 40
    assert LedgerEntry.objects.filter(kind="earn").count() == 40
    assert ledger_drift() == []


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_batches_whose_buyers_earn_nothing_still_lock_in_member_order(rules, store):
    """Given a buyer who earns nothing (under a point) and one who earns, in two batches in
    opposite orders, then neither batch deadlocks: every buyer is locked in id order first."""
    errors: list[BaseException] = []
    for round_ in range(8):
        low, high = sorted((MemberFactory(), MemberFactory()), key=lambda m: m.pk)
        services.purchase_record(store=store, receipt_number=f"SETUP-{round_}-L", amount="5", member=low)  # accounts exist
        services.purchase_record(store=store, receipt_number=f"SETUP-{round_}-H", amount="5", member=high)
        first = [sale(store, f"A-{round_}", "0.50", low), sale(store, f"B-{round_}", "50", high)]
        second = [sale(store, f"C-{round_}", "0.50", high), sale(store, f"D-{round_}", "50", low)]
        barrier = threading.Barrier(2)

        def run(batch: list, barrier: threading.Barrier) -> None:
            try:
                barrier.wait()
                bulk.purchases_record_bulk(batch)
            except BaseException as error:  # reported by the assertion below
                errors.append(error)
            finally:
                connection.close()

        threads = [threading.Thread(target=run, args=(batch, barrier)) for batch in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert errors == []
    assert Purchase.objects.count() == 8 * 6
    assert ledger_drift() == []


ZONES = ["Asia/Shanghai", "Asia/Seoul", "Asia/Taipei", "America/New_York", "Europe/London", "Australia/Sydney"]


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    rate=st.decimals(min_value=0, max_value=20, places=4),
    rounding=st.sampled_from(ProgrammeRules.Rounding.values),
    policy=st.sampled_from(ProgrammeRules.Expiry.values),
    months=st.integers(1, 40),
    years=st.integers(0, 3),
    pending=st.integers(0, 60),
    minimum=st.decimals(min_value=0, max_value=50, places=2),
    zone=st.sampled_from(ZONES),
    amount=st.decimals(min_value=Decimal("0.01"), max_value=Decimal("99999.99"), places=2),
    moment=st.datetimes(min_value=dt.datetime(2016, 1, 1), max_value=dt.datetime(2026, 11, 1), timezones=st.just(dt.UTC)),
    category=st.sampled_from(["", "coffee", " Gift-Cards "]),
    rules_start_days_ago=st.integers(-30, 4000),
    tiered=st.one_of(
        st.none(),
        st.tuples(st.decimals(min_value=1, max_value=20, places=2), st.booleans(), st.sampled_from(["held", "invited", "ended"])),
    ),
)
def test_the_sql_earning_rules_agree_with_the_python_rules(db, store, **drawn):
    """Given any rules, any one-line sale and any tier, the importer's SQL earns what `unsaved_purchase` earns."""
    from django.db import connection, transaction

    with transaction.atomic():
        programme = Programme.objects.create(name="P", currency="CNY", timezone=drawn["zone"])
        rules = ProgrammeRules.objects.create(
            programme=programme,
            effective_from=timezone.now() - dt.timedelta(days=drawn["rules_start_days_ago"]),
            points_per_unit=drawn["rate"],
            rounding=drawn["rounding"],
            expiry_policy=drawn["policy"],
            expiry_months=drawn["months"],
            expiry_years=drawn["years"],
            pending_days=drawn["pending"],
            minimum_purchase=drawn["minimum"],
            excluded_categories=["gift-cards"],
        )
        member = tier = None
        if drawn["tiered"] is not None:
            member, tier = _member_in_a_tier(programme, *drawn["tiered"])
        lines = (LineInput(amount=drawn["amount"], category=drawn["category"]),) if drawn["category"] else ()
        sale = services.purchase_input(
            store=store, receipt_number="R-1", amount=drawn["amount"], occurred_at=drawn["moment"], lines=lines, member=member
        )
        held = tiers.tier_current(member) if member else None
        assert held == (tier if drawn["tiered"] and drawn["tiered"][2] != "ended" else None)
        purchase = services.unsaved_purchase(sale, rules=rules, now=timezone.now(), by=None, via="", tier=held)
        available_at, expires_at = rules.lot_dates(purchase.occurred_at, return_window=True)
        with connection.cursor() as cursor:
            cursor.execute(bulk.SOURCE_STAGING)
            cursor.execute(
                "INSERT INTO sale_source VALUES (0, true, %s, 'R-1', %s, %s, %s, %s, %s)",
                [
                    store.pk,
                    member.pk if member else None,
                    member.member_number if member else None,
                    drawn["amount"],
                    drawn["category"],
                    drawn["moment"],
                ],
            )
            bulk.stage_sales_from_source(cursor)
            cursor.execute("SELECT earn_base, points, available_at, expires_at, detail FROM bulk_sale")
            earn_base, points, sql_available_at, sql_expires_at, detail = cursor.fetchone()
        assert (earn_base, points) == (purchase.earn_base, purchase.points_earned)
        assert (sql_available_at, sql_expires_at) == (available_at, expires_at)
        assert (json.loads(detail) if isinstance(detail, str) else detail) == services.earn_detail(purchase, held)
        transaction.set_rollback(True)


def _member_in_a_tier(programme: Programme, multiplier: Decimal, named: bool, how: str) -> tuple[object, Tier]:
    """Put a new member in a tier earning `multiplier` times: held, by an invitation, or by one that has ended."""
    tier = Tier.objects.create(
        programme=programme,
        code="t",
        name="Gold",
        name_zh_hans="金卡" if named else None,
        rank=1,
        entry_threshold=Decimal(1000),
        retain_threshold=Decimal(1000),
        earn_multiplier=multiplier,
        invitation_only=how != "held",
    )
    member, staff = MemberFactory(), UserFactory(is_superuser=True)
    if how == "held":
        tiers.tier_set(member=member, tier=tier, by=staff, note="test")
    elif how == "invited":
        tiers.tier_invite(member=member, tier=tier, until=timezone.localdate(timezone.now(), programme.tz), by=staff)
    else:
        with time_machine.travel(timezone.now() - dt.timedelta(days=3)):
            tiers.tier_invite(member=member, tier=tier, until=timezone.localdate(timezone.now(), programme.tz), by=staff)
    return member, tier
