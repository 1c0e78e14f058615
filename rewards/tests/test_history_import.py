"""History uploaded in the admin is checked and imported by a worker, with the report on its own page."""

import datetime as dt
import logging

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.urls import reverse
from django.utils import timezone, translation

from members.models import Member
from members.tests.factories import UserFactory
from rewards import imports, tasks
from rewards.models import HistoryImport, LedgerEntry, Purchase
from rewards.selectors import ledger_drift


@pytest.fixture
def upload(admin_client, store, django_capture_on_commit_callbacks):
    """Send a file through the admin's form and let the (eager) worker run it; return the run and its page."""

    def send(text: str, *, name: str = "history.csv", client=admin_client, **options: str):
        data = {"kind": "purchases", "store": store.pk, "file": SimpleUploadedFile(name, text.encode()), **options}
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(reverse("admin:rewards_import"), data)
        if response.status_code != 302:
            return None, response
        run = HistoryImport.objects.latest("pk")
        return run, client.get(response.url)

    return send


def queued_import(member, store, *, by=None, dry_run=False) -> HistoryImport:
    """A one-row purchases file for `member`, queued as the admin's form would (the task not yet run)."""
    return imports.history_import_request(
        kind="purchases",
        upload=SimpleUploadedFile("h.csv", f"member_ref,occurred_at,amount\n{member.member_number},20260301,10\n".encode()),
        by=by or UserFactory(),
        store=store,
        dry_run=dry_run,
    )


def stopped_import_of(checked: HistoryImport) -> HistoryImport:
    """A real import of the checked file that stopped part way, as a killed worker leaves it."""
    return HistoryImport.objects.create(
        kind=checked.kind,
        file=checked.file.name,
        file_name=checked.file_name,
        store=checked.store,
        dry_run=False,
        language="en",
        status=HistoryImport.Status.FAILED,
        can_retry=True,
    )


def test_a_clean_dry_run_is_imported_from_its_page_and_the_file_is_not_kept(
    rules, store, member, admin_client, upload, import_storage, django_capture_on_commit_callbacks
):
    text = f"member_ref,occurred_at,amount,receipt_number\n{member.member_number},20260301,25.00,OLD-1\n"
    checked, page = upload(text, dry_run="on")

    assert checked.status == HistoryImport.Status.DONE
    assert checked.dry_run
    assert checked.report["rows"] == 1
    assert checked.report["invalid"] == 0
    assert not checked.report["written"]
    assert "Checked only: nothing was written." in page.text
    assert "Import this file now" in page.text
    assert not Purchase.objects.exists()
    assert (import_storage / checked.file.name).exists()

    with django_capture_on_commit_callbacks(execute=True):
        followed = admin_client.post(reverse("admin:rewards_historyimport_follow", args=[checked.pk]))
    imported = HistoryImport.objects.latest("pk")
    assert followed.url == reverse("admin:rewards_historyimport_change", args=[imported.pk])
    assert imported.status == HistoryImport.Status.DONE
    assert not imported.dry_run
    assert imported.report["purchases_created"] == 1
    assert (imported.rows_written, imported.rows_to_write) == (1, 1)
    assert imported.report["written"]
    assert "The file was imported." in admin_client.get(followed.url).text
    purchase = Purchase.objects.get()
    assert purchase.receipt_number == "OLD-1"
    assert purchase.member == member
    assert LedgerEntry.objects.filter(purchase=purchase, kind="earn").count() == 1

    # The file held phone numbers: gone once written, and the dry run no longer offers to import it.
    assert not any(import_storage.rglob("*.csv"))
    checked.refresh_from_db()
    assert not checked.file
    assert not imported.file
    assert "Import this file now" not in admin_client.get(reverse("admin:rewards_historyimport_change", args=[checked.pk])).text
    again = admin_client.post(reverse("admin:rewards_historyimport_follow", args=[checked.pk]))
    assert again.url == reverse("admin:rewards_historyimport_change", args=[checked.pk])
    assert HistoryImport.objects.count() == 2
    assert Purchase.objects.count() == 1


def test_bad_rows_are_listed_by_line_and_cannot_be_imported_from_the_page(rules, store, member, admin_client, upload):
    number = member.member_number
    text = f"member_ref,occurred_at,amount\n{number},20260301,10\nnobody,20260301,10\n{number},someday,10\n"
    run, page = upload(text, dry_run="on")

    assert run.report["invalid"] == 2
    assert [error["line"] for error in run.report["errors"]] == [3, 4]
    assert "line 3: No member matches “nobody”." in page.text
    assert "2 rows to fix" in page.text
    assert "Import this file now" not in page.text
    refused = admin_client.post(reverse("admin:rewards_historyimport_follow", args=[run.pk]))
    assert refused.status_code == 302
    assert HistoryImport.objects.count() == 1
    assert not Purchase.objects.exists()


def test_an_import_without_skipping_bad_rows_writes_nothing_and_says_so(rules, store, member, upload):
    run, page = upload(f"member_ref,occurred_at,amount\n{member.member_number},20260301,10\nnobody,20260301,10\n")
    assert not run.dry_run
    assert run.status == HistoryImport.Status.DONE
    assert "Nothing was written" in page.text
    assert not Purchase.objects.exists()

    skipped, page = upload(
        f"member_ref,occurred_at,amount\n{member.member_number},20260301,10\nnobody,20260301,10\n", skip_invalid="on"
    )
    assert skipped.report["purchases_created"] == 1
    assert "The file was imported." in page.text


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("history.txt", "member_ref,occurred_at,amount\n", "Use a .csv or .xlsx file."),
        ("history.csv", "member_ref,amount\nx,1\n", "Missing columns: occurred_at"),
        ("history.csv", "", "The submitted file is empty."),
        ("history.csv", "\n\n", "The file is empty: the first row must name the columns."),
    ],
)
def test_a_file_no_worker_could_read_is_refused_at_once(rules, store, upload, name, text, message):
    run, response = upload(text, name=name)
    assert run is None
    assert response.status_code == 200
    assert message in response.text
    assert not HistoryImport.objects.exists()


def test_members_import_in_the_background_too(rules, admin_client, store, django_capture_on_commit_callbacks):
    data = {"kind": "members", "file": SimpleUploadedFile("m.csv", b"phone,name\n13900139000,Li Na\n")}
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("admin:rewards_import"), data)
    run = HistoryImport.objects.get()
    assert response.url == reverse("admin:rewards_historyimport_change", args=[run.pk])
    assert run.report["members_created"] == 1
    assert run.report["written"]
    assert Member.objects.get(phone="+8613900139000").name == "Li Na"


def test_the_report_is_in_the_language_of_whoever_asked(rules, store, admin_client, upload):
    admin_client.cookies["django_language"] = "zh-hans"
    run, _page = upload("member_ref,occurred_at,amount\nnobody,20260301,10\n", dry_run="on")
    with translation.override("zh-hans"):
        expected = translation.gettext("No member matches “%(ref)s”.") % {"ref": "nobody"}
    assert expected != "No member matches “nobody”."
    assert run.language == "zh-hans"
    assert run.report["errors"][0]["message"] == expected


def test_a_run_is_run_once_however_often_its_task_is_delivered(rules, store, member):
    run = queued_import(member, store)
    # Another worker claimed it: this delivery leaves it alone.
    HistoryImport.objects.filter(pk=run.pk).update(status=HistoryImport.Status.RUNNING)
    imports.history_import_run(run.pk)
    run.refresh_from_db()
    assert run.status == HistoryImport.Status.RUNNING
    assert not Purchase.objects.exists()

    HistoryImport.objects.filter(pk=run.pk).update(status=HistoryImport.Status.QUEUED)
    imports.history_import_run(run.pk)
    run.refresh_from_db()
    assert run.status == HistoryImport.Status.DONE
    assert Purchase.objects.count() == 1
    finished = run.finished_at
    imports.history_import_run(run.pk)
    run.refresh_from_db()
    assert run.finished_at == finished
    assert Purchase.objects.count() == 1


def test_no_worker_to_be_reached_is_a_failed_run_not_an_error_page(rules, store, member, upload, monkeypatch, caplog):
    from kombu.exceptions import OperationalError

    def unreachable(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(tasks.import_history, "delay", unreachable)
    with caplog.at_level(logging.ERROR, logger="members.tasks"):
        run, page = upload(f"member_ref,occurred_at,amount\n{member.member_number},20260301,10\n", dry_run="on")
    assert page.status_code == 200
    assert run.status == HistoryImport.Status.FAILED
    assert "No worker could be reached" in page.text
    assert "connection refused" in caplog.text


def test_an_import_stopped_part_way_is_finished_from_its_page(
    rules, store, admin_client, upload, monkeypatch, django_capture_on_commit_callbacks
):
    from members.tests.factories import MemberFactory

    numbers = [m.member_number for m in sorted(MemberFactory.create_batch(3), key=lambda m: m.pk)]
    text = "member_ref,occurred_at,amount\n" + "".join(f"{n},20260301,10\n" for n in numbers)
    monkeypatch.setattr(imports, "WRITE_CHUNK_ROWS", 1)
    real, calls = imports._write_chunk, []

    def stops_at_the_second_chunk(*args):
        calls.append(args)
        if len(calls) == 2:
            raise OSError("the worker was stopped")
        real(*args)

    monkeypatch.setattr(imports, "_write_chunk", stops_at_the_second_chunk)
    failed, page = upload(text)
    assert failed.status == HistoryImport.Status.FAILED
    assert (failed.rows_written, failed.rows_to_write) == (1, 3)
    assert "1 of 3 rows were written before it stopped." in page.text
    assert "Import this file again" in page.text
    assert Purchase.objects.count() == 1

    monkeypatch.setattr(imports, "_write_chunk", real)
    with django_capture_on_commit_callbacks(execute=True):
        followed = admin_client.post(reverse("admin:rewards_historyimport_follow", args=[failed.pk]))
    finished = HistoryImport.objects.latest("pk")
    assert followed.url == reverse("admin:rewards_historyimport_change", args=[finished.pk])
    assert finished.status == HistoryImport.Status.DONE
    assert (finished.report["purchases_created"], finished.report["purchases_replayed"]) == (2, 1)
    assert Purchase.objects.count() == 3
    assert ledger_drift() == []


def test_a_second_click_does_not_queue_a_second_import(rules, store, member, admin_client, upload):
    checked, _page = upload(f"member_ref,occurred_at,amount\n{member.member_number},20260301,10\n", dry_run="on")
    first = admin_client.post(reverse("admin:rewards_historyimport_follow", args=[checked.pk]))  # on_commit not run: stays queued
    second = admin_client.post(reverse("admin:rewards_historyimport_follow", args=[checked.pk]))
    queued = HistoryImport.objects.get(dry_run=False)
    assert first.url == reverse("admin:rewards_historyimport_change", args=[queued.pk])
    assert second.url == first.url  # to the run already queued
    assert queued.status == HistoryImport.Status.QUEUED


@pytest.mark.django_db(transaction=True)
def test_clicks_on_two_pages_of_one_file_at_once_queue_one_import(rules, store, member, monkeypatch):
    """A clean dry run and a stopped import of the same file both offer the button: clicked together, one run."""
    import threading

    monkeypatch.setattr(imports, "_queue", lambda run: None)
    admin = UserFactory()
    checked = queued_import(member, store, by=admin, dry_run=True)
    HistoryImport.objects.filter(pk=checked.pk).update(status=HistoryImport.Status.DONE, report={"invalid": 0})
    stopped = stopped_import_of(checked)
    barrier, runs = threading.Barrier(2), []

    def click(run):
        try:
            barrier.wait()
            runs.append(imports.history_import_again(HistoryImport.objects.get(pk=run.pk), by=admin).pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=click, args=(run,)) for run in (checked, stopped)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queued = HistoryImport.objects.filter(status=HistoryImport.Status.QUEUED)
    assert queued.count() == 1
    assert runs == [queued.get().pk] * 2


def test_whatever_stops_the_worker_leaves_a_failed_run_that_can_be_run_again(rules, store, member, monkeypatch):
    run = queued_import(member, store)

    def shutdown(run):
        raise SystemExit("warm shutdown")

    monkeypatch.setattr(imports, "_history_import_outcome", shutdown)
    with pytest.raises(SystemExit):
        imports.history_import_run(run.pk)
    run.refresh_from_db()
    assert run.status == HistoryImport.Status.FAILED
    assert run.can_retry
    assert imports.history_import_can_follow(run)


def test_a_run_whose_worker_went_silent_is_taken_over_by_the_next_delivery(rules, store, member):
    run = queued_import(member, store)
    now = timezone.now()
    HistoryImport.objects.filter(pk=run.pk).update(
        status=HistoryImport.Status.RUNNING, heartbeat_at=now - dt.timedelta(minutes=5)
    )
    imports.history_import_run(run.pk)  # its worker was heard from lately: left alone
    assert not Purchase.objects.exists()

    HistoryImport.objects.filter(pk=run.pk).update(heartbeat_at=now - dt.timedelta(minutes=20))
    imports.history_import_run(run.pk)
    run.refresh_from_db()
    assert run.status == HistoryImport.Status.DONE
    assert Purchase.objects.count() == 1


def test_a_file_that_cannot_be_imported_offers_no_second_try(rules, store, member, upload, import_storage):
    run, _page = upload(f"member_ref,occurred_at,amount\n{member.member_number},20260301,10\n")
    assert run.status == HistoryImport.Status.DONE
    HistoryImport.objects.filter(pk=run.pk).update(
        status=HistoryImport.Status.FAILED, error="Missing columns: amount", can_retry=False, file="history/h.csv"
    )
    (import_storage / "history").mkdir(parents=True, exist_ok=True)
    (import_storage / "history" / "h.csv").write_text("member_ref\n")
    run.refresh_from_db()
    assert not imports.history_import_can_follow(run)  # a bad file stays bad
    HistoryImport.objects.filter(pk=run.pk).update(can_retry=True, file="history/gone.csv")
    run.refresh_from_db()
    assert not imports.history_import_can_follow(run)  # a file no longer kept cannot be run
    HistoryImport.objects.filter(pk=run.pk).update(file="history/h.csv")
    run.refresh_from_db()
    assert imports.history_import_can_follow(run)


def test_an_unexpected_error_is_a_failed_run_and_logged(rules, store, member, upload, monkeypatch, caplog):
    real = imports.import_purchases

    def broken(*args, **kwargs):
        real(*args, **kwargs)
        raise RuntimeError("disk full")

    monkeypatch.setattr(imports, "import_purchases", broken)
    with caplog.at_level(logging.ERROR, logger="rewards.imports"):
        run, page = upload(f"member_ref,occurred_at,amount\n{member.member_number},20260301,10\n", dry_run="on")
    assert run.status == HistoryImport.Status.FAILED
    assert "stopped before the end" in run.error
    assert run.error in page.text
    assert "disk full" in caplog.text
    assert run.file  # kept: nothing was written


def test_deleting_a_run_deletes_its_file(rules, store, member, admin_client, upload, import_storage):
    run, _page = upload(f"member_ref,occurred_at,amount\n{member.member_number},20260301,10\n", dry_run="on")
    assert any(import_storage.rglob("*.csv"))
    response = admin_client.post(reverse("admin:rewards_historyimport_delete", args=[run.pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not HistoryImport.objects.exists()
    assert not any(import_storage.rglob("*.csv"))


def test_only_those_who_may_import_see_the_imports(rules, roles, store, client, upload):
    run, _page = upload("member_ref,occurred_at,amount\nnobody,20260301,10\n", dry_run="on")
    client.force_login(UserFactory(role="Store manager", stores=[store], is_staff=True))
    assert client.get(reverse("admin:rewards_historyimport_changelist")).status_code == 403
    assert client.get(reverse("admin:rewards_historyimport_change", args=[run.pk])).status_code == 403
    assert client.post(reverse("admin:rewards_historyimport_follow", args=[run.pk])).status_code == 403
    client.force_login(UserFactory(role="Programme admin", is_staff=True))
    assert client.get(reverse("admin:rewards_historyimport_change", args=[run.pk])).status_code == 200


def test_files_never_imported_are_deleted_after_a_week(rules, store, member, upload, import_storage):
    text = f"member_ref,occurred_at,amount\n{member.member_number},20260301,10\n"
    old, _page = upload(text, name="old.csv", dry_run="on")
    fresh, _page = upload(text, name="fresh.csv", dry_run="on")
    HistoryImport.objects.filter(pk=old.pk).update(requested_at=timezone.now() - dt.timedelta(days=8))
    waiting = HistoryImport.objects.create(
        kind="purchases", file=old.file.name, file_name="old.csv", store=store, dry_run=False, language="en"
    )

    # An import of the old file waits for a worker: the file stays.
    assert imports.imports_tidy() == {"abandoned": 0, "files": 0, "reports": 0, "staged_rows": 0}
    assert (import_storage / old.file.name).exists()

    HistoryImport.objects.filter(pk=waiting.pk).delete()
    assert imports.imports_tidy() == {"abandoned": 0, "files": 1, "reports": 0, "staged_rows": 0}
    old.refresh_from_db()
    fresh.refresh_from_db()
    assert not old.file
    assert sorted(path.name for path in import_storage.rglob("*.csv")) == ["fresh.csv"]
    assert fresh.file
    assert tasks.tidy_imports() == {"abandoned": 0, "files": 0, "reports": 0, "staged_rows": 0}


def test_rows_left_staged_by_a_killed_import_are_deleted_the_next_day(db):

    with connection.cursor() as cursor:
        for run, age in [("9f0c7a52-0000-4000-8000-000000000001", "2 days"), ("9f0c7a52-0000-4000-8000-000000000002", "1 hour")]:
            cursor.execute(
                "INSERT INTO rewards_import_staging (run, chunk, line, first_of_key, store_id, receipt_number, gross, category,"
                " quantity, occurred_at, staged_at) VALUES (%s, 0, 2, true, 1, 'R-1', 10, '', 1, now(), now() - %s::interval)",
                [run, age],
            )
        assert imports.imports_tidy() == {"abandoned": 0, "files": 0, "reports": 0, "staged_rows": 1}
        cursor.execute("SELECT run::text FROM rewards_import_staging")
        assert cursor.fetchall() == [("9f0c7a52-0000-4000-8000-000000000002",)]


def test_a_running_import_shows_how_far_it_is(rules, store, admin_client):
    run = HistoryImport.objects.create(
        kind="purchases", file_name="big.csv", store=store, dry_run=False, language="en", status=HistoryImport.Status.RUNNING
    )
    page = admin_client.get(reverse("admin:rewards_historyimport_change", args=[run.pk])).text
    assert "Checking and importing." in page
    assert '<meta http-equiv="refresh" content="3">' in page

    HistoryImport.objects.filter(pk=run.pk).update(rows_written=300_000, rows_to_write=1_000_000)
    page = admin_client.get(reverse("admin:rewards_historyimport_change", args=[run.pk])).text
    assert "300,000 of 1,000,000 rows written." in page
    assert '<progress max="1000000" value="300000">' in page

    HistoryImport.objects.filter(pk=run.pk).update(status=HistoryImport.Status.DONE, report={"rows": 1, "invalid": 0})
    assert "refresh" not in admin_client.get(reverse("admin:rewards_historyimport_change", args=[run.pk])).text


def test_runs_left_pending_are_failed_and_listed_lines_forgotten_by_the_clock(rules, store, member, admin_client, upload):
    stuck, _page = upload(f"member_ref,occurred_at,amount\n{member.member_number},20260301,10\n", dry_run="on")
    HistoryImport.objects.filter(pk=stuck.pk).update(status=HistoryImport.Status.RUNNING)
    checked, _page = upload("member_ref,occurred_at,amount\n+8613800138000,20260301,10\n", dry_run="on")
    assert "+8613800138000" in checked.report["errors"][0]["message"]

    assert imports.imports_tidy()["abandoned"] == 0  # its worker was heard from lately
    later = timezone.now() + dt.timedelta(minutes=20)
    assert imports.imports_tidy(now=later)["abandoned"] == 1
    stuck.refresh_from_db()
    assert stuck.status == HistoryImport.Status.FAILED
    assert "stopped before the end" in stuck.error
    assert admin_client.post(reverse("admin:rewards_historyimport_delete", args=[stuck.pk]), {"post": "yes"}).status_code == 302

    week = timezone.now() + dt.timedelta(days=8)
    assert imports.imports_tidy(now=week) == {"abandoned": 0, "files": 1, "reports": 1, "staged_rows": 0}
    checked.refresh_from_db()
    assert checked.report["errors"] == []
    assert checked.report["invalid"] == 1
    page = admin_client.get(reverse("admin:rewards_historyimport_change", args=[checked.pk])).text
    assert "+8613800138000" not in page
    assert "The lines to fix are listed for a week only" in page


def test_a_file_stays_while_a_run_of_this_week_uses_it(rules, store, member, upload, import_storage):
    checked, _page = upload(f"member_ref,occurred_at,amount\n{member.member_number},20260301,10\n", dry_run="on")
    HistoryImport.objects.filter(pk=checked.pk).update(requested_at=timezone.now() - dt.timedelta(days=8))
    stopped_import_of(checked)
    HistoryImport.objects.create(kind="purchases", file_name="x.csv", language="en", report={"errors": None})
    assert imports.imports_tidy() == {"abandoned": 0, "files": 0, "reports": 0, "staged_rows": 0}
    assert (import_storage / checked.file.name).exists()
