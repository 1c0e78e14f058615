import datetime as dt
import zoneinfo

import pytest
import time_machine
from django.core.management import call_command
from django.utils import timezone
from django.utils.formats import date_format

from rewards import services, tasks
from rewards.models import LedgerEntry, PointsLot, ProgrammeRules
from rewards.selectors import ledger_drift

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")


def rules_with(**fields: object) -> ProgrammeRules:
    return ProgrammeRules(**fields)


@pytest.mark.parametrize(
    ("earned", "months", "last_valid_day"),
    [
        (dt.datetime(2026, 1, 31, 15, tzinfo=SHANGHAI), 1, dt.date(2026, 2, 28)),
        (dt.datetime(2028, 1, 31, 15, tzinfo=SHANGHAI), 1, dt.date(2028, 2, 29)),
        (dt.datetime(2026, 11, 15, 9, tzinfo=SHANGHAI), 12, dt.date(2027, 11, 15)),
        # 23:30 UTC on 31 Dec is already 1 Jan in Shanghai: the local date counts.
        (dt.datetime(2026, 12, 31, 23, 30, tzinfo=dt.UTC), 2, dt.date(2027, 3, 1)),
    ],
)
def test_months_after_earning_end_at_local_midnight(earned, months, last_valid_day):
    rules = rules_with(expiry_policy=ProgrammeRules.Expiry.MONTHS, expiry_months=months)
    expires = rules.expires_at(earned, SHANGHAI)
    assert expires == dt.datetime.combine(last_valid_day + dt.timedelta(days=1), dt.time(), tzinfo=SHANGHAI)


@pytest.mark.parametrize(("years", "expected_year"), [(0, 2026), (1, 2027), (2, 2028)])
def test_calendar_year_expiry(years, expected_year):
    rules = rules_with(expiry_policy=ProgrammeRules.Expiry.YEAR_END, expiry_years=years)
    expires = rules.expires_at(dt.datetime(2026, 3, 1, tzinfo=SHANGHAI), SHANGHAI)
    assert expires == dt.datetime(expected_year + 1, 1, 1, tzinfo=SHANGHAI)


def test_never_expiring_points():
    rules = rules_with(expiry_policy=ProgrammeRules.Expiry.NEVER)
    assert rules.expires_at(timezone.now(), SHANGHAI) is None


def test_expiry_across_a_daylight_saving_change_is_local_midnight():
    rules = rules_with(expiry_policy=ProgrammeRules.Expiry.MONTHS, expiry_months=1)
    # Earned before the March change in New York; expires after it, at local midnight.
    expires = rules.expires_at(dt.datetime(2026, 2, 8, 12, tzinfo=NEW_YORK), NEW_YORK)
    assert expires == dt.datetime(2026, 3, 9, tzinfo=NEW_YORK)
    assert expires.utcoffset() == dt.timedelta(hours=-4)


@pytest.mark.django_db
def test_expiry_writes_one_explained_entry_per_lot_and_is_safe_to_run_twice(rules, store, member):
    old = services.purchase_record(
        store=store, receipt_number="R-1", amount="80", member=member, occurred_at=timezone.now() - dt.timedelta(days=300)
    )
    services.points_spend(member=member, points=30, reason="Free cake")
    services.purchase_record(store=store, receipt_number="R-2", amount="20", member=member)
    later = timezone.now() + dt.timedelta(days=100)  # the old points' year is over, the new ones' is not

    first = services.points_expire_due(now=later)
    second = services.points_expire_due(now=later)

    assert (first.lots, first.points, first.accounts) == (1, 50, 1)
    assert second.lots == 0
    entry = LedgerEntry.objects.get(kind="expire")
    assert entry.points == -50
    assert entry.lot == old.entry.lot
    earned_on = date_format(old.purchase.occurred_at.astimezone(SHANGHAI).date(), "DATE_FORMAT")
    assert entry.explanation == f"50 pts earned on {earned_on} reached the end of their validity"
    member.points.refresh_from_db()
    assert (member.points.available, member.points.pending) == (20, 0)
    assert ledger_drift() == []


@pytest.mark.django_db
def test_jobs_work_in_chunks_of_accounts(store):
    from members.tests.factories import MemberFactory
    from rewards.tests.factories import programme_create

    programme_create(pending_days=3)
    members = [MemberFactory() for _ in range(7)]
    for i, member in enumerate(members):
        services.purchase_record(store=store, receipt_number=f"R-{i}", amount="10", member=member)

    released = services.points_release_due(now=timezone.now() + dt.timedelta(days=4), chunk=3)

    assert (released.lots, released.points, released.accounts) == (7, 70, 7)
    assert not PointsLot.objects.filter(status="pending").exists()
    assert ledger_drift() == []


@pytest.mark.django_db
def test_the_beat_tasks_release_then_expire(store, member):
    from rewards.tests.factories import programme_create

    programme_create(pending_days=14)
    services.purchase_record(store=store, receipt_number="R-1", amount="10", member=member)
    services.purchase_record(
        store=store, receipt_number="R-2", amount="5", member=member, occurred_at=timezone.now() - dt.timedelta(days=400)
    )
    with time_machine.travel(timezone.now() + dt.timedelta(days=15)):
        assert tasks.release_pending_points.delay().get() == {"lots": 1, "points": 10, "accounts": 1}
        assert tasks.expire_points.delay().get() == {"lots": 1, "points": 5, "accounts": 1}
    member.points.refresh_from_db()
    assert (member.points.available, member.points.pending) == (10, 0)


@pytest.mark.django_db
def test_ledger_check_passes_on_a_clean_ledger_and_fails_on_drift(rules, store, member, capsys):
    from django.core.management.base import CommandError

    services.purchase_record(store=store, receipt_number="R-1", amount="10", member=member)
    call_command("ledger_check")
    assert "consistent" in capsys.readouterr().out

    type(member.points).objects.filter(pk=member.pk).update(available=11)  # a bug or a hand edit
    with pytest.raises(CommandError):
        call_command("ledger_check")
    assert "available 11 but lots hold 10" in capsys.readouterr().err


def test_the_schedule_is_defined_in_code_for_registered_tasks():
    from celery import current_app as app
    from django.conf import settings

    tasks_in_code = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert tasks_in_code == {
        "rewards.tasks.release_pending_points",
        "rewards.tasks.expire_points",
        "rewards.tasks.expire_vouchers",
        "rewards.tasks.remind_vouchers",
        "rewards.tasks.evaluate_tiers",
        "rewards.tasks.tidy_imports",
        "rewards.tasks.remind_expiring_points",
        "rewards.tasks.grant_birthday_bonuses",
        "rewards.tasks.requeue_notifications",
        "referrals.tasks.expire_referrals",
        "referrals.tasks.reward_referrals",
    }
    app.loader.import_default_modules()
    assert tasks_in_code <= set(app.tasks.keys())
    assert settings.CELERY_BEAT_SCHEDULER == "django_celery_beat.schedulers:DatabaseScheduler"
    # A worker killed mid-job leaves its task on the queue for another worker.
    assert (app.conf.task_acks_late, app.conf.task_reject_on_worker_lost, app.conf.worker_prefetch_multiplier) == (True, True, 1)


@pytest.mark.django_db
def test_ledger_check_catches_a_return_that_disagrees_with_its_entry(rules, store, member):
    from rewards.models import Return

    sale = services.purchase_record(store=store, receipt_number="R-1", amount="10", member=member).purchase
    services.purchase_return(purchase=sale, return_number="X-1", amount="5")
    assert ledger_drift() == []
    Return.objects.update(points_clawed_back=4)
    assert [d.problem for d in ledger_drift()] == [f"return {Return.objects.get().pk} took back 4 points but its entry says 5"]


@pytest.mark.django_db
def test_points_past_their_validity_cannot_be_spent_before_the_clock_runs(rules, store, member):
    services.purchase_record(
        store=store, receipt_number="R-1", amount="80", member=member, occurred_at=timezone.now() - dt.timedelta(days=400)
    )
    member.points.refresh_from_db()
    assert member.points.available == 80  # the hourly job has not run yet

    with pytest.raises(services.InsufficientPoints) as refusal:
        services.points_spend(member=member, points=30, reason="Free cake")

    assert refusal.value.facts == {"available": 0, "needed": 30}
    assert not LedgerEntry.objects.filter(kind="spend").exists()  # a refusal writes nothing; the clock expires them
    services.points_expire_due()
    member.points.refresh_from_db()
    assert (member.points.available, LedgerEntry.objects.filter(kind="expire").count()) == (0, 1)
    assert ledger_drift() == []
