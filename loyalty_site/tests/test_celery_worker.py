import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from celery import current_app
from django.db import connection
from django.utils import timezone
from kombu import Connection

from loyalty_site.broker import filesystem_transport_options
from rewards import services
from rewards.models import LedgerEntry

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.filterwarnings("ignore::celery.exceptions.AlwaysEagerIgnored")
def test_a_task_runs_through_a_real_worker(rules, store, member, tmp_path):
    """Given points past their expiry, when beat's task goes through the broker, a worker expires them."""
    services.purchase_record(
        store=store, receipt_number="R-1", amount="10", member=member, occurred_at=timezone.now() - dt.timedelta(days=400)
    )
    db = connection.settings_dict
    # A socket folder goes in the query string; a host name in the URL's authority.
    socket = db["HOST"].startswith("/")
    host = "" if socket else db["HOST"]
    port = f":{db['PORT']}" if db["PORT"] and not socket else ""
    password = f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else ""
    query = f"?host={quote(db['HOST'])}" if socket else ""
    env = {
        **os.environ,
        "LOYALTY_ENV": "test",
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "CELERY_BROKER_URL": "filesystem://",
        "CELERY_FILESYSTEM_FOLDER": str(tmp_path),
        "DATABASE_URL": f"postgres://{db['USER']}{password}@{host}{port}/{db['NAME']}{query}",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "loyalty_site", "worker", "--pool=solo", "--concurrency=1", "--loglevel=INFO"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with Connection("filesystem://", transport_options=filesystem_transport_options(tmp_path)) as broker:
            current_app.send_task("rewards.tasks.expire_points", connection=broker)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not LedgerEntry.objects.filter(kind="expire").exists():
            time.sleep(0.5)
        worked = LedgerEntry.objects.filter(kind="expire", points=-10).exists()
    finally:
        worker.terminate()
        output = worker.communicate(timeout=30)[0]
    assert worked, output[-5000:]
    assert "rewards.tasks.expire_points" in output
    assert "succeeded" in output
