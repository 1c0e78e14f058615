import contextlib
import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from celery import current_app
from django.core.files.storage import FileSystemStorage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.utils import timezone
from kombu import Connection

from loyalty_site.broker import filesystem_transport_options
from members.tests.factories import UserFactory
from rewards import imports, services
from rewards.models import HistoryImport, LedgerEntry, Purchase

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def real_worker(broker_folder: Path, **env: str) -> Iterator[list[str]]:
    """Run a Celery worker on the test database and a filesystem broker; yield a list that gets its output."""
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
        "CELERY_FILESYSTEM_FOLDER": str(broker_folder),
        "DATABASE_URL": f"postgres://{db['USER']}{password}@{host}{port}/{db['NAME']}{query}",
        **env,
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "loyalty_site", "worker", "--pool=solo", "--concurrency=1", "--loglevel=INFO"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        yield output
    finally:
        worker.terminate()
        output.append(worker.communicate(timeout=30)[0])


def wait_for(done: Callable[[], bool], seconds: float = 20) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not done():
        time.sleep(0.5)
    return done()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.filterwarnings("ignore::celery.exceptions.AlwaysEagerIgnored")
def test_a_task_runs_through_a_real_worker(rules, store, member, tmp_path):
    """Given points past their expiry, when beat's task goes through the broker, a worker expires them."""
    services.purchase_record(
        store=store, receipt_number="R-1", amount="10", member=member, occurred_at=timezone.now() - dt.timedelta(days=400)
    )
    with real_worker(tmp_path) as output:
        with Connection("filesystem://", transport_options=filesystem_transport_options(tmp_path)) as broker:
            current_app.send_task("rewards.tasks.expire_points", connection=broker)
        worked = wait_for(lambda: LedgerEntry.objects.filter(kind="expire", points=-10).exists())
    assert worked, output[-1][-5000:]
    assert "rewards.tasks.expire_points" in output[-1]
    assert "succeeded" in output[-1]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_file_uploaded_in_the_admin_is_imported_by_a_real_worker(rules, store, member, tmp_path, monkeypatch):
    """The web keeps the file in the imports folder; the worker, sharing it, reads and imports it."""
    folder = tmp_path / "imports"
    monkeypatch.setattr(HistoryImport._meta.get_field("file"), "storage", FileSystemStorage(location=folder))
    monkeypatch.setitem(current_app.conf, "task_always_eager", False)
    monkeypatch.setitem(current_app.conf, "broker_transport_options", filesystem_transport_options(tmp_path / "broker"))
    monkeypatch.setitem(current_app.conf, "broker_url", "filesystem://")
    # The app keeps the connection and producer pools it made for an earlier test: this one's broker needs new ones.
    monkeypatch.setattr(current_app, "_pool", None)
    monkeypatch.setattr(current_app.amqp, "_producer_pool", None)
    with real_worker(tmp_path / "broker", IMPORTS_ROOT=str(folder)) as output:
        run = imports.history_import_request(
            kind="purchases",
            upload=SimpleUploadedFile("old.csv", f"member_ref,occurred_at,amount\n{member.member_number},20260301,10\n".encode()),
            by=UserFactory(),
            store=store,
            dry_run=False,
        )
        finished = wait_for(lambda: HistoryImport.objects.get(pk=run.pk).status == HistoryImport.Status.DONE)
    assert finished, output[-1][-5000:]
    assert "rewards.tasks.import_history" in output[-1]  # the worker ran it, not this process
    assert Purchase.objects.get(member=member).points_earned > 0
    assert not any(folder.rglob("*.csv"))
