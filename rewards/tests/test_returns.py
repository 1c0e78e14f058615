from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from rewards import hooks, services
from rewards.models import LedgerEntry, Return, ReturnLine
from rewards.selectors import ledger_drift
from rewards.services import LineInput

pytestmark = pytest.mark.django_db


def balance(member) -> tuple[int, int, int]:
    member.points.refresh_from_db()
    return member.points.available, member.points.pending, member.points.owed


@pytest.fixture
def sale(rules, store, member):
    return services.purchase_record(store=store, receipt_number="R-1", amount="100.00", member=member).purchase


def test_returns_take_back_points_in_proportion_and_never_more_than_earned(sale, member):
    first = services.purchase_return(purchase=sale, return_number="X-1", amount="30")
    second = services.purchase_return(purchase=sale, return_number="X-2", amount="70")

    assert (first.entry.points, second.entry.points) == (-30, -70)
    assert balance(member) == (0, 0, 0)
    with pytest.raises(ValidationError) as error:
        services.purchase_return(purchase=sale, return_number="X-3", amount="0.01")
    assert "amount" in error.value.message_dict
    assert Return.objects.count() == 2
    assert "Return X-1 of receipt R-1" in first.entry.explanation
    assert ledger_drift() == []


def test_rounding_across_partial_returns_takes_back_exactly_what_was_earned(rules, store, member):
    purchase = services.purchase_record(store=store, receipt_number="R-2", amount="33.33", member=member).purchase
    assert purchase.points_earned == 33
    clawed = [
        services.purchase_return(purchase=purchase, return_number=f"X-{i}", amount="11.11").return_record.points_clawed_back
        for i in range(3)
    ]
    assert sum(clawed) == 33
    assert balance(member) == (0, 0, 0)


def test_a_return_by_lines_refunds_their_share(rules, store, member):
    purchase = services.purchase_record(
        store=store,
        receipt_number="R-3",
        amount="50",
        member=member,
        lines=[LineInput(amount=Decimal("40"), quantity=2, sku="latte"), LineInput(amount=Decimal("10"), sku="cookie")],
    ).purchase
    result = services.purchase_return(purchase=purchase, return_number="X-1", lines=[(1, 1)])
    assert result.return_record.amount == Decimal("20.00")
    assert result.entry.points == -20
    with pytest.raises(ValidationError) as error:
        services.purchase_return(purchase=purchase, return_number="X-2", lines=[(1, 2)])
    assert "lines[0].quantity" in error.value.message_dict
    with pytest.raises(ValidationError) as error:
        services.purchase_return(purchase=purchase, return_number="X-3", lines=[(9, 1)])
    assert "lines[0].line_number" in error.value.message_dict
    assert ReturnLine.objects.count() == 1


def test_a_retried_return_is_a_no_op_and_a_different_body_is_refused(sale, member):
    first = services.purchase_return(purchase=sale, return_number="X-1", amount="30")
    again = services.purchase_return(purchase=sale, return_number="X-1", amount="30")
    assert not again.created
    assert again.return_record == first.return_record
    with pytest.raises(services.ReplayConflict):
        services.purchase_return(purchase=sale, return_number="X-1", amount="31")
    assert Return.objects.count() == 1
    assert LedgerEntry.objects.filter(kind="clawback").count() == 1
    assert balance(member) == (70, 0, 0)


@pytest.mark.parametrize(("kwargs", "field"), [({"amount": "100.01"}, "amount"), ({"amount": "-1"}, "amount"), ({}, "amount")])
def test_bad_returns_name_the_field_and_write_nothing(sale, member, kwargs, field):
    with pytest.raises(ValidationError) as error:
        services.purchase_return(purchase=sale, return_number="X-1", **kwargs)
    assert field in error.value.message_dict
    assert not Return.objects.exists()
    assert balance(member) == (100, 0, 0)


def test_spent_points_are_taken_from_other_points_first_then_owed(rules, store, member):
    sale = services.purchase_record(store=store, receipt_number="R-1", amount="100", member=member).purchase
    services.points_spend(member=member, points=90, reason="Free cake")
    services.purchase_record(store=store, receipt_number="R-2", amount="30", member=member)
    assert balance(member) == (40, 0, 0)

    result = services.purchase_return(purchase=sale, return_number="X-1", amount="100")

    # 10 left on the sale's own points, 30 from the other purchase, 60 owed.
    assert result.entry.points == -100
    assert result.entry.owed_points == 60
    assert balance(member) == (0, 0, 60)
    assert "owed" in result.entry.explanation
    with pytest.raises(services.PointsOwed):
        services.points_spend(member=member, points=1, reason="coffee")

    services.purchase_record(store=store, receipt_number="R-3", amount="80", member=member)
    assert balance(member) == (20, 0, 0)
    assert ledger_drift() == []


def test_pending_points_repay_what_is_owed_when_they_are_released(store, member):
    import datetime as dt

    from django.utils import timezone

    from rewards.tests.factories import programme_create

    programme_create(pending_days=7)
    now = timezone.now()
    old = services.purchase_record(
        store=store, receipt_number="R-1", amount="50", member=member, occurred_at=now - dt.timedelta(days=8)
    ).purchase
    services.points_spend(member=member, points=50, reason="Free lunch")
    services.purchase_record(store=store, receipt_number="R-2", amount="80", member=member)
    services.purchase_return(purchase=old, return_number="X-1", amount="50")
    assert balance(member) == (0, 80, 50)

    services.points_release_due(now=now + dt.timedelta(days=8))

    assert balance(member) == (30, 0, 0)
    assert ledger_drift() == []


def test_points_that_expired_are_not_owed_after_a_return(rules, store, member):
    import datetime as dt

    from django.utils import timezone

    sale = services.purchase_record(
        store=store, receipt_number="R-1", amount="100", member=member, occurred_at=timezone.now() - dt.timedelta(days=400)
    ).purchase
    services.points_expire_due()
    result = services.purchase_return(purchase=sale, return_number="X-1", amount="100")
    assert result.entry is None
    assert balance(member) == (0, 0, 0)
    assert ledger_drift() == []


def test_the_return_hook_runs_once(sale):
    seen: list[hooks.ReturnRecorded] = []
    hooks.on_return_recorded(seen.append)
    try:
        services.purchase_return(purchase=sale, return_number="X-1", amount="10")
        services.purchase_return(purchase=sale, return_number="X-1", amount="10")
    finally:
        hooks.unregister(seen.append)
    assert [event.entry.points for event in seen] == [-10]


def test_returning_a_free_line_is_refused_with_a_clear_error(rules, store, member):
    purchase = services.purchase_record(
        store=store,
        receipt_number="R-9",
        amount="50.00",
        member=member,
        lines=[LineInput(amount=Decimal("50.00"), name="mug"), LineInput(amount=Decimal("0.00"), name="free gift")],
    ).purchase
    with pytest.raises(ValidationError) as error:
        services.purchase_return(purchase=purchase, return_number="X-1", lines=[(2, 1)])
    assert "lines" in error.value.message_dict
    assert not Return.objects.exists()


def test_a_replayed_return_matches_however_the_amount_is_written(sale):
    first = services.purchase_return(purchase=sale, return_number="X-1", amount="30")
    again = services.purchase_return(purchase=sale, return_number="X-1", amount=Decimal("30.00"))
    assert not again.created
    assert again.return_record == first.return_record


def test_returning_a_line_unit_by_unit_refunds_exactly_what_it_cost(rules, store, member):
    purchase = services.purchase_record(
        store=store, receipt_number="R-8", amount="1.00", member=member, lines=[LineInput(amount=Decimal("1.00"), quantity=3)]
    ).purchase
    refunds = [
        services.purchase_return(purchase=purchase, return_number=f"X-{i}", lines=[(1, 1)]).return_record.amount for i in range(3)
    ]
    assert refunds == [Decimal("0.33"), Decimal("0.34"), Decimal("0.33")]
    assert sum(refunds) == Decimal("1.00")
