import datetime as dt

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from rewards import services
from rewards.models import LedgerEntry, LotAllocation
from rewards.selectors import ledger_drift
from rewards.tests.factories import settings_change

pytestmark = pytest.mark.django_db


def earn(store, member, receipt: str, amount: str, days_ago: int = 0):
    return services.purchase_record(
        store=store,
        receipt_number=receipt,
        amount=amount,
        member=member,
        occurred_at=timezone.now() - dt.timedelta(days=days_ago),
    )


def test_spending_takes_the_soonest_expiring_points_first(rules, store, member):
    newer = earn(store, member, "new", "50", days_ago=1).entry.lot
    older = earn(store, member, "old", "30", days_ago=100).entry.lot

    entry = services.points_spend(member=member, points=40, reason="Free latte")

    older.refresh_from_db()
    newer.refresh_from_db()
    assert (older.remaining, newer.remaining) == (0, 40)
    assert sorted(entry.allocations.values_list("lot_id", "points")) == sorted([(older.pk, 30), (newer.pk, 10)])
    assert entry.explanation == "Free latte"
    member.points.refresh_from_db()
    assert (member.points.available, member.points.lifetime_spent) == (40, 40)


def test_spending_more_than_available_is_refused_and_writes_nothing(rules, store, member):
    earn(store, member, "R-1", "10")
    with pytest.raises(services.InsufficientPoints) as error:
        services.points_spend(member=member, points=11, reason="Free latte")
    assert error.value.facts == {"available": 10, "needed": 1}
    assert not LedgerEntry.objects.filter(kind="spend").exists()
    assert not LotAllocation.objects.exists()


def test_pending_points_cannot_be_spent(store, member):
    from rewards.tests.factories import programme_create

    programme_create(pending_days=14)
    earn(store, member, "R-1", "10")
    with pytest.raises(services.InsufficientPoints):
        services.points_spend(member=member, points=5, reason="Free latte")


@pytest.mark.parametrize("points", [0, -5, 2.5])
def test_spending_needs_a_positive_whole_number(rules, member, points):
    with pytest.raises(ValidationError) as error:
        services.points_spend(member=member, points=points, reason="x")
    assert "points" in error.value.message_dict


def test_the_minimum_per_redemption_applies(rules, store, member):
    settings_change(rules, min_redemption_points=20)
    earn(store, member, "R-1", "50")
    with pytest.raises(services.RewardsError):
        services.points_spend(member=member, points=10, reason="x")
    services.points_spend(member=member, points=20, reason="x")


def test_a_spend_retried_with_its_idempotency_key_happens_once(rules, store, member):
    earn(store, member, "R-1", "50")
    first = services.points_spend(member=member, points=20, reason="Free latte", idempotency_key="till-7:abc")
    again = services.points_spend(member=member, points=20, reason="Free latte", idempotency_key="till-7:abc")
    assert again == first
    with pytest.raises(services.ReplayConflict):
        services.points_spend(member=member, points=21, reason="Free latte", idempotency_key="till-7:abc")
    member.points.refresh_from_db()
    assert member.points.available == 30


def test_a_manager_adjusts_points_with_a_reason_the_member_reads(rules, store, member, manager):
    credit = services.points_adjust(member=member, points=15, reason="Coffee was cold", by=manager)
    debit = services.points_adjust(member=member, points=-5, reason="Entered twice", by=manager)

    assert credit.explanation == "Adjusted by our staff: Coffee was cold"
    assert (credit.actor, debit.actor) == (manager, manager)
    member.points.refresh_from_db()
    assert member.points.available == 10
    with pytest.raises(services.InsufficientPoints):
        services.points_adjust(member=member, points=-11, reason="too much", by=manager)
    assert ledger_drift() == []


def test_a_cashier_cannot_adjust_points(rules, member, cashier):
    with pytest.raises(PermissionDenied):
        services.points_adjust(member=member, points=15, reason="friend", by=cashier)
    assert not LedgerEntry.objects.exists()


@pytest.mark.parametrize(("points", "reason", "field"), [(0, "x", "points"), (5, "  ", "reason")])
def test_an_adjustment_needs_points_and_a_reason(rules, member, manager, points, reason, field):
    with pytest.raises(ValidationError) as error:
        services.points_adjust(member=member, points=points, reason=reason, by=manager)
    assert field in error.value.message_dict
    assert not LedgerEntry.objects.exists()


def test_the_same_idempotency_key_for_two_members_is_two_requests(rules, store, member):
    from members.tests.factories import MemberFactory

    other = MemberFactory()
    earn(store, member, "R-1", "50")
    earn(store, other, "R-2", "50")
    first = services.points_spend(member=member, points=10, reason="x", idempotency_key="till-1:7")
    second = services.points_spend(member=other, points=10, reason="x", idempotency_key="till-1:7")
    assert first != second
