"""Fixtures every referrals test shares: the offer a coffee chain would run, an inviter and their code."""

from decimal import Decimal

import pytest

from members.tests.factories import MemberFactory
from referrals import services


@pytest.fixture
def offer(rules):
    """200 points for the inviter and 100 for the friend on a first purchase of ¥30 within 30 days, held 14 days."""
    settings = services.settings_get()
    settings.qualifying_amount = Decimal(30)
    settings.qualifying_days = 30
    settings.referrer_points, settings.friend_points = 200, 100
    settings.hold_days = 14
    settings.monthly_cap = 5
    settings.joins_per_referrer = None  # the burst guard has its own tests
    settings.save()
    return settings


@pytest.fixture
def referrer(offer):
    return MemberFactory(name="Mei Lin", phone="+8613900000001", email="mei@example.com")


@pytest.fixture
def code(referrer):
    return services.referral_code_for(referrer).code


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """Run a write and what it leaves for after its commit (the inviter's share, settled by a task)."""

    def run(work, *args, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return work(*args, **kwargs)

    return run
