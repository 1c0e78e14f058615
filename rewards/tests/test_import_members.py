import io
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from members import services as member_services
from members.models import Member
from rewards.models import LedgerEntry
from rewards.selectors import ledger_drift

pytestmark = pytest.mark.django_db
HEADER = "external_ref,phone,email,name,birthday,opening_points,opening_points_earned_on"


def run(tmp_path: Path, body: str, *args: str) -> str:
    path = tmp_path / "members.csv"
    path.write_text(f"{HEADER}\n{body.strip()}\n", encoding="utf-8")
    out = io.StringIO()
    call_command("import_members", str(path), *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_members_are_created_with_explained_opening_balances_and_a_rerun_changes_nothing(rules, tmp_path):
    body = """
OLD-1,138 0013 8000,Mei@Example.com,王芳,1990-05-01,120,2026-10-01
OLD-2,,kim@example.com,김민준,,0,
"""
    out = run(tmp_path, body)
    assert "2 members created" in out
    assert "120 opening points granted" in out
    mei = Member.objects.get(external_ref="OLD-1")
    assert (str(mei.phone), mei.email, mei.enrolment_channel) == ("+8613800138000", "mei@example.com", "import")
    entry = LedgerEntry.objects.get(kind="opening")
    assert entry.points == 120
    assert entry.explanation == "Opening balance brought over from your previous card, earned on Oct. 1, 2026"
    assert entry.lot.expires_at.astimezone(rules.programme.tz).date().isoformat() == "2027-10-02"

    out = run(tmp_path, body)
    assert "0 members created, 2 updated" in out
    assert "0 opening points granted" in out
    assert LedgerEntry.objects.filter(kind="opening").count() == 1
    assert ledger_drift() == []


def test_existing_members_are_updated_not_duplicated(rules, tmp_path):
    member = member_services.member_enrol(channel="counter", phone="13800138000")
    run(tmp_path, ",13800138000,mei@example.com,Mei,,0,")
    member.refresh_from_db()
    assert (member.email, member.name) == ("mei@example.com", "Mei")
    assert Member.objects.count() == 1


def test_bad_rows_are_reported_by_line_and_nothing_is_written(rules, tmp_path):
    member_services.member_enrol(channel="counter", phone="13800138000")
    member_services.member_enrol(channel="counter", email="kim@example.com")
    body = """
OLD-1,13900000001,,Good,,10,2026-01-01
OLD-2,12,,Bad phone,,,
OLD-3,,,No contact,,,
OLD-4,13800138000,kim@example.com,Two members,,,
OLD-5,13900000005,,Negative,,-3,
OLD-1,13900000006,,Same ref as line 2,,,
"""
    with pytest.raises(CommandError, match="5 invalid"):
        run(tmp_path, body)
    assert Member.objects.count() == 2
    assert not LedgerEntry.objects.exists()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("X" * 65 + ",13900000001,,Long ref,,0,", "longer than 64"),
        ("OLD-9,13900000001,,Rich,,99999999999999999999,", "opening_points"),
        ("OLD-9,13900000001," + "a" * 250 + "@example.com,Long mail,,0,", "email"),
    ],
)
def test_member_rows_out_of_bounds_are_line_errors(rules, tmp_path, body, message):
    path = tmp_path / "members.csv"
    path.write_text(f"{HEADER}\n{body}\n", encoding="utf-8")
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("import_members", str(path), stdout=io.StringIO(), stderr=err)
    assert "line 2" in err.getvalue()
    assert message in err.getvalue()
    assert not Member.objects.exists()


def test_two_rows_for_one_existing_member_are_refused(rules, tmp_path):
    member_services.member_enrol(channel="counter", phone="13800138000", email="mei@example.com", external_ref="OLD-1")
    with pytest.raises(CommandError, match="1 invalid"):
        run(tmp_path, "OLD-1,,,Mei,,10,\n,,mei@example.com,Mei,,20,")
    assert not LedgerEntry.objects.exists()


def test_opening_balances_read_nothing_from_the_database_while_copying(rules, monkeypatch):
    """The programme's snapshot may be renewed (a database read) at any moment: never in the middle of a COPY.

    A read on the copying connection waits for the COPY, which waits for the read: a large file hung.
    """
    from django.db import connection
    from psycopg import pq

    from members.tests.factories import MemberFactory
    from rewards import bulk, config, services

    real = services.rules_in_force

    def renewing(**kwargs):
        assert connection.connection.info.transaction_status != pq.TransactionStatus.ACTIVE, "read while copying"
        config.forget()  # as if the snapshot had just grown old
        return real(**kwargs)

    monkeypatch.setattr(services, "rules_in_force", renewing)
    members = MemberFactory.create_batch(3)
    balances = [bulk.OpeningBalance(member_id=m.pk, points=10, earned_at=rules.effective_from) for m in members]
    assert bulk.opening_balances_grant(balances) == 30
    assert ledger_drift() == []
