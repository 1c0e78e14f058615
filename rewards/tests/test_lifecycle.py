import datetime as dt
import os
import signal
import subprocess
import sys
import time
import zoneinfo
from pathlib import Path
from urllib.parse import quote

import pytest
import time_machine
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone, translation

from members.models import Notification
from members.tests.factories import MemberFactory, UserFactory
from rewards import lifecycle, services, tasks
from rewards.models import JobRun, LedgerEntry, MemberTier, PointsAccount, Tier
from rewards.selectors import ledger_drift
from rewards.tests.factories import programme_create

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
ROOT = Path(__file__).resolve().parents[2]


def at(*args: int, tz: zoneinfo.ZoneInfo = SHANGHAI) -> dt.datetime:
    return dt.datetime(*args, tzinfo=tz)


def bonuses() -> list[tuple[int, int, str]]:
    return list(
        LedgerEntry.objects.filter(kind="bonus")
        .order_by("account_id", "idempotency_key")
        .values_list("account_id", "points", "idempotency_key")
    )


def messages(kind: str) -> list[tuple[int, str]]:
    return list(Notification.objects.filter(kind=kind).order_by("member_id", "key").values_list("member_id", "key"))


# --- reminders before points expire -----------------------------------------------------


@pytest.fixture
def reminder_rules(db):
    return programme_create(expiry_months=12, expiry_reminder_days=30, expiry_last_chance_days=3)


def earn(store, member, receipt: str, amount: str, when: dt.datetime) -> None:
    with time_machine.travel(when, tick=False):
        services.purchase_record(store=store, receipt_number=receipt, amount=amount, member=member, occurred_at=when)


@pytest.mark.django_db
def test_reminders_at_the_n_day_and_last_chance_boundaries_once_each(reminder_rules, store):
    """Points earned on 30 June 2025 can be used until the end of 30 June 2026 (expiry at 1 July, 00:00)."""
    member = MemberFactory(email_consent=True)
    earn(store, member, "R-1", "100", at(2025, 6, 30, 10))
    earn(store, member, "R-2", "20", at(2025, 6, 30, 21))  # the same last day: one message for both

    def remind(now: dt.datetime) -> tuple[int, int]:
        result = lifecycle.points_expiry_remind_due(now=now)
        return result.expiring, result.last_chance

    assert remind(at(2026, 5, 31, 23, 59)) == (0, 0)  # 31 days left
    assert remind(at(2026, 6, 1, 0, 0)) == (1, 0)  # 30 days before the expiry
    assert remind(at(2026, 6, 1, 18)) == (0, 0)  # the same day again
    assert remind(at(2026, 6, 27, 23, 59)) == (0, 0)
    assert remind(at(2026, 6, 28, 0, 0)) == (0, 1)  # 3 days before the expiry
    assert remind(at(2026, 6, 30, 23)) == (0, 0)
    assert remind(at(2026, 7, 1, 0, 0)) == (0, 0)  # expired: nothing to remind of

    expiring, last_chance = Notification.objects.exclude(kind="points_earned").order_by("created_at", "pk")
    assert (expiring.kind, expiring.key) == ("points_expiring", "points_expiring:2026-06-30")
    assert expiring.subject == "120 points expire on June 30, 2026"
    assert "until the end of June 30, 2026" in expiring.body
    assert (last_chance.kind, last_chance.key) == ("points_last_chance", "points_last_chance:2026-06-30")
    assert last_chance.subject == "Last chance: 120 points expire on June 30, 2026"
    assert (expiring.email_status, last_chance.email_status, last_chance.sms_status) == ("pending", "pending", "no_consent")


@pytest.mark.django_db
def test_one_reminder_per_expiry_day_with_what_is_left(reminder_rules, store):
    member, spender, other = MemberFactory(), MemberFactory(), MemberFactory()
    earn(store, member, "R-1", "40", at(2025, 6, 10, 12))
    earn(store, member, "R-2", "60", at(2025, 6, 20, 12))
    earn(store, member, "R-3", "70", at(2025, 9, 1, 12))  # outside the window
    earn(store, spender, "R-4", "50", at(2025, 6, 10, 12))
    with time_machine.travel(at(2025, 7, 1, 12), tick=False):
        services.points_spend(member=spender, points=50, reason="Free cake")
    earn(store, other, "R-5", "10", at(2025, 6, 25, 12))
    MemberFactory()  # no points at all

    result = lifecycle.points_expiry_remind_due(now=at(2026, 6, 1, 10))

    assert (result.expiring, result.last_chance) == (3, 0)
    assert messages("points_expiring") == [
        (member.pk, "points_expiring:2026-06-10"),
        (member.pk, "points_expiring:2026-06-20"),
        (other.pk, "points_expiring:2026-06-25"),
    ]
    assert Notification.objects.get(key="points_expiring:2026-06-20").subject.startswith("60 points")


@pytest.mark.django_db
def test_points_first_seen_in_the_last_days_get_only_the_last_chance(reminder_rules, store):
    member = MemberFactory()
    earn(store, member, "R-1", "10", at(2025, 6, 30, 12))

    result = lifecycle.points_expiry_remind_due(now=at(2026, 6, 29, 9))

    assert (result.expiring, result.last_chance) == (0, 1)
    assert messages("points_expiring") == []


@pytest.mark.django_db
def test_zero_days_sends_no_reminders(store):
    programme_create(expiry_reminder_days=0, expiry_last_chance_days=0)
    earn(store, MemberFactory(), "R-1", "10", at(2025, 6, 30, 12))

    assert lifecycle.points_expiry_remind_due(now=at(2026, 6, 30, 9)) == lifecycle.ReminderResult()
    assert not Notification.objects.exclude(kind="points_earned").exists()


@pytest.mark.django_db
def test_the_expiry_day_is_counted_in_the_programmes_time_zone_across_a_daylight_saving_change(store):
    programme_create(tz="America/New_York", expiry_months=12, expiry_reminder_days=1, expiry_last_chance_days=0)
    member = MemberFactory()
    # Earned on 8 March 2025 in New York: usable until the end of 8 March 2026, the day clocks go forward.
    earn(store, member, "R-1", "10", at(2025, 3, 8, 20, tz=NEW_YORK))

    # 04:30 UTC on 8 March is still 7 March in New York (EST), so it is not the last day yet.
    assert lifecycle.points_expiry_remind_due(now=at(2026, 3, 8, 4, 30, tz=dt.UTC)).expiring == 0
    assert lifecycle.points_expiry_remind_due(now=at(2026, 3, 8, 5, 30, tz=dt.UTC)).expiring == 1
    assert messages("points_expiring") == [(member.pk, "points_expiring:2026-03-08")]


@pytest.mark.django_db
def test_the_reminder_task_records_its_runs(reminder_rules, store):
    earn(store, MemberFactory(), "R-1", "10", at(2025, 6, 30, 12))

    with time_machine.travel(at(2026, 6, 15, 10), tick=False):
        first = tasks.remind_expiring_points.delay().get()
        second = tasks.remind_expiring_points.delay().get()

    assert (first, second) == ({"expiring": 1, "last_chance": 0}, {"expiring": 0, "last_chance": 0})
    runs = JobRun.objects.filter(job="remind_expiring_points").order_by("pk")
    assert [(run.status, run.counts) for run in runs] == [("done", first), ("done", second)]
    assert all(run.duration is not None for run in runs)


# --- birthday bonuses ----------------------------------------------------------------------


@pytest.fixture
def birthday_rules(db):
    return programme_create(birthday_bonus_points=50)


def born(day: dt.date, **fields: object):
    return MemberFactory(birthday=day, **fields)


@pytest.mark.django_db
def test_a_birthday_bonus_is_granted_once_and_explained(birthday_rules):
    today = timezone.now().astimezone(SHANGHAI).date()
    member = born(today.replace(year=1992), name="Li Na", email_consent=False)
    born(today.replace(year=1992) + dt.timedelta(days=1))  # not today

    first = lifecycle.birthday_bonuses_grant()
    second = lifecycle.birthday_bonuses_grant()

    assert (first.members, first.points) == (1, 50)
    assert (second.members, second.points) == (0, 0)
    assert bonuses() == [(member.pk, 50, f"birthday:{today.year}")]
    entry = LedgerEntry.objects.get(kind="bonus")
    assert entry.explanation == f"Happy birthday! Your {today.year} birthday bonus: 50 pts"
    assert entry.lot.status == "available"
    assert entry.lot.expires_at is not None
    member.points.refresh_from_db()
    assert (member.points.available, member.points.lifetime_earned) == (50, 50)
    greeting = Notification.objects.get()
    assert (greeting.kind, greeting.key, greeting.subject) == (
        "birthday_bonus",
        f"birthday_bonus:{today.year}",
        "Happy birthday, Li Na!",
    )
    assert greeting.email_status == "no_consent"  # no consent: the points and the inbox message all the same
    assert ledger_drift() == []


@pytest.mark.django_db
def test_the_bonus_is_the_tier_s_unless_the_invitation_has_ended(birthday_rules):
    today = timezone.now().astimezone(SHANGHAI).date()
    day = today.replace(year=1992)
    programme = birthday_rules.programme
    gold = Tier.objects.create(
        programme=programme,
        code="gold",
        name="Gold",
        name_zh_hans="金卡",
        rank=2,
        entry_threshold=1000,
        retain_threshold=800,
        birthday_bonus_points=200,
    )
    silver = Tier.objects.create(
        programme=programme,
        code="silver",
        name="Silver",
        rank=1,
        entry_threshold=100,
        retain_threshold=80,
        birthday_bonus_points=0,
    )
    vip = Tier.objects.create(
        programme=programme,
        code="vip",
        name="VIP",
        rank=3,
        entry_threshold=0,
        retain_threshold=0,
        birthday_bonus_points=500,
        invitation_only=True,
    )
    in_gold, in_silver, plain = born(day), born(day), born(day)
    invited, invitation_over = born(day), born(day)
    MemberTier.objects.create(member=in_gold, tier=gold)
    MemberTier.objects.create(member=in_silver, tier=silver)  # this tier gives no birthday bonus
    MemberTier.objects.create(member=invited, tier=vip, invited_until=today)
    MemberTier.objects.create(member=invitation_over, tier=vip, invited_until=today - dt.timedelta(days=1))

    result = lifecycle.birthday_bonuses_grant()

    assert bonuses() == sorted(
        [
            (in_gold.pk, 200, f"birthday:{today.year}"),
            (plain.pk, 50, f"birthday:{today.year}"),
            (invited.pk, 500, f"birthday:{today.year}"),
            (invitation_over.pk, 50, f"birthday:{today.year}"),
        ]
    )
    assert (result.members, result.points) == (4, 800)
    assert not Notification.objects.filter(member=in_silver).exists()
    gold_entry = LedgerEntry.objects.get(account_id=in_gold.pk, kind="bonus")
    assert gold_entry.explanation == f"Happy birthday! Your {today.year} birthday bonus as a Gold member: 200 pts"
    with translation.override("zh-hans"):
        assert "金卡" in gold_entry.explanation
    with translation.override("ko"):
        assert "Gold" in gold_entry.explanation  # no Korean name given: the English one
    assert ledger_drift() == []


@pytest.mark.django_db
def test_birthdays_across_the_year_end_in_the_programmes_time_zone(birthday_rules):
    eve, new_year = born(dt.date(1990, 12, 31)), born(dt.date(1990, 1, 1))

    with time_machine.travel(at(2026, 1, 1, 9), tick=False):
        lifecycle.birthday_bonuses_grant()
    # 23:30 on New Year's Eve in Shanghai, then 00:30 on New Year's Day (still 31 December in UTC).
    with time_machine.travel(at(2026, 12, 31, 23, 30), tick=False):
        lifecycle.birthday_bonuses_grant()
        lifecycle.birthday_bonuses_grant()
    with time_machine.travel(at(2027, 1, 1, 0, 30), tick=False):
        assert dt.datetime.now(dt.UTC).date() == dt.date(2026, 12, 31)
        lifecycle.birthday_bonuses_grant()
        lifecycle.birthday_bonuses_grant()

    assert bonuses() == [(eve.pk, 50, "birthday:2026"), (new_year.pk, 50, "birthday:2026"), (new_year.pk, 50, "birthday:2027")]
    assert messages("birthday_bonus") == [
        (eve.pk, "birthday_bonus:2026"),
        (new_year.pk, "birthday_bonus:2026"),
        (new_year.pk, "birthday_bonus:2027"),
    ]
    assert ledger_drift() == []


@pytest.mark.django_db
def test_a_29_february_birthday_is_kept_on_28_february_in_other_years(birthday_rules):
    leapling, feb_28 = born(dt.date(2004, 2, 29)), born(dt.date(2001, 2, 28))

    granted = {
        day: lifecycle.birthday_bonuses_grant(today=day).members
        for day in [dt.date(2027, 2, 28), dt.date(2027, 3, 1), dt.date(2028, 2, 28), dt.date(2028, 2, 29), dt.date(2028, 3, 1)]
    }

    assert granted == {
        dt.date(2027, 2, 28): 2,
        dt.date(2027, 3, 1): 0,
        dt.date(2028, 2, 28): 1,
        dt.date(2028, 2, 29): 1,
        dt.date(2028, 3, 1): 0,
    }
    assert bonuses() == [
        (leapling.pk, 50, "birthday:2027"),
        (leapling.pk, 50, "birthday:2028"),
        (feb_28.pk, 50, "birthday:2027"),
        (feb_28.pk, 50, "birthday:2028"),
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("utc", "birthday"),
    [
        # Clocks go forward on 8 March 2026: 04:30 UTC is 00:30 on 9 March (EDT), not 23:30 on 8 March.
        (dt.datetime(2026, 3, 9, 4, 30, tzinfo=dt.UTC), dt.date(1990, 3, 9)),
        (dt.datetime(2026, 3, 9, 3, 30, tzinfo=dt.UTC), dt.date(1990, 3, 8)),
        # Clocks go back on 1 November 2026: 04:30 UTC is 23:30 on 1 November (EST), not 00:30 on 2 November.
        (dt.datetime(2026, 11, 2, 4, 30, tzinfo=dt.UTC), dt.date(1990, 11, 1)),
        (dt.datetime(2026, 11, 2, 5, 30, tzinfo=dt.UTC), dt.date(1990, 11, 2)),
    ],
)
def test_the_birthday_is_the_programmes_day_across_daylight_saving_changes(utc, birthday):
    programme_create(tz="America/New_York", birthday_bonus_points=50)
    members = {
        day: born(dt.date(1990, day.month, day.day))
        for day in [dt.date(1990, 3, 8), dt.date(1990, 3, 9), dt.date(1990, 11, 1), dt.date(1990, 11, 2)]
    }

    with time_machine.travel(utc, tick=False):
        result = lifecycle.birthday_bonuses_grant()

    assert result.members == 1
    assert bonuses() == [(members[birthday].pk, 50, "birthday:2026")]
    # Points from a New York birthday expire at local midnight, whatever the clocks did.
    expires_at = LedgerEntry.objects.get(kind="bonus").lot.expires_at.astimezone(NEW_YORK)
    assert (expires_at.hour, expires_at.minute) == (0, 0)


@pytest.mark.django_db
def test_closed_members_and_members_without_a_birthday_get_nothing(birthday_rules):
    today = timezone.now().astimezone(SHANGHAI).date()
    closed = born(today.replace(year=1992))
    type(closed).objects.filter(pk=closed.pk).update(status="closed")
    MemberFactory()

    assert lifecycle.birthday_bonuses_grant() == lifecycle.BirthdayResult()
    assert not PointsAccount.objects.exists()


@pytest.mark.django_db
def test_a_bonus_for_a_member_who_owes_points_repays_the_debt_first(birthday_rules, store):
    today = timezone.now().astimezone(SHANGHAI).date()
    member = born(today.replace(year=1992))
    sale = services.purchase_record(store=store, receipt_number="R-1", amount="30", member=member).purchase
    services.points_spend(member=member, points=30, reason="Free cake")
    services.purchase_return(purchase=sale, return_number="X-1", amount="30")
    member.points.refresh_from_db()
    assert member.points.owed == 30

    lifecycle.birthday_bonuses_grant()

    member.points.refresh_from_db()
    assert (member.points.owed, member.points.available) == (0, 20)
    assert ledger_drift() == []


@pytest.mark.django_db
def test_the_birthday_task_runs_in_chunks_and_records_its_runs(birthday_rules):
    today = timezone.now().astimezone(SHANGHAI).date()
    members = [born(today.replace(year=1992)) for _ in range(5)]

    assert lifecycle.birthday_bonuses_grant(chunk=2) == lifecycle.BirthdayResult(members=5, points=250)
    assert tasks.grant_birthday_bonuses.delay().get() == {"members": 0, "points": 0}

    assert [m for m, _p, _k in bonuses()] == sorted(m.pk for m in members)
    run = JobRun.objects.get(job="grant_birthday_bonuses")
    assert (run.status, run.counts) == ("done", {"members": 0, "points": 0})


@pytest.mark.django_db
def test_a_run_killed_part_way_is_finished_by_the_next_without_double_work(birthday_rules, monkeypatch):
    """Given a run that dies in its second chunk (the first committed), the re-delivered task does the rest once."""
    today = timezone.now().astimezone(SHANGHAI).date()
    members = [born(today.replace(year=1992)) for _ in range(5)]
    real_notify, calls = lifecycle.notify, []

    def dies_on_the_third(**kwargs):
        calls.append(kwargs["member"].pk)
        if len(calls) == 3:
            raise SystemExit("worker killed")
        return real_notify(**kwargs)

    monkeypatch.setattr(lifecycle, "notify", dies_on_the_third)
    with pytest.raises(SystemExit):
        lifecycle.birthday_bonuses_grant(chunk=2)
    assert len(bonuses()) == 2  # the first chunk, with its messages; the second rolled back whole
    assert Notification.objects.count() == 2

    monkeypatch.setattr(lifecycle, "notify", real_notify)
    again = lifecycle.birthday_bonuses_grant(chunk=2)

    assert (again.members, again.points) == (3, 150)
    assert [m for m, _p, _k in bonuses()] == sorted(m.pk for m in members)
    assert sorted(messages("birthday_bonus")) == sorted((m.pk, f"birthday_bonus:{today.year}") for m in members)
    assert ledger_drift() == []


@pytest.mark.django_db
def test_a_reminder_run_killed_part_way_is_finished_by_the_next(reminder_rules, store, monkeypatch):
    members = [MemberFactory() for _ in range(3)]
    for i, member in enumerate(members):
        earn(store, member, f"R-{i}", "10", at(2025, 6, 30, 12))
    real_notify, calls = lifecycle.notify, []

    def dies_on_the_second(**kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise SystemExit("worker killed")
        return real_notify(**kwargs)

    monkeypatch.setattr(lifecycle, "notify", dies_on_the_second)
    with pytest.raises(SystemExit):
        lifecycle.points_expiry_remind_due(now=at(2026, 6, 15, 10), chunk=1)
    monkeypatch.setattr(lifecycle, "notify", real_notify)

    assert lifecycle.points_expiry_remind_due(now=at(2026, 6, 15, 10), chunk=1).expiring == 2
    assert [m for m, _k in messages("points_expiring")] == [m.pk for m in members]


# --- a real worker killed mid-run -------------------------------------------------------------


def _worker(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "loyalty_site", "worker", "--pool=solo", "--concurrency=1", "--loglevel=INFO"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _worker_env(folder: Path) -> dict[str, str]:
    db = connection.settings_dict
    socket = db["HOST"].startswith("/")
    host = "" if socket else db["HOST"]
    port = f":{db['PORT']}" if db["PORT"] and not socket else ""
    password = f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else ""
    query = f"?host={quote(db['HOST'])}" if socket else ""
    return {
        **os.environ,
        "LOYALTY_ENV": "test",
        "CELERY_TASK_ALWAYS_EAGER": "0",
        "CELERY_BROKER_URL": "filesystem://",
        "CELERY_FILESYSTEM_FOLDER": str(folder),
        "DATABASE_URL": f"postgres://{db['USER']}{password}@{host}{port}/{db['NAME']}{query}",
    }


def _wait_for(condition, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_run_leaves_the_task_to_the_next_one_without_double_work(birthday_rules, store, tmp_path):
    """Given a worker killed while granting birthday bonuses, the task delivered again grants each bonus once."""
    today = timezone.now().astimezone(SHANGHAI).date()
    first, second = born(today.replace(year=1992)), born(today.replace(year=1992))
    services.purchase_record(store=store, receipt_number="R-1", amount="10", member=second)
    env = _worker_env(tmp_path)

    def send_the_task() -> None:
        # As beat does, through the broker the workers read (this app may not import the site's broker setup).
        call = [sys.executable, "-m", "celery", "-A", "loyalty_site", "call", "rewards.tasks.grant_birthday_bonuses"]
        subprocess.run(call, cwd=ROOT, env=env, check=True, capture_output=True, timeout=60)

    running = JobRun.objects.filter(job="grant_birthday_bonuses", status="running")
    killed = _worker(env)
    try:
        # Hold the second member's account, so the run stops mid-way, holding its own locks.
        with transaction.atomic():
            PointsAccount.objects.select_for_update().get(member=second)
            send_the_task()
            started = _wait_for(running.exists)
            time.sleep(1)
            killed.send_signal(signal.SIGKILL)
            killed.wait(timeout=30)
    finally:
        if killed.poll() is None:
            killed.kill()
        killed_output = killed.communicate(timeout=30)[0]
    assert started, killed_output[-5000:]
    assert bonuses() == []  # the killed run's chunk never committed

    send_the_task()  # what the broker does with a task whose worker died before acknowledging it
    worker = _worker(env)
    try:
        finished = _wait_for(JobRun.objects.filter(job="grant_birthday_bonuses", status="done").exists)
    finally:
        worker.terminate()
        output = worker.communicate(timeout=30)[0]
    assert finished, output[-5000:]

    assert bonuses() == [(first.pk, 50, f"birthday:{today.year}"), (second.pk, 50, f"birthday:{today.year}")]
    assert Notification.objects.filter(kind="birthday_bonus").count() == 2
    assert sorted(JobRun.objects.filter(job="grant_birthday_bonuses").values_list("status", flat=True)) == ["done", "running"]
    assert ledger_drift() == []


# --- the admin ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_clock_runs_are_listed_read_only_in_the_admin(client, roles, birthday_rules):
    tasks.grant_birthday_bonuses.delay().get()
    run = JobRun.objects.get()
    client.force_login(UserFactory(role="Programme admin"))

    listing = client.get(reverse("admin:rewards_jobrun_changelist"), {"job": "grant_birthday_bonuses", "status": "done"})
    detail = client.get(reverse("admin:rewards_jobrun_change", args=[run.pk]))

    assert listing.status_code == 200
    assert "grant_birthday_bonuses" in listing.text
    assert detail.status_code == 200
    assert client.post(reverse("admin:rewards_jobrun_delete", args=[run.pk])).status_code == 403
    assert client.get(reverse("admin:rewards_jobrun_add")).status_code == 403
    assert JobRun.objects.count() == 1


# --- points earned -------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_purchase_leaves_one_inbox_message_in_the_members_language_and_sends_nothing(rules, store, mailoutbox):
    member = MemberFactory(language="zh-hans", email="mei@example.com", email_consent=True)

    with translation.override("en"):  # the cashier's language is not the member's
        first = services.purchase_record(store=store, receipt_number="R-1", amount="42", member=member)
        services.purchase_record(store=store, receipt_number="R-1", amount="42", member=member)  # a replay
    services.purchase_record(store=store, receipt_number="R-2", amount="10")  # anonymous: nobody to tell

    note = Notification.objects.get()
    assert (note.member, note.kind, note.key) == (member, "points_earned", f"earned:{first.entry.pk}")
    assert note.email_status == note.sms_status == Notification.Delivery.NOT_SENT
    with translation.override("zh-hans"):
        assert first.entry.explanation in note.body
    assert mailoutbox == []
