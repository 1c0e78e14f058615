"""Random walks through one member's points: sales, returns, spends, adjustments and the clock."""

import datetime as dt
import itertools
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.db.models import Sum
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from members.models import User
from members.tests.factories import MemberFactory, StoreFactory
from rewards import services
from rewards.models import LedgerEntry, LotAllocation, PointsAccount, PointsLot, Purchase, Return
from rewards.selectors import account_for, ledger_drift
from rewards.services import LineInput
from rewards.tests.factories import programme_create

RATE = Decimal("1.5")  # not a whole number, so rounding happens on every sale
EXCLUDED = "gift-cards"
# The last evening of January in Shanghai: month ends and local midnight are a step away.
START = dt.datetime(2030, 1, 31, 15, 30, tzinfo=dt.UTC)

# Examples share the test's transaction, so each one needs names no earlier one used.
_example_numbers = itertools.count()


def cents(amount: int) -> Decimal:
    return Decimal(amount).scaleb(-2)


@st.composite
def sales(draw: st.DrawFn) -> dict[str, object]:
    """Draw a sale's amount, discount and lines, some in a category that earns nothing."""
    line_cents = draw(st.lists(st.integers(0, 60_000), max_size=3))
    if sum(line_cents):
        categories = draw(st.lists(st.sampled_from(["", "food", EXCLUDED]), min_size=len(line_cents), max_size=len(line_cents)))
        lines = tuple(LineInput(amount=cents(c), category=category) for c, category in zip(line_cents, categories, strict=True))
        gross = sum(line_cents)
    else:
        lines, gross = (), draw(st.integers(1, 150_000))
    discount = draw(st.one_of(st.just(0), st.integers(0, gross)))
    return {"amount": cents(gross), "discount": cents(discount), "lines": lines}


@dataclass(frozen=True)
class Sale:
    purchase_pk: int
    request: dict[str, object]


@dataclass(frozen=True)
class SentReturn:
    purchase_pk: int
    return_pk: int
    number: str
    amount: Decimal


class LedgerMachine(RuleBasedStateMachine):
    """Drive a fresh member's points through random operations, checking the ledger after each."""

    # Set by the test: a user allowed to adjust points, and the frozen clock.
    manager: User
    clock: time_machine.Traveller

    recorded = Bundle("recorded")
    returns = Bundle("returns")

    def __init__(self) -> None:
        super().__init__()
        self.clock.move_to(START)
        self.example = next(_example_numbers)
        self.store = StoreFactory(code=f"sm{self.example}")
        self.member = MemberFactory()
        self.numbers = itertools.count()

    # --- helpers ---------------------------------------------------------------------

    def account(self) -> PointsAccount:
        return account_for(self.member)

    def ledger_state(self) -> tuple[object, ...]:
        """Return everything a refused or replayed request must leave untouched."""
        account = self.account()
        return (
            account.available,
            account.pending,
            account.owed,
            account.lifetime_earned,
            account.lifetime_spent,
            LedgerEntry.objects.count(),
            LotAllocation.objects.count(),
            PointsLot.objects.count(),
            Purchase.objects.count(),
            Return.objects.count(),
        )

    def next_number(self, prefix: str) -> str:
        return f"{prefix}{self.example}-{next(self.numbers)}"

    # --- sales -----------------------------------------------------------------------

    @initialize(target=recorded, sale=sales())
    def first_purchase(self, sale: dict[str, object]) -> Sale:
        """Start every walk with a sale, so the other rules have points to work on."""
        return self.record_purchase(sale)

    @rule(target=recorded, sale=sales())
    def record_purchase(self, sale: dict[str, object]) -> Sale:
        """Record a new sale now and check its points are credited, pending for the return window."""
        request = {
            "store": self.store,
            "receipt_number": self.next_number("R"),
            "member": self.member,
            "occurred_at": timezone.now(),
            **sale,
        }
        before = self.account()

        result = services.purchase_record(**request)

        purchase = result.purchase
        assert result.created
        ceiling = int((purchase.net * RATE).to_integral_value(rounding=ROUND_DOWN))
        if any(line.category == EXCLUDED and line.amount for line in sale["lines"]):
            assert 0 <= purchase.points_earned <= ceiling
        else:
            assert purchase.points_earned == ceiling
        after = self.account()
        assert after.balance == before.balance + purchase.points_earned
        if purchase.rules.pending_days:
            assert (after.available, after.owed) == (before.available, before.owed)
            assert after.pending == before.pending + purchase.points_earned
        return Sale(purchase_pk=purchase.pk, request=request)

    @rule(sale=recorded)
    def replay_purchase(self, sale: Sale) -> None:
        """Send an earlier sale again and check it changes nothing."""
        before = self.ledger_state()

        result = services.purchase_record(**sale.request)

        assert not result.created
        assert result.purchase.pk == sale.purchase_pk
        assert self.ledger_state() == before

    # --- returns ---------------------------------------------------------------------

    @rule(target=returns, sale=recorded, data=st.data())
    def return_by_amount(self, sale: Sale, data: st.DataObject) -> SentReturn | object:
        """Return part of a sale, or more than is left, and check the member never gains."""
        purchase = Purchase.objects.get(pk=sale.purchase_pk)
        refunded = purchase.returns.aggregate(s=Sum("amount"))["s"] or Decimal(0)
        left = int((purchase.gross - refunded) * 100)
        amount = cents(
            data.draw(
                st.one_of(st.integers(1, max(left, 1)), st.just(max(left, 1)), st.integers(left + 1, left + 5_000)),
                label="return cents",
            )
        )
        number = self.next_number("RT")
        self.settled()  # a return settles the member's account before taking points back
        before, state = self.account(), self.ledger_state()

        if amount * 100 > left:
            with pytest.raises(ValidationError) as refused:
                services.purchase_return(purchase=purchase, return_number=number, amount=amount)
            assert "amount" in refused.value.message_dict
            assert self.ledger_state() == state
            return multiple()

        result = services.purchase_return(purchase=purchase, return_number=number, amount=amount)

        assert result.created
        after = self.account()
        assert after.balance <= before.balance
        assert before.balance - after.balance == result.return_record.points_clawed_back
        return SentReturn(purchase_pk=purchase.pk, return_pk=result.return_record.pk, number=number, amount=amount)

    @rule(sent=returns, same_body=st.booleans())
    def replay_return(self, sent: SentReturn, same_body: bool) -> None:
        """Send an earlier return number again, as it was or changed, and check it changes nothing."""
        purchase = Purchase.objects.get(pk=sent.purchase_pk)
        before = self.ledger_state()

        if same_body:
            result = services.purchase_return(purchase=purchase, return_number=sent.number, amount=sent.amount)
            assert not result.created
            assert result.return_record.pk == sent.return_pk
        else:
            with pytest.raises(services.ReplayConflict):
                services.purchase_return(purchase=purchase, return_number=sent.number, amount=sent.amount + cents(1))

        assert self.ledger_state() == before

    # --- spending and adjustments ----------------------------------------------------

    @rule(points=st.one_of(st.integers(1, 100), st.integers(1, 3_000)))
    def spend(self, points: int) -> None:
        """Spend points, and check a refusal is the right one and writes nothing."""
        self.try_spend(points)

    @precondition(lambda self: self.account().available > 0)
    @rule()
    def spend_everything(self) -> None:
        """Spend every available point, so a later return has to leave the member owing."""
        self.try_spend(self.account().available)

    def settled(self) -> None:
        """Run the clock's jobs, as every debit first does for its own account."""
        services.points_release_due()
        services.points_expire_due()

    def try_spend(self, points: int) -> None:
        """Spend, and check the outcome is the one the settled balances before it call for."""
        self.settled()
        before, state = self.account(), self.ledger_state()
        try:
            services.points_spend(member=self.member, points=points, reason="state machine")
        except services.PointsOwed:
            assert before.owed > 0
            assert self.ledger_state() == state
        except services.InsufficientPoints:
            assert before.owed == 0
            assert points > before.available
            assert self.ledger_state() == state
        else:
            assert before.owed == 0
            after = self.account()
            assert after.available == before.available - points
            assert after.pending == before.pending

    @rule(points=st.integers(-800, 800).filter(bool))
    def adjust(self, points: int) -> None:
        """Adjust the balance by hand, and check a refused debit writes nothing."""
        self.settled()
        before, state = self.account(), self.ledger_state()
        try:
            services.points_adjust(member=self.member, points=points, reason="Goodwill", by=self.manager)
        except services.InsufficientPoints:
            assert -points > before.available
            assert self.ledger_state() == state
        else:
            after = self.account()
            assert after.balance == before.balance + points
            assert after.pending == before.pending

    # --- the clock -------------------------------------------------------------------

    # Mostly short steps, so points live long enough to be released, spent and returned.
    @rule(days=st.one_of(st.integers(1, 10), st.integers(1, 120)), run_jobs=st.booleans())
    def advance_clock(self, days: int, run_jobs: bool) -> None:
        """Let days pass, then maybe run the jobs as the scheduler would: release, then expire."""
        self.clock.shift(dt.timedelta(days=days))
        if run_jobs:
            self.release()
            self.expire()

    @rule()
    def release(self) -> None:
        """Run the release job and check every due lot still valid became spendable, balance unchanged."""
        now, before = timezone.now(), self.account()

        services.points_release_due(now=now)

        # A lot past its validity is never released: the expiry job takes it.
        assert (
            not PointsLot.objects.filter(account_id=self.member.pk, status=PointsLot.Status.PENDING, available_at__lte=now)
            .exclude(expires_at__lte=now)
            .exists()
        )
        assert self.account().balance == before.balance

    @rule()
    def expire(self) -> None:
        """Run the expiry job and check nothing past its date still counts."""
        now, before = timezone.now(), self.account()

        services.points_expire_due(now=now)

        assert not PointsLot.objects.filter(
            account_id=self.member.pk, status__in=["pending", "available"], remaining__gt=0, expires_at__lte=now
        ).exists()
        after = self.account()
        assert after.balance <= before.balance
        assert after.owed == before.owed

    # --- invariants ------------------------------------------------------------------

    @invariant()
    def ledger_reconciles(self) -> None:
        """Reconcile every account in the database, not only this example's."""
        assert ledger_drift() == []

    @invariant()
    def balances_match_entries_and_lots(self) -> None:
        """Check the cached balances against the member's entries and lots."""
        account = self.account()
        assert account.available >= 0
        assert account.pending >= 0
        assert account.owed >= 0
        entries = LedgerEntry.objects.filter(account_id=self.member.pk).aggregate(s=Sum("points"))["s"] or 0
        assert account.available + account.pending - account.owed == entries
        lots = dict(
            PointsLot.objects.filter(account_id=self.member.pk)
            .order_by()
            .values_list("status")
            .annotate(s=Sum("remaining"))
            .values_list("status", "s")
        )
        assert lots.get(PointsLot.Status.AVAILABLE, 0) == account.available
        assert lots.get(PointsLot.Status.PENDING, 0) == account.pending
        assert lots.get(PointsLot.Status.EXPIRED, 0) == 0

    @invariant()
    def returns_stay_within_their_purchase(self) -> None:
        """Check no purchase refunds more than was paid or takes back more than was earned."""
        for purchase in Purchase.objects.filter(member=self.member):
            refunded = purchase.returns.aggregate(s=Sum("amount"))["s"] or Decimal(0)
            clawed = -(purchase.entries.filter(kind=LedgerEntry.Kind.CLAWBACK).aggregate(s=Sum("points"))["s"] or 0)
            assert refunded <= purchase.gross
            assert 0 <= clawed <= purchase.points_earned
            assert clawed == (purchase.returns.aggregate(s=Sum("points_clawed_back"))["s"] or 0)


@pytest.mark.slow
@pytest.mark.django_db
def test_ledger_stays_consistent_through_any_sequence_of_operations(manager):
    """Check the ledger's invariants after every step of random walks through the services."""
    # No daily adjustment limit: the one manager's adjustments would add up across examples, making them flaky.
    programme_create(pending_days=7, expiry_months=3, points_per_unit=RATE, excluded_categories=[EXCLUDED], adjust_daily_limit=0)
    with time_machine.travel(START, tick=False) as clock:
        machine = type("Machine", (LedgerMachine,), {"manager": manager, "clock": clock})
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=60,
                stateful_step_count=40,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
                database=None,  # each run is fresh; keep nothing in the working tree
            ),
        )
