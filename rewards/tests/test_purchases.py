import datetime as dt
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from members.models import Member
from members.tests.factories import MemberFactory, StoreFactory
from rewards import hooks, services
from rewards.models import LedgerEntry, ProgrammeRules, Purchase, PurchaseLine
from rewards.selectors import ledger_drift
from rewards.services import LineInput

pytestmark = pytest.mark.django_db


def counts() -> tuple[int, int, int]:
    return Purchase.objects.count(), PurchaseLine.objects.count(), LedgerEntry.objects.count()


def test_a_purchase_earns_points_with_the_arithmetic_explained(rules, store, member):
    result = services.purchase_record(store=store, receipt_number="R-1", amount="42.00", member=member)

    assert result.created
    assert result.purchase.points_earned == 42
    assert result.entry.points == 42
    assert result.entry.explanation == "Receipt R-1: CN¥42.00 × 1 pt per CN¥1 = 42 pts"
    member.points.refresh_from_db()
    assert (member.points.available, member.points.pending, member.points.lifetime_earned) == (42, 0, 42)


def test_points_wait_for_the_return_window_before_they_can_be_spent(store, member):
    from rewards.tests.factories import programme_create

    programme_create(pending_days=14)
    result = services.purchase_record(store=store, receipt_number="R-1", amount="30", member=member)

    member.points.refresh_from_db()
    assert (member.points.available, member.points.pending) == (0, 30)
    assert result.entry.lot.available_at == result.purchase.occurred_at + dt.timedelta(days=14)

    assert services.points_release_due(now=timezone.now() + dt.timedelta(days=13)).lots == 0
    assert services.points_release_due(now=timezone.now() + dt.timedelta(days=15)).points == 30
    assert services.points_release_due(now=timezone.now() + dt.timedelta(days=15)).lots == 0
    member.points.refresh_from_db()
    assert (member.points.available, member.points.pending) == (30, 0)
    assert ledger_drift() == []


@pytest.mark.parametrize(
    ("rounding", "expected"),
    [(ProgrammeRules.Rounding.DOWN, 15), (ProgrammeRules.Rounding.NEAREST, 16), (ProgrammeRules.Rounding.UP, 16)],
)
def test_rounding_follows_the_rules(store, member, rounding, expected):
    from rewards.tests.factories import programme_create

    programme_create(points_per_unit=Decimal("1.5"), rounding=rounding)
    result = services.purchase_record(store=store, receipt_number="R-1", amount="10.50", member=member)
    assert result.purchase.points_earned == expected  # 10.50 × 1.5 = 15.75


def test_excluded_categories_and_tax_are_left_out_of_the_earn_base(store, member):
    from rewards.tests.factories import programme_create

    programme_create(excluded_categories=["gift-cards"], earn_base=ProgrammeRules.EarnBase.NET_WITHOUT_TAX)
    result = services.purchase_record(
        store=store,
        receipt_number="R-1",
        amount="120.00",
        tax="20.00",
        member=member,
        lines=[
            LineInput(amount=Decimal("60.00"), category="coffee", quantity=2),
            LineInput(amount=Decimal("60.00"), category="Gift-Cards"),
        ],
    )
    # (120 - 20 tax) × 60/120 eligible = 50
    assert result.purchase.earn_base == Decimal("50.00")
    assert result.purchase.points_earned == 50
    assert "CN¥50.00 in categories that earn no points" in result.entry.explanation


def test_a_purchase_below_the_minimum_earns_nothing_but_is_recorded(store, member):
    from rewards.tests.factories import programme_create

    programme_create(minimum_purchase=Decimal("10"))
    result = services.purchase_record(store=store, receipt_number="R-1", amount="9.99", member=member)
    assert result.created
    assert result.entry is None
    assert result.purchase.points_earned == 0
    assert not LedgerEntry.objects.exists()


def test_a_purchase_is_judged_by_the_rules_in_force_when_it_happened(rules, store, member):
    ProgrammeRules.objects.create(
        programme=rules.programme,
        effective_from=timezone.now() - dt.timedelta(days=10),
        points_per_unit=Decimal(2),
        pending_days=0,
    )
    before = services.purchase_record(
        store=store, receipt_number="old", amount="10", member=member, occurred_at=timezone.now() - dt.timedelta(days=20)
    )
    after = services.purchase_record(store=store, receipt_number="new", amount="10", member=member)
    assert (before.purchase.points_earned, after.purchase.points_earned) == (10, 20)
    assert before.purchase.rules == rules


def test_a_replayed_receipt_returns_the_original_and_writes_nothing(rules, store, member):
    first = services.purchase_record(store=store, receipt_number="R-1", amount="42", member=member)
    before = counts()

    replay = services.purchase_record(store=store, receipt_number="R-1", amount="42.00", member=member)

    assert not replay.created
    assert replay.purchase == first.purchase
    assert replay.entry == first.entry
    assert counts() == before


def test_a_different_body_under_the_same_receipt_is_refused(rules, store, member):
    services.purchase_record(store=store, receipt_number="R-1", amount="42", member=member)
    before = counts()
    with pytest.raises(services.ReplayConflict):
        services.purchase_record(store=store, receipt_number="R-1", amount="43", member=member)
    assert counts() == before


def test_the_same_receipt_number_at_another_store_is_another_purchase(rules, store, member):
    services.purchase_record(store=store, receipt_number="R-1", amount="42", member=member)
    other = services.purchase_record(store=StoreFactory(), receipt_number="R-1", amount="42", member=member)
    assert other.created


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"amount": "-5"}, "amount"),
        ({"amount": "0"}, "amount"),
        ({"amount": "abc"}, "amount"),
        ({"amount": "NaN"}, "amount"),
        ({"amount": "1.234"}, "amount"),
        ({"amount": "10", "discount": "11"}, "discount"),
        ({"amount": "10", "discount": "-1"}, "discount"),
        ({"amount": "10", "tax": "20"}, "tax"),
        ({"amount": "10", "receipt_number": "  "}, "receipt_number"),
        ({"amount": "10", "channel": "fax"}, "channel"),
        ({"amount": "10", "occurred_at": dt.datetime(2999, 1, 1, tzinfo=dt.UTC)}, "occurred_at"),
        ({"amount": "10", "lines": [LineInput(amount=Decimal("4"))]}, "lines"),
        ({"amount": "10", "lines": [LineInput(amount=Decimal("10"), quantity=0)]}, "lines[0].quantity"),
    ],
)
def test_bad_input_names_the_field_and_writes_nothing(rules, store, member, kwargs, field):
    kwargs = {"receipt_number": "R-1", **kwargs}
    with pytest.raises(ValidationError) as error:
        services.purchase_record(store=store, member=member, **kwargs)
    assert field in error.value.message_dict
    assert counts() == (0, 0, 0)


def test_a_closed_store_or_blocked_member_cannot_record(rules, store, member):
    member.status = Member.Status.BLOCKED
    member.save()
    with pytest.raises(ValidationError) as error:
        services.purchase_record(store=store, receipt_number="R-1", amount="10", member=member)
    assert "member" in error.value.message_dict
    store.is_active = False
    store.save()
    with pytest.raises(ValidationError) as error:
        services.purchase_record(store=store, receipt_number="R-2", amount="10")
    assert "store" in error.value.message_dict
    assert counts() == (0, 0, 0)


def test_an_anonymous_sale_is_claimed_once(rules, store, member):
    sale = services.purchase_record(store=store, receipt_number="R-1", amount="25")
    assert sale.entry is None

    claimed = services.purchase_claim(purchase=sale.purchase, member=member)
    again = services.purchase_claim(purchase=sale.purchase, member=member)

    assert claimed.created
    assert claimed.entry.points == 25
    assert not again.created
    assert again.entry == claimed.entry
    with pytest.raises(ValidationError):
        services.purchase_claim(purchase=sale.purchase, member=MemberFactory())
    assert LedgerEntry.objects.count() == 1
    assert ledger_drift() == []


def test_a_sale_cannot_be_claimed_after_the_claim_window(rules, store, member):
    sale = services.purchase_record(
        store=store, receipt_number="R-1", amount="25", occurred_at=timezone.now() - dt.timedelta(days=rules.claim_days + 1)
    )
    with pytest.raises(ValidationError) as error:
        services.purchase_claim(purchase=sale.purchase, member=member)
    assert "purchase" in error.value.message_dict
    assert not LedgerEntry.objects.exists()


def test_the_purchase_hook_runs_once_per_new_purchase_inside_the_transaction(rules, store, member):
    seen: list[hooks.PurchaseRecorded] = []
    hooks.on_purchase_recorded(seen.append)
    try:
        services.purchase_record(store=store, receipt_number="R-1", amount="10", member=member)
        services.purchase_record(store=store, receipt_number="R-1", amount="10", member=member)
    finally:
        hooks.unregister(seen.append)
    assert len(seen) == 1
    assert seen[0].entry.points == 10


# In its own transaction, as the counter and the API call it: inside a caller's transaction, a
# failing hook leaves that transaction to be rolled back whole (purchase_record takes no savepoint).
@pytest.mark.django_db(transaction=True)
def test_a_failing_hook_rolls_the_purchase_back(rules, store, member):
    def explode(event: hooks.PurchaseRecorded) -> None:
        raise RuntimeError("handler failed")

    hooks.on_purchase_recorded(explode)
    try:
        with pytest.raises(RuntimeError):
            services.purchase_record(store=store, receipt_number="R-1", amount="10", member=member)
    finally:
        hooks.unregister(explode)
    assert counts() == (0, 0, 0)


def test_explanations_are_written_in_the_language_being_shown(rules, store, member):
    from django.utils import translation

    entry = services.purchase_record(store=store, receipt_number="R-1", amount="42", member=member).entry
    with translation.override("zh-hans"):
        text = entry.explanation
    assert "¥42.00" in text
    assert "42" in text
