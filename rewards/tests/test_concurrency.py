"""Races on the points ledger: many connections hitting the same rows at the same moment."""

import contextlib
import datetime as dt
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from members.models import Member, Store
from members.tests.factories import MemberFactory
from rewards import services
from rewards.models import LedgerEntry, PointsLot, Purchase, Return
from rewards.selectors import account_for, ledger_drift
from rewards.tests.factories import programme_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

# Long enough for PostgreSQL to report a deadlock (deadlock_timeout is 1s) many times over,
# short enough that a hang fails the test instead of the whole run.
JOIN_TIMEOUT = 60


@dataclass(frozen=True)
class Outcome:
    value: object = None
    error: BaseException | None = None


def run_at_once(count: int, work: Callable[[int], object]) -> list[Outcome]:
    """Run `work(i)` in `count` threads released together; return each thread's outcome."""
    barrier = threading.Barrier(count)
    outcomes: list[Outcome | None] = [None] * count

    def thread_main(i: int) -> None:
        try:
            # Connect before the barrier so the race is on the ledger, not on connecting.
            connection.ensure_connection()
            barrier.wait(timeout=JOIN_TIMEOUT)
            outcomes[i] = Outcome(value=work(i))
        except BaseException as exc:
            outcomes[i] = Outcome(error=exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=thread_main, args=(i,), name=f"race-{i}") for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
    hung = [thread.name for thread in threads if thread.is_alive()]
    assert not hung, f"threads still running after {JOIN_TIMEOUT}s (deadlock?): {hung}"
    return outcomes  # type: ignore[return-value]


def errors_by_type(outcomes: list[Outcome]) -> Counter[type]:
    return Counter(type(outcome.error) for outcome in outcomes if outcome.error is not None)


def unexpected(outcomes: list[Outcome], *allowed: type[BaseException]) -> list[BaseException]:
    return [o.error for o in outcomes if o.error is not None and not isinstance(o.error, allowed)]


# --- spending --------------------------------------------------------------------------


@pytest.mark.parametrize("round_number", range(5))
def test_racing_spends_never_overdraw(rules, store, round_number):
    """Let exactly as many spends succeed as the balance covers, whoever wins the race."""
    # Given a member whose available balance covers exactly 10 spends of 7 points
    spends_covered, price, threads = 10, 7, 64
    member = MemberFactory()
    for receipt in range(spends_covered):
        services.purchase_record(store=store, receipt_number=f"R{round_number}-{receipt}", amount=price, member=member)
    assert account_for(member).available == spends_covered * price

    # When 64 connections try to spend at the same moment
    outcomes = run_at_once(threads, lambda _i: services.points_spend(member=member, points=price, reason="race"))

    # Then the balance paid for exactly 10 of them and refused the rest cleanly
    assert unexpected(outcomes, services.InsufficientPoints) == []
    assert sum(o.error is None for o in outcomes) == spends_covered
    assert errors_by_type(outcomes) == {services.InsufficientPoints: threads - spends_covered}
    account = account_for(member)
    assert (account.available, account.lifetime_spent) == (0, spends_covered * price)
    assert LedgerEntry.objects.filter(account=account, kind=LedgerEntry.Kind.SPEND).count() == spends_covered
    assert ledger_drift() == []


# --- recording purchases ---------------------------------------------------------------


def test_racing_replays_of_one_receipt_record_it_once(rules, store, member):
    """Record a receipt sent by 32 tills at once exactly once and answer every till with it."""
    # Given one sale, as 32 tills would send it
    sale = {
        "store": store,
        "receipt_number": "R-1",
        "amount": "88.50",
        "member": member,
        "occurred_at": timezone.now() - dt.timedelta(minutes=1),
    }

    # When all of them send it at the same moment
    outcomes = run_at_once(32, lambda _i: services.purchase_record(**sale))

    # Then there is one purchase, one earn entry and one creator; everyone else got a replay
    assert [o.error for o in outcomes if o.error is not None] == []
    results = [o.value for o in outcomes]
    assert Counter(result.created for result in results) == {True: 1, False: 31}
    purchase = Purchase.objects.get()
    assert {result.purchase.pk for result in results} == {purchase.pk}
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.EARN).count() == 1
    assert account_for(member).available == purchase.points_earned == 88
    assert ledger_drift() == []


def test_racing_conflicting_receipts_keep_the_first(rules, store, member):
    """Accept one of 32 different sales sent under the same receipt number and refuse the others."""
    # When 32 tills send different amounts under one receipt number at once
    outcomes = run_at_once(
        32,
        lambda i: services.purchase_record(store=store, receipt_number="R-1", amount=Decimal(10 + i), member=member),
    )

    # Then exactly one is recorded, with its own points, and the rest are conflicts
    assert unexpected(outcomes, services.ReplayConflict) == []
    winners = [o.value for o in outcomes if o.error is None]
    assert len(winners) == 1
    assert winners[0].created
    assert errors_by_type(outcomes) == {services.ReplayConflict: 31}
    purchase = Purchase.objects.get()
    assert purchase.pk == winners[0].purchase.pk
    assert account_for(member).available == purchase.points_earned == int(purchase.gross)
    assert ledger_drift() == []


# --- returns ---------------------------------------------------------------------------


def test_racing_returns_never_refund_more_than_was_paid(rules, store, member):
    """Refuse the returns that would together refund more than the purchase, however they race."""
    # Given a purchase of 100 whose points are still all there
    purchase = services.purchase_record(store=store, receipt_number="R-1", amount=100, member=member).purchase

    # When 8 returns of 30 with distinct numbers arrive at once
    outcomes = run_at_once(8, lambda i: services.purchase_return(purchase=purchase, return_number=f"RT-{i}", amount="30"))

    # Then only 3 fit; the others are refused on the amount
    assert unexpected(outcomes, ValidationError) == []
    refused = [o.error for o in outcomes if o.error is not None]
    assert all("amount" in error.message_dict for error in refused)
    assert sum(o.error is None for o in outcomes) == 3
    purchase.refresh_from_db()
    refunded = Return.objects.filter(purchase=purchase).aggregate(s=Sum("amount"))["s"]
    clawed = -LedgerEntry.objects.filter(purchase=purchase, kind=LedgerEntry.Kind.CLAWBACK).aggregate(s=Sum("points"))["s"]
    assert refunded == Decimal("90.00") <= purchase.gross
    assert clawed == Return.objects.filter(purchase=purchase).aggregate(s=Sum("points_clawed_back"))["s"]
    assert clawed == 90 <= purchase.points_earned
    assert account_for(member).balance == purchase.points_earned - clawed
    assert ledger_drift() == []


# --- the clock's jobs against spending ---------------------------------------------------


def _member_with_lots_of_every_age(store: Store, index: int, now: dt.datetime) -> Member:
    """Enrol a member holding an expired lot, a lot due for release, a pending one, and either
    a spendable lot or (odd members) a debt from a return of points already spent."""
    member = MemberFactory()
    if index % 2:
        # Spent, then the sale returned: the member owes 60 until released points repay the
        # debt, inside the very job that races the spends. The debt comes first, before any
        # other lot exists, so nothing repays it early.
        with time_machine.travel(now - dt.timedelta(days=300), tick=False):
            sale = services.purchase_record(
                store=store,
                receipt_number=f"M{index}-debt",
                amount=60,
                member=member,
                occurred_at=timezone.now() - dt.timedelta(days=8),
            ).purchase
            services.points_spend(member=member, points=60, reason="setup")
            services.purchase_return(purchase=sale, return_number="RT", amount=60)
        assert account_for(member).owed == 60
    # Recorded in the past, so they are still pending although their day has come.
    with time_machine.travel(now - dt.timedelta(days=200), tick=False):
        services.purchase_record(store=store, receipt_number=f"M{index}-old", amount=40, member=member)
    with time_machine.travel(now - dt.timedelta(days=10), tick=False):
        services.purchase_record(store=store, receipt_number=f"M{index}-due", amount=80, member=member)
    if not index % 2:
        services.purchase_record(
            store=store, receipt_number=f"M{index}-now", amount=60, member=member, occurred_at=now - dt.timedelta(days=8)
        )
    services.purchase_record(store=store, receipt_number=f"M{index}-new", amount=70, member=member)
    return member


def test_jobs_racing_spends_neither_deadlock_nor_drift(store):
    """Run release and expiry jobs while members spend from the same accounts without deadlock or drift."""
    # Given members whose lots are expired, due for release, spendable and pending
    programme_create(pending_days=7, expiry_months=3)
    now = timezone.now()
    members = [_member_with_lots_of_every_age(store, i, now) for i in range(8)]
    assert PointsLot.objects.filter(status=PointsLot.Status.PENDING, available_at__lte=now).count() == 16
    assert PointsLot.objects.filter(expires_at__lte=now, remaining__gt=0).count() == 8

    # When 8 threads run the jobs in small chunks, in both orders, while 24 threads spend
    def work(i: int) -> object:
        if i < 8:
            jobs = [services.points_release_due, services.points_expire_due]
            for job in jobs if i % 2 else reversed(jobs):
                job(chunk=3)
            return None
        chooser = random.Random(i)
        for _ in range(3):
            # Refusals are fair answers to a spend that raced the jobs; anything else fails.
            with contextlib.suppress(services.InsufficientPoints, services.PointsOwed):
                services.points_spend(member=chooser.choice(members), points=chooser.randint(1, 40), reason="race")
        return None

    outcomes = run_at_once(32, work)

    # Then nothing failed, every due lot was handled and the ledger reconciles
    assert [o.error for o in outcomes if o.error is not None] == []
    assert not PointsLot.objects.filter(status=PointsLot.Status.PENDING, available_at__lte=now).exists()
    assert not PointsLot.objects.filter(status__in=["pending", "available"], remaining__gt=0, expires_at__lte=now).exists()
    assert all(account_for(m).owed == 0 for m in members)
    assert ledger_drift() == []
