"""Fixtures shared by every app's tests: the programme, a store, a member and staff in each role."""

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.utils import translation

from members.tests.counter import counter_login
from members.tests.factories import MemberFactory, StoreFactory, UserFactory
from members.tests.sms import RecordingSms
from rewards import config
from rewards.tests.factories import programme_create


@pytest.fixture
def at_counter(client, cashier, store):
    """A cashier logged in with the shift started at the store."""
    return counter_login(client, cashier, store)


# Browser tests: Chromium, a page per test and a login through the real form (conftest_e2e.py).
pytest_plugins = ["conftest_e2e"]


@pytest.fixture(autouse=True)
def english_unless_told():
    """Start each test in English: a request in an earlier test may have left its language active,
    and a translated field written then (a tier's name) would land in that language's column."""
    translation.activate("en")
    yield
    translation.deactivate()


@pytest.fixture(autouse=True)
def programme_settings_read_afresh():
    """Each test builds its own programme in a transaction rolled back at its end: the snapshot
    another test left in this process (rewards.config) would describe rows that no longer exist."""
    config.forget()


@pytest.fixture
def sms(settings):
    """Send texts through a recording gateway; the cache (hourly code counts, login limits) starts empty."""
    settings.SMS_BACKEND = "members.tests.sms.RecordingSms"
    RecordingSms.reset()
    cache.clear()
    return RecordingSms


@pytest.fixture
def rules(db):
    return programme_create()


@pytest.fixture
def store(db):
    return StoreFactory(code="sh01", name="Jing'an")


@pytest.fixture
def member(db):
    return MemberFactory()


@pytest.fixture
def roles(db):
    call_command("sync_roles", verbosity=0)


@pytest.fixture
def manager(roles, store):
    return UserFactory(role="Store manager", stores=[store])


@pytest.fixture
def cashier(roles, store):
    return UserFactory(role="Cashier", stores=[store])
