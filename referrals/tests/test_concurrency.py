"""Races on referral payouts, against the real PostgreSQL with many threads."""

from decimal import Decimal

import pytest

from members.tests.factories import MemberFactory, StoreFactory, UserFactory
from referrals import services
from referrals.models import Referral
from rewards import services as reward_services
from rewards.models import LedgerEntry
from rewards.selectors import account_for, ledger_drift
from rewards.tests.factories import programme_create
from rewards.tests.test_concurrency import run_at_once, unexpected

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def setup():
    programme_create()
    settings = services.settings_get()
    settings.qualifying_amount = Decimal(30)
    settings.referrer_points, settings.friend_points, settings.monthly_cap = 200, 100, 5
    settings.joins_per_referrer = settings.signups_per_ip = None
    settings.save()
    store = StoreFactory()
    referrer = MemberFactory(name="Mei Lin")
    return store, referrer, services.referral_code_for(referrer).code


def referral_points(member) -> list[int]:
    return list(LedgerEntry.objects.filter(account_id=member.pk, kind="referral").values_list("points", flat=True))


@pytest.mark.parametrize("same_receipt", [True, False], ids=["a till retrying", "two purchases"])
def test_the_friends_qualifying_purchase_posted_at_once_pays_out_once(setup, same_receipt):
    store, referrer, code = setup
    friend = MemberFactory(referral_code=code)

    outcomes = run_at_once(
        16,
        lambda i: reward_services.purchase_record(
            store=store, receipt_number="R-1" if same_receipt else f"R-{i}", amount="40.00", member=friend
        ),
    )

    assert unexpected(outcomes) == []
    referral = Referral.objects.get()
    assert referral.status == "qualified"
    assert referral_points(referrer) == [200]
    assert referral_points(friend) == [100]
    assert account_for(referrer).pending == 200
    assert list(referral.events.values_list("status", flat=True)) == ["joined", "qualified"]
    assert ledger_drift() == []


def test_friends_of_one_inviter_qualifying_at_once_never_pass_the_monthly_cap(setup):
    store, referrer, code = setup
    friends = [MemberFactory(referral_code=code) for _ in range(12)]

    outcomes = run_at_once(
        12,
        lambda i: reward_services.purchase_record(store=store, receipt_number=f"F-{i}", amount="40.00", member=friends[i]),
    )

    assert unexpected(outcomes) == []
    assert Referral.objects.filter(status="qualified").count() == 12
    assert Referral.objects.filter(capped=False).count() == 5
    assert referral_points(referrer) == [200] * 5
    assert account_for(referrer).pending == 1000
    assert ledger_drift() == []


def test_a_return_racing_the_approval_leaves_one_outcome_and_no_drift(setup):
    store, referrer, code = setup
    settings = services.settings_get()
    settings.manual_approval = True
    settings.save()
    friend = MemberFactory(referral_code=code)
    purchase = reward_services.purchase_record(store=store, receipt_number="R-1", amount="40.00", member=friend).purchase
    referral = Referral.objects.get()
    reviewer = UserFactory()

    outcomes = run_at_once(
        2,
        lambda i: (
            services.referral_approve(referral=referral, by=reviewer)
            if i == 0
            else reward_services.purchase_return(purchase=purchase, return_number="X-1", amount="40.00")
        ),
    )

    assert unexpected(outcomes, services.ValidationError) == []
    referral.refresh_from_db()
    assert referral.status in {"qualified", "rejected"}
    held = account_for(referrer).pending
    assert held == (200 if referral.status == "qualified" else 0)
    assert ledger_drift() == []
