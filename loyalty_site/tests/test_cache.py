"""The PostgreSQL cache behaves as Django's database cache, in one statement a write."""

import datetime as dt

import pytest
import time_machine
from django.core.cache import cache, caches
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from loyalty_site.cache import PostgresCache

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def empty():
    cache.clear()


def test_the_default_cache_is_the_postgres_table():
    assert isinstance(caches["default"], PostgresCache)


def test_set_get_add_touch_and_delete_keep_djangos_meaning():
    assert cache.set("k", {"n": 1}, timeout=60) is None
    assert cache.get("k") == {"n": 1}
    assert cache.add("k", "other") is False  # a live key is kept
    assert cache.get("k") == {"n": 1}
    cache.set("k", [2, 3])
    assert cache.get("k") == [2, 3]
    assert cache.add("new", 7) is True
    assert cache.touch("new", 120) is True
    assert cache.touch("missing", 120) is False
    cache.delete("k")
    assert cache.get("k") is None


def test_an_expired_key_is_gone_and_can_be_added_again():
    cache.set("k", "old", timeout=10)
    with time_machine.travel(timezone.now() + dt.timedelta(seconds=30)):
        assert cache.get("k") is None
        assert cache.add("k", "new", timeout=10) is True
        assert cache.get("k") == "new"


def test_a_key_without_timeout_never_expires():
    cache.set("forever", 1, timeout=None)
    with time_machine.travel(timezone.now() + dt.timedelta(days=3650)):
        assert cache.get("forever") == 1


def test_a_write_is_one_statement_once_the_table_was_culled_this_minute():
    cache.set("warm", 1)  # the first write of the minute also counts the table
    with CaptureQueriesContext(connection) as queries:
        cache.set("k", 1)
        cache.add("a", 1)
        cache.incr("k")  # a read and a write

    assert len(queries) == 4, [q["sql"] for q in queries]


def test_the_table_is_culled_when_over_its_limit():
    small = PostgresCache("loyalty_cache", {"OPTIONS": {"MAX_ENTRIES": 10, "CULL_FREQUENCY": 2}})
    for i in range(12):
        small.set(f"k{i}", i)
    small._culled_at = 0.0  # a minute has passed

    small.set("one-more", 1)

    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM loyalty_cache")
        assert cursor.fetchone()[0] <= 8


def test_the_shared_cache_has_room_for_every_api_keys_minute_counts_before_it_culls():
    # Past its limit Django deletes a third of all keys, login and claim-code counters among them;
    # each busy API key keeps a few per-minute counts alive.
    assert caches["default"]._max_entries >= 100_000
