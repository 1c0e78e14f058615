import datetime as dt
import io
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from members.models import Member
from rewards.models import LedgerEntry, Purchase
from rewards.selectors import ledger_drift

pytestmark = pytest.mark.django_db


def write_csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "purchases.csv"
    path.write_text(text.strip() + "\n", encoding="utf-8")
    return path


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("import_purchases", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def known(db):
    from members import services

    return services.member_enrol(channel="counter", phone="13800138000", email="mei@example.com", external_ref="OLD-1")


def test_a_good_file_imports_and_a_rerun_changes_nothing(rules, store, known, tmp_path):
    recent = (timezone.localdate() - dt.timedelta(days=3)).strftime("%Y%m%d")
    path = write_csv(
        tmp_path,
        f"""
member_ref,occurred_at,amount,receipt_number,category
OLD-1,{recent},42.50,,coffee
{known.member_number},{recent},10,,coffee
mei@example.com,2026-01-05T09:30:00+08:00,5,R-7,
138 0013 8000,{recent},7.5,,
""",
    )
    out, _err = run(str(path), "--store", store.code)
    assert "4 purchases recorded" in out
    known.points.refresh_from_db()
    assert known.points.lifetime_earned == 42 + 10 + 5 + 7
    assert set(Purchase.objects.values_list("channel", flat=True)) == {"import"}

    out, _err = run(str(path), "--store", store.code)
    assert "0 purchases recorded, 4 already there" in out
    assert Purchase.objects.count() == 4
    assert ledger_drift() == []


def test_two_identical_rows_are_two_sales(rules, store, known, tmp_path):
    path = write_csv(tmp_path, "member_ref,occurred_at,amount\nOLD-1,20260301,22\nOLD-1,20260301,22\n")
    run(str(path), "--store", store.code)
    run(str(path), "--store", store.code)
    assert Purchase.objects.count() == 2


def test_bad_rows_are_reported_by_line_and_nothing_is_written(rules, store, known, tmp_path):
    path = write_csv(
        tmp_path,
        """
member_ref,occurred_at,amount
OLD-1,2026-03-01,10
nobody,2026-03-01,10
OLD-1,yesterday,10
OLD-1,2026-03-01,-4
OLD-1,2026-03-01,ten
""",
    )
    with pytest.raises(CommandError, match="4 invalid"):
        run(str(path), "--store", store.code)
    assert not Purchase.objects.exists()
    assert not LedgerEntry.objects.exists()


def test_the_error_report_names_each_line(rules, store, known, tmp_path, capsys):
    path = write_csv(tmp_path, "member_ref,occurred_at,amount\nOLD-1,2026-03-01,10\nnobody,2026-03-01,10\nOLD-1,2999-01-01,1\n")
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("import_purchases", str(path), "--store", store.code, stderr=err, stdout=io.StringIO())
    lines = err.getvalue().splitlines()
    assert lines[0].startswith("line 3:")
    assert "nobody" in lines[0]
    assert lines[1].startswith("line 4:")
    assert "future" in lines[1]


def test_skip_invalid_imports_the_good_rows(rules, store, known, tmp_path):
    path = write_csv(tmp_path, "member_ref,occurred_at,amount\nOLD-1,2026-03-01,10\nnobody,2026-03-01,10\n")
    out, err = run(str(path), "--store", store.code, "--skip-invalid")
    assert "1 purchases recorded" in out
    assert "line 3" in err
    assert Purchase.objects.count() == 1


def test_dry_run_writes_nothing(rules, store, known, tmp_path):
    path = write_csv(tmp_path, "member_ref,occurred_at,amount\nOLD-1,2026-03-01,10\n13900000001,2026-03-01,10\n")
    out, _err = run(str(path), "--store", store.code, "--dry-run", "--create-members")
    assert "Dry run" in out
    assert not Purchase.objects.exists()
    assert Member.objects.count() == 1


def test_unknown_phones_become_members_when_asked(rules, store, known, tmp_path):
    path = write_csv(tmp_path, "member_ref,occurred_at,amount\n139 0000 0001,2026-03-01,10\nnew@example.com,2026-03-01,5\n")
    out, _err = run(str(path), "--store", store.code, "--create-members")
    assert "2 members created" in out
    assert Member.objects.filter(phone="+8613900000001", enrolment_channel="import").exists()
    assert Member.objects.filter(email="new@example.com").exists()


def test_very_old_purchases_end_up_expired_with_their_entries(rules, store, known, tmp_path):
    path = write_csv(tmp_path, "member_ref,occurred_at,amount\nOLD-1,20200105,10\n")
    run(str(path), "--store", store.code)
    known.points.refresh_from_db()
    assert (known.points.available, known.points.lifetime_earned) == (0, 10)
    entry = LedgerEntry.objects.get(kind="expire")
    assert entry.points == -10
    assert ledger_drift() == []


def test_store_column_and_unknown_store(rules, store, known, tmp_path):
    path = write_csv(tmp_path, f"member_ref,occurred_at,amount,store\nOLD-1,20260301,10,{store.code}\nOLD-1,20260301,10,nope\n")
    with pytest.raises(CommandError):
        run(str(path))
    assert not Purchase.objects.exists()


def test_an_xlsx_file_with_real_dates(rules, store, known, tmp_path):
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(["member_ref", "occurred_at", "amount", "category"])
    sheet.append(["OLD-1", dt.datetime(2026, 3, 1, 9, 30), 42.5, "coffee"])
    sheet.append([13800138000, dt.date(2026, 3, 2), 10, None])
    path = tmp_path / "purchases.xlsx"
    book.save(path)
    out, _err = run(str(path), "--store", store.code)
    assert "2 purchases recorded" in out
    assert sorted(Purchase.objects.values_list("gross", flat=True)) == [10, 42.5]


@pytest.mark.parametrize(
    ("content", "message"),
    [("amount,occurred_at\n1,2026-01-01\n", "Missing columns: member_ref"), ("\xff\xfe", "UTF-8")],
)
def test_an_unreadable_file_is_a_clear_error(rules, store, tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(CommandError, match=message):
        run(str(path), "--store", store.code)


def test_dates_in_each_accepted_format(rules, store, known, tmp_path):
    path = write_csv(
        tmp_path,
        "member_ref,occurred_at,amount\nOLD-1,20260301,1\nOLD-1,2026-03-02,1\nOLD-1,2026-03-03T10:15,1\n"
        "OLD-1,2026-03-04 10:15:30,1\nOLD-1,2026-03-05T10:15:00+09:00,1\n",
    )
    run(str(path), "--store", store.code)
    local = sorted(
        p.astimezone(rules.programme.tz).strftime("%m-%d %H:%M") for p in Purchase.objects.values_list("occurred_at", flat=True)
    )
    assert local == ["03-01 00:00", "03-02 00:00", "03-03 10:15", "03-04 10:15", "03-05 09:15"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("OLD-1,20260301,10\n\\.\nOLD-1,20260302,10", "line 4: This row has 1 values"),  # COPY's end-of-data marker, as data
        ("OLD-1,20260301,10,extra", "4 values but the header names 3"),
        ("OLD-1,2024-01-05 BC,10", "is not a date"),
        ("OLD-1,0001-01-01,10", "is not a date"),
        ("OLD-1,20260301,1\x000", "NUL"),
    ],
)
def test_malformed_rows_are_line_errors_and_nothing_is_written(rules, store, known, tmp_path, body, message):
    path = tmp_path / "p.csv"
    path.write_text(f"member_ref,occurred_at,amount\nOLD-1,20260301,5\n{body}\n", encoding="utf-8")
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("import_purchases", str(path), "--store", store.code, stdout=io.StringIO(), stderr=err)
    assert message in err.getvalue()
    assert not Purchase.objects.exists()


def test_an_empty_file_is_a_clear_error(rules, store, tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("", encoding="utf-8")
    with pytest.raises(CommandError, match="empty"):
        run(str(path), "--store", store.code)


def test_one_receipt_twice_with_different_details_is_refused(rules, store, known, tmp_path):
    path = write_csv(tmp_path, "member_ref,occurred_at,amount,receipt_number\nOLD-1,20260301,10,R-1\nOLD-1,20260301,11,R-1\n")
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("import_purchases", str(path), "--store", store.code, stdout=io.StringIO(), stderr=err)
    assert "line 3" in err.getvalue()
    assert not Purchase.objects.exists()


def test_a_closed_store_cannot_receive_an_import(rules, store, known, tmp_path):
    store.is_active = False
    store.save()
    path = write_csv(tmp_path, "member_ref,occurred_at,amount\nOLD-1,20260301,10\n")
    with pytest.raises(CommandError):
        run(str(path), "--store", store.code)
    assert not Purchase.objects.exists()


def test_points_past_their_validity_are_written_expired_as_the_clock_would_expire_them(
    rules, store, known, member, tmp_path, monkeypatch
):
    from rewards import bulk, services
    from rewards.models import LotAllocation, PointsLot

    long_ago = timezone.now() - dt.timedelta(days=500)
    sale = services.purchase_input(store=store, receipt_number="CLOCK", amount="10", member=member, occurred_at=long_ago)
    bulk.purchases_record_bulk([sale], fire_hooks=False)
    services.points_expire_due()
    # The import writes the expiry itself, in its own transaction: the clock's job finds nothing left to do.
    monkeypatch.setattr(services, "points_expire_due", lambda **kwargs: None)
    path = write_csv(tmp_path, f"member_ref,occurred_at,amount\nOLD-1,{long_ago.isoformat()},10\n")
    run(str(path), "--store", store.code)
    run(str(path), "--store", store.code)  # a re-run writes no second expiry

    def history(who):
        entry = LedgerEntry.objects.get(kind="expire", account_id=who.pk)
        lot = PointsLot.objects.get(account_id=who.pk)
        who.points.refresh_from_db()
        return {
            "entry": [getattr(entry, f) for f in ("points", "occurred_at", "detail", "source_ref", "reason", "owed_points")],
            "lot": (lot.status, lot.remaining, lot.points, entry.lot_id == lot.id),
            "allocations": list(LotAllocation.objects.filter(lot=lot, entry=entry).values_list("kind", "points")),
            "balances": (who.points.available, who.points.pending, who.points.lifetime_earned),
        }

    assert history(known) == history(member)
    assert history(known)["lot"] == ("expired", 0, 10, True)
    assert ledger_drift() == []


def test_a_row_with_several_problems_is_reported_for_the_first_of_them(rules, store, known, tmp_path):
    path = write_csv(
        tmp_path,
        f"member_ref,occurred_at,amount,store\nnobody,yesterday,-1,nope\nnobody,2999-01-01,-1,{store.code}\n"
        f"nobody,20260301,1.234,{store.code}\n",
    )
    err = io.StringIO()
    with pytest.raises(CommandError, match="3 invalid"):
        call_command("import_purchases", str(path), stdout=io.StringIO(), stderr=err)
    assert err.getvalue().splitlines() == [
        "line 2: No store has the code “nope”.",
        "line 3: The purchase time cannot be in the future.",
        "line 4: Use at most two decimal places.",
    ]


def test_a_reference_is_an_external_ref_before_a_member_number(rules, store, known, tmp_path):
    from members import services

    other = services.member_enrol(channel="counter", phone="13800138001", external_ref=known.member_number)
    path = write_csv(tmp_path, f"member_ref,occurred_at,amount\n{known.member_number},20260301,10\nOLD-1,20260301,10\n")
    run(str(path), "--store", store.code)
    assert sorted(Purchase.objects.values_list("member_id", flat=True)) == sorted([other.pk, known.pk])


def test_verbosity_2_tells_how_long_each_phase_took(rules, store, known, tmp_path):
    path = write_csv(tmp_path, "member_ref,occurred_at,amount\nOLD-1,20260301,10\n")
    out, _err = run(str(path), "--store", store.code, "--verbosity", "2")
    phases = [line.split(":")[0] for line in out.splitlines() if line.endswith(" s")]
    assert phases == ["reading the file", "checking every row", "recording purchases", "settling old points"]


def _chunk_file(tmp_path: Path, members: list[Member]) -> Path:
    recent = (timezone.localdate() - dt.timedelta(days=3)).strftime("%Y%m%d")
    a, b, c = (m.member_number for m in members)
    return write_csv(
        tmp_path,
        f"""
member_ref,occurred_at,amount,receipt_number,category
{a},{recent},10,A-1,coffee
{a},{recent},12,A-2,
{a},20200105,30,A-3,
{b},{recent},8,B-1,
{c},{recent},20,C-1,
{c},{recent},20,C-1,
,{recent},5,ANON-1,
""",
    )


def _ledger_state() -> tuple[object, ...]:
    from rewards.models import PointsAccount

    return (
        sorted(PointsAccount.objects.values_list("member_id", "available", "pending", "lifetime_earned")),
        sorted(LedgerEntry.objects.values_list("account_id", "kind", "points", "purchase__receipt_number")),
        sorted(Purchase.objects.values_list("receipt_number", "member_id", "points_earned")),
    )


def test_writing_a_chunk_of_members_at_a_time_changes_nothing_in_the_outcome(rules, store, tmp_path, monkeypatch):
    import dataclasses

    from django.db import connection, transaction

    from members.tests.factories import MemberFactory
    from rewards import imports

    members = sorted(MemberFactory.create_batch(3), key=lambda m: m.pk)
    path = _chunk_file(tmp_path, members)
    chunks: list[set[int | None]] = []
    real = imports._write_chunk

    def watched(run, chunk, report):
        with connection.cursor() as cursor:
            cursor.execute("SELECT DISTINCT member_id FROM rewards_import_staging WHERE run = %s AND chunk = %s", [run, chunk])
            chunks.append({member_id for (member_id,) in cursor.fetchall()})
        real(run, chunk, report)

    monkeypatch.setattr(imports, "_write_chunk", watched)
    outcomes, written = {}, []
    for rows in (1, 10_000):
        monkeypatch.setattr(imports, "WRITE_CHUNK_ROWS", rows)
        chunks.clear()
        written.clear()
        with transaction.atomic():
            report = imports.import_purchases(path, store=store, written=lambda done, total: written.append((done, total)))
            outcomes[rows] = (_ledger_state(), dataclasses.asdict(report), ledger_drift())
            transaction.set_rollback(True)
        # Each member's rows in one chunk, chunks in member order (the anonymous sale last).
        if rows == 1:
            assert chunks == [{members[0].pk}, {members[1].pk}, {members[2].pk}, {None}]
            assert written == [(3, 7), (4, 7), (6, 7), (7, 7)]
        else:
            assert chunks == [{members[0].pk, members[1].pk, members[2].pk, None}]
            assert written == [(7, 7)]

    assert outcomes[1] == outcomes[10_000]
    assert outcomes[1][1]["purchases_created"] == 6
    # What members earned; the anonymous sale's points were credited to nobody.
    assert outcomes[1][1]["points_awarded"] == sum(points for _a, kind, points, _r in outcomes[1][0][1] if kind == "earn")
    assert outcomes[1][1]["purchases_replayed"] == 1
    assert outcomes[1][2] == []
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM rewards_import_staging")
        assert cursor.fetchone() == (0,)


def test_an_import_stopped_part_way_is_completed_by_running_the_file_again(rules, store, tmp_path, monkeypatch):
    from django.db import connection

    from members.tests.factories import MemberFactory
    from rewards import imports

    members = sorted(MemberFactory.create_batch(3), key=lambda m: m.pk)
    path = _chunk_file(tmp_path, members)
    monkeypatch.setattr(imports, "WRITE_CHUNK_ROWS", 1)
    real, calls = imports._write_chunk, []

    def fails_on_the_second_chunk(run, chunk, report):
        calls.append(chunk)
        if len(calls) == 2:
            raise OSError("the worker was stopped")
        real(run, chunk, report)

    monkeypatch.setattr(imports, "_write_chunk", fails_on_the_second_chunk)
    with pytest.raises(OSError, match="stopped"):
        imports.import_purchases(path, store=store)
    # The first chunk (the first member's three sales) stands; nothing of the others.
    assert set(Purchase.objects.values_list("receipt_number", flat=True)) == {"A-1", "A-2", "A-3"}
    assert ledger_drift() == []
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM rewards_import_staging")
        assert cursor.fetchone() == (0,)

    monkeypatch.setattr(imports, "_write_chunk", real)
    report = imports.import_purchases(path, store=store)
    assert (report.purchases_created, report.purchases_replayed) == (3, 4)
    assert sorted(Purchase.objects.values_list("receipt_number", flat=True)) == ["A-1", "A-2", "A-3", "ANON-1", "B-1", "C-1"]
    assert LedgerEntry.objects.filter(kind="earn").count() == 5  # the anonymous sale earns nothing
    assert ledger_drift() == []


@pytest.mark.django_db(transaction=True)
def test_each_chunk_is_its_own_committed_transaction(rules, store, tmp_path, monkeypatch):
    """With real commits, not the savepoints of a test's transaction: each chunk stages and writes on its own."""
    from django.db import connection

    from members.tests.factories import MemberFactory
    from rewards import imports

    members = sorted(MemberFactory.create_batch(3), key=lambda m: m.pk)
    monkeypatch.setattr(imports, "WRITE_CHUNK_ROWS", 1)
    commits = []
    real = imports._write_chunk

    def counted(*args):
        real(*args)
        commits.append(connection.in_atomic_block)

    monkeypatch.setattr(imports, "_write_chunk", counted)
    report = imports.import_purchases(_chunk_file(tmp_path, members), store=store)
    assert commits == [False, False, False, False]  # each chunk committed before the next began
    assert (report.purchases_created, report.purchases_replayed) == (6, 1)
    assert ledger_drift() == []
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM rewards_import_staging")
        assert cursor.fetchone() == (0,)
