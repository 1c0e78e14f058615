"""The shared cache (API throttles, login limits, claim codes) in a PostgreSQL table, written in one statement.

Django's database cache counts the whole table and then selects, updates or inserts inside a
savepoint on every write: six round trips, paid by every till request through its rate limit.
PostgreSQL's upsert does the write in one, and the table is culled at most once a minute per process.
"""

import base64
import pickle
import time
from datetime import UTC, datetime

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.db import DatabaseCache
from django.db import connections, router
from django.utils import timezone

CULL_EVERY_SECONDS = 60

UPSERT = """
INSERT INTO {table} (cache_key, value, expires) VALUES (%s, %s, %s)
ON CONFLICT (cache_key) DO UPDATE SET value = EXCLUDED.value, expires = EXCLUDED.expires
{only_if_expired}
RETURNING 1
"""


class PostgresCache(DatabaseCache):
    """Django's database cache with single-statement writes (PostgreSQL's INSERT … ON CONFLICT)."""

    def __init__(self, table: str, params: dict) -> None:
        super().__init__(table, params)
        self._culled_at = 0.0

    def _base_set(self, mode: str, key: str, value: object, timeout: float | None = DEFAULT_TIMEOUT) -> bool:  # type: ignore[override]
        timeout = self.get_backend_timeout(timeout)
        db = router.db_for_write(self.cache_model_class)
        connection = connections[db]
        table = connection.ops.quote_name(self._table)
        now = timezone.now().replace(microsecond=0)
        expires = datetime.max.replace(tzinfo=UTC) if timeout is None else datetime.fromtimestamp(timeout, tz=UTC)
        expires = expires.replace(microsecond=0)
        with connection.cursor() as cursor:
            if time.monotonic() - self._culled_at > CULL_EVERY_SECONDS:
                self._culled_at = time.monotonic()
                cursor.execute(f"SELECT COUNT(*) FROM {table}")
                count = cursor.fetchone()[0]
                if count > self._max_entries:
                    self._cull(db, cursor, now, count)
            if mode == "touch":
                cursor.execute(f"UPDATE {table} SET expires = %s WHERE cache_key = %s", [expires, key])
                return cursor.rowcount > 0
            encoded = base64.b64encode(pickle.dumps(value, self.pickle_protocol)).decode("latin1")
            # "add" writes only a new key or over an expired one, as Django's backend does.
            only_if_expired = f"WHERE {table}.expires < %s" if mode == "add" else ""
            params = [key, encoded, expires, *([now] if mode == "add" else [])]
            cursor.execute(UPSERT.format(table=table, only_if_expired=only_if_expired), params)
            return cursor.fetchone() is not None
