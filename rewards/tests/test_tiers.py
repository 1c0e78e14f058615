"""Tiers: windows, upgrades on purchase, the evaluation and its grace period, invitations, progress, the API."""

import datetime as dt
import threading
import zoneinfo
from decimal import Decimal

import pytest
import time_machine
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.urls import reverse
from django.utils import timezone, translation
from rest_framework.test import APIClient

from members import services as member_services
from members.models import Notification
from members.tests.factories import MemberFactory, UserFactory
from rewards import imports, services, tasks, tiers
from rewards.models import JobRun, LedgerEntry, MemberTier, Programme, Tier, TierChange
from rewards.selectors import ledger_drift

pytestmark = pytest.mark.django_db
SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")


def tier_create(
    code: str,
    rank: int,
    entry: str,
    *,
    retain: str | None = None,
    metric: str = Tier.Metric.SPEND,
    window: str = Tier.Window.ROLLING,
    months: int = 12,
    multiplier: str = "1",
    grace: int = 30,
    invitation: bool = False,
) -> Tier:
    """Configure a tier as the admin does."""
    return Tier.objects.create(
        programme=Programme.objects.get(),
        code=code,
        name=code.title(),
        rank=rank,
        metric=metric,
        entry_threshold=Decimal(entry),
        retain_threshold=Decimal(entry if retain is None else retain),
        window=window,
        window_months=months,
        earn_multiplier=Decimal(multiplier),
        grace_days=grace,
        invitation_only=invitation,
    )


def buy(store, member, receipt: str, amount: str, *, at: dt.datetime | None = None, **sale: object) -> services.PurchaseResult:
    return services.purchase_record(store=store, receipt_number=receipt, amount=amount, member=member, occurred_at=at, **sale)


def local_today() -> dt.date:
    return timezone.localdate(timezone.now(), SHANGHAI)


def subjects(member, kind: str) -> list[str]:
    return list(Notification.objects.filter(member=member, kind=kind).order_by("pk").values_list("subject", flat=True))


def status_of(member) -> tuple[str | None, dt.date | None]:
    status = MemberTier.objects.get(member=member)
    return (status.tier.code if status.tier else None), status.missed_since


@pytest.fixture
def programme_admin(roles):
    return UserFactory(role="Programme admin")


# --- what counts, over which window -------------------------------------------------------


def test_each_kind_of_window_counts_its_own_days_in_the_programme_time_zone(rules, store, member):
    rolling = tier_create("rolling", 1, "10000", window=Tier.Window.ROLLING, months=6)
    year = tier_create("year", 2, "10000", window=Tier.Window.CALENDAR_YEAR)
    lifetime = tier_create("lifetime", 3, "10000", window=Tier.Window.LIFETIME)
    buy(store, member, "R-1", "10", at=dt.datetime(2024, 6, 15, 12, tzinfo=SHANGHAI))
    buy(store, member, "R-2", "20", at=dt.datetime(2025, 1, 1, 0, 10, tzinfo=SHANGHAI))  # still 2024 in UTC
    buy(store, member, "R-3", "40", at=dt.datetime(2025, 7, 1, 12, tzinfo=SHANGHAI))
    buy(store, member, "R-4", "80", at=dt.datetime(2025, 12, 31, 23, 50, tzinfo=SHANGHAI))

    def values(day: dt.date) -> list[Decimal]:
        return [tiers.tier_value(member, tier, today=day) for tier in (rolling, year, lifetime)]

    # Six months back from 31 December is 30 June: the window starts on 1 July.
    assert values(dt.date(2025, 12, 31)) == [Decimal("120.00"), Decimal("140.00"), Decimal("150.00")]
    assert values(dt.date(2026, 1, 1)) == [Decimal("80.00"), Decimal(0), Decimal("150.00")]
    assert values(dt.date(2024, 12, 31)) == [Decimal(0), Decimal("10.00"), Decimal("10.00")]


def test_spend_points_and_purchases_count_what_was_kept_not_what_was_returned(rules, store, member):
    spend = tier_create("spend", 1, "10000", window=Tier.Window.LIFETIME)
    points = tier_create("points", 2, "10000", window=Tier.Window.LIFETIME, metric=Tier.Metric.POINTS)
    purchases = tier_create("purchases", 3, "10000", window=Tier.Window.LIFETIME, metric=Tier.Metric.PURCHASES)
    kept = buy(store, member, "R-1", "100", discount="20").purchase  # pays 80, earns 80 points
    services.purchase_return(purchase=kept, return_number="X-1", amount="30")  # takes back 24 points
    returned = buy(store, member, "R-2", "10").purchase
    services.purchase_return(purchase=returned, return_number="X-2", amount="10")

    def values() -> list[Decimal]:
        return [tiers.tier_value(member, tier) for tier in (spend, points, purchases)]

    assert values() == [Decimal("50.00"), Decimal(56), Decimal(1)]
    services.points_spend(member=member, points=50, reason="Free coffee")
    assert values() == [Decimal("50.00"), Decimal(56), Decimal(1)]


# --- moving up ---------------------------------------------------------------------------


def test_the_purchase_that_crosses_a_threshold_moves_up_at_once_and_the_next_earns_more(rules, store, member):
    silver = tier_create("silver", 1, "100", multiplier="1.5")
    buy(store, member, "R-1", "80")
    assert tiers.tier_current(member) is None

    crossing = buy(store, member, "R-2", "30")

    assert tiers.tier_current(member) == silver
    assert crossing.entry.points == 30
    assert crossing.entry.explanation == "Receipt R-2: CN¥30.00 × 1 pt per CN¥1 = 30 pts"
    change = TierChange.objects.get()
    assert (change.reason, change.from_tier, change.to_tier) == ("upgrade", None, silver)
    assert change.detail == {"metric": "spend", "value": "110.00", "threshold": "100.00"}
    assert subjects(member, "tier_up") == ["Welcome to Silver"]
    assert "1.5 times the points" in Notification.objects.get(kind="tier_up").body

    following = buy(store, member, "R-3", "10")

    assert following.entry.points == following.purchase.points_earned == 15
    assert following.entry.explanation == "Receipt R-3: CN¥10.00 × 1 pt per CN¥1 × 1.5 for Silver = 15 pts"
    assert following.entry.detail["multiplier"] == "1.50"
    assert TierChange.objects.count() == 1
    assert Notification.objects.filter(kind="tier_up").count() == 1
    assert ledger_drift() == []


def test_a_big_purchase_goes_straight_to_the_highest_tier_reached(rules, store, member):
    tier_create("silver", 1, "100")
    gold = tier_create("gold", 2, "500")
    tier_create("vip", 3, "0", invitation=True)  # never reached by buying

    buy(store, member, "R-1", "600")

    assert tiers.tier_current(member) == gold
    assert list(TierChange.objects.values_list("from_tier", "to_tier__code")) == [(None, "gold")]


def test_the_explanation_names_the_tier_in_the_readers_language(rules, store, member):
    silver = tier_create("silver", 1, "0", multiplier="2")
    silver.name_zh_hans = "银卡"
    silver.save()
    buy(store, member, "R-1", "10")  # reaches Silver (nothing needed), at the base rate
    entry = buy(store, member, "R-2", "10").entry
    assert entry.detail["tier"]["zh-hans"] == "银卡"
    with translation.override("zh-hans"):
        assert "银卡" in entry.explanation
    with translation.override("ko"):  # no Korean name: the English one
        assert "Silver" in entry.explanation


def test_a_claimed_sale_earns_at_the_claimers_tier_and_can_move_them_up(rules, store, member):
    silver = tier_create("silver", 1, "10", multiplier="1.5")
    gold = tier_create("gold", 2, "100")
    buy(store, member, "R-1", "20")
    assert tiers.tier_current(member) == silver
    anonymous = buy(store, None, "R-2", "90").purchase
    assert anonymous.points_earned == 90

    result = services.purchase_claim(purchase=anonymous, member=member)

    assert result.entry.points == result.purchase.points_earned == 135
    assert "× 1.5 for Silver" in result.entry.explanation
    assert tiers.tier_current(member) == gold
    assert ledger_drift() == []


def test_a_batch_moves_members_up_after_it_and_every_sale_in_it_earns_at_the_old_rate(rules, store, member):
    silver = tier_create("silver", 1, "100", multiplier="2")
    cache.clear()
    _key, raw = member_services.api_key_create(store=store, name="Till 1")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    items = [
        {"receipt_number": "B-1", "amount": "80", "member_number": member.member_number},
        {"receipt_number": "B-2", "amount": "30", "member_number": member.member_number},
    ]

    response = api.post("/api/v1/purchases/batch", {"purchases": items}, format="json")

    assert response.status_code == 200, response.content
    assert [r["points_earned"] for r in response.json()["results"]] == [80, 30]
    assert tiers.tier_current(member) == silver
    assert TierChange.objects.get().detail == {"metric": "spend", "value": "110.00", "threshold": "100.00"}
    assert subjects(member, "tier_up") == ["Welcome to Silver"]
    # A retry of the batch moves nothing and tells nobody again.
    assert api.post("/api/v1/purchases/batch", {"purchases": items}, format="json").status_code == 200
    assert (TierChange.objects.count(), Notification.objects.filter(kind="tier_up").count()) == (1, 1)
    response = api.post(
        "/api/v1/purchases/batch", {"purchases": [{**items[0], "receipt_number": "B-3", "amount": "5"}]}, format="json"
    )
    assert response.json()["results"][0]["points_earned"] == 10
    assert "× 2 for Silver" in LedgerEntry.objects.get(purchase__receipt_number="B-3").explanation
    assert ledger_drift() == []


def test_an_import_of_history_moves_members_up_without_telling_them(rules, store, member, tmp_path):
    silver = tier_create("silver", 1, "100")
    recent = (local_today() - dt.timedelta(days=20)).isoformat()
    path = tmp_path / "purchases.csv"
    path.write_text(f"member_ref,occurred_at,amount\n{member.member_number},{recent},70\n{member.member_number},{recent},40\n")

    report = imports.import_purchases(path, store=store)

    assert report.written
    assert report.purchases_created == 2
    assert tiers.tier_current(member) == silver
    assert TierChange.objects.get().reason == "upgrade"
    assert not Notification.objects.filter(kind="tier_up").exists()
    imports.import_purchases(path, store=store)
    assert TierChange.objects.count() == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_many_purchases_at_once_move_a_member_up_exactly_once(rules, store):
    member = MemberFactory()
    silver = tier_create("silver", 1, "100")
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            connection.ensure_connection()
            barrier.wait(timeout=30)
            buy(store, member, f"R-{i}", "20")
        except BaseException as error:  # reported by the assertion below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    assert tiers.tier_current(member) == silver
    assert TierChange.objects.count() == 1
    assert TierChange.objects.get().detail["value"] == "100.00"  # the fifth purchase, whichever it was
    assert ledger_drift() == []


# --- returns never lower a tier; the evaluation does, after grace ---------------------------


def test_a_return_never_lowers_a_tier(rules, store, member):
    silver = tier_create("silver", 1, "100")
    purchase = buy(store, member, "R-1", "120").purchase

    services.purchase_return(purchase=purchase, return_number="X-1", amount="120")

    assert tiers.tier_current(member) == silver
    assert TierChange.objects.count() == 1
    assert tiers.tier_value(member, silver) == 0


@pytest.fixture
def gold_member(rules, store, member):
    """A Gold member whose big purchase leaves the 12-month window 165 days from now."""
    tier_create("silver", 1, "100")
    tier_create("gold", 2, "300", retain="250", grace=30)
    now = timezone.now()
    buy(store, member, "R-1", "300", at=now - dt.timedelta(days=200))
    buy(store, member, "R-2", "120", at=now - dt.timedelta(days=10))
    assert status_of(member) == ("gold", None)
    return member


def test_a_member_who_misses_the_keep_threshold_comes_down_only_after_the_grace_period(gold_member):
    member, today = gold_member, local_today()

    assert tiers.tiers_evaluate(today=today) == tiers.TierEvaluation(evaluated=1, kept=1)
    assert not Notification.objects.filter(kind="tier_kept").exists()  # reached this year: nothing to say yet

    missed_on = today + dt.timedelta(days=200)
    assert tiers.tiers_evaluate(today=missed_on) == tiers.TierEvaluation(evaluated=1, missed=1)
    assert status_of(member) == ("gold", missed_on)
    progress = tiers.tier_progress(member, today=missed_on)
    assert (progress["needed_to_keep"], progress["keep_by"]) == (Decimal("130.00"), missed_on + dt.timedelta(days=29))

    assert tiers.tiers_evaluate(today=missed_on + dt.timedelta(days=29)).missed == 1
    assert status_of(member) == ("gold", missed_on)
    assert TierChange.objects.count() == 1

    assert tiers.tiers_evaluate(today=missed_on + dt.timedelta(days=30)).lowered == 1

    assert status_of(member) == ("silver", None)
    change = TierChange.objects.order_by("pk").last()
    assert (change.reason, change.from_tier.code, change.to_tier.code) == ("evaluation", "gold", "silver")
    assert change.detail == {"metric": "spend", "value": "120.00", "threshold": "250.00", "missed_since": str(missed_on)}
    assert subjects(member, "tier_lowered") == ["Your tier is now Silver"]
    body = Notification.objects.get(kind="tier_lowered").body
    assert "CN¥250.00" in body
    assert "CN¥120.00" in body


def test_a_member_who_catches_up_within_the_grace_period_keeps_the_tier(gold_member, store):
    member, missed_on = gold_member, local_today() + dt.timedelta(days=200)
    tiers.tiers_evaluate(today=missed_on)

    buy(store, member, "R-3", "200")  # no evaluation on a purchase: the grace period is still running
    assert status_of(member) == ("gold", missed_on)
    assert tiers.tiers_evaluate(today=missed_on + dt.timedelta(days=1)) == tiers.TierEvaluation(evaluated=1, kept=1)

    assert status_of(member) == ("gold", None)
    assert subjects(member, "tier_kept") == ["You keep Gold"]
    assert TierChange.objects.count() == 1


def test_the_evaluation_twice_on_one_day_changes_nothing_the_second_time(gold_member):
    member, day = gold_member, local_today() + dt.timedelta(days=230)
    tiers.tiers_evaluate(today=day - dt.timedelta(days=30))
    first = tiers.tiers_evaluate(today=day)
    before = (list(MemberTier.objects.values()), TierChange.objects.count(), Notification.objects.count())

    second = tiers.tiers_evaluate(today=day)

    assert first.lowered == 1
    assert second == tiers.TierEvaluation()
    assert (list(MemberTier.objects.values()), TierChange.objects.count(), Notification.objects.count()) == before
    assert status_of(member) == ("silver", None)


def test_members_with_nothing_left_come_down_to_the_base_level(rules, store, member):
    tier_create("silver", 1, "100", grace=0)
    purchase = buy(store, member, "R-1", "100").purchase
    services.purchase_return(purchase=purchase, return_number="X-1", amount="100")

    assert tiers.tiers_evaluate().lowered == 1

    assert status_of(member) == (None, None)
    assert TierChange.objects.order_by("pk").last().to_tier is None
    assert subjects(member, "tier_lowered") == ["Your Silver tier has ended"]


def test_a_kept_tier_is_told_once_a_year_from_the_year_after_it_was_reached(rules, store, member):
    tier_create("gold", 1, "300", retain="100", window=Tier.Window.CALENDAR_YEAR)
    with time_machine.travel(dt.datetime(2025, 3, 1, 12, tzinfo=SHANGHAI)):
        buy(store, member, "R-1", "300")
        tiers.tiers_evaluate()
    # What was reached in 2025 keeps the tier through 2026.
    for day in (dt.date(2026, 1, 1), dt.date(2026, 1, 2), dt.date(2026, 6, 30)):
        with time_machine.travel(dt.datetime.combine(day, dt.time(2, 30), tzinfo=SHANGHAI)):
            assert tiers.tiers_evaluate().kept == 1
    assert subjects(member, "tier_kept") == ["You keep Gold"]
    assert Notification.objects.get(kind="tier_kept").key.endswith(":2026")
    with time_machine.travel(dt.datetime(2027, 1, 1, 2, 30, tzinfo=SHANGHAI)):
        assert tiers.tiers_evaluate().missed == 1  # nothing bought in 2026


def test_the_clock_task_records_its_counts(gold_member):
    assert tasks.evaluate_tiers.delay().get() == {"evaluated": 1, "kept": 1, "missed": 0, "lowered": 0, "invitations_ended": 0}
    assert tasks.evaluate_tiers.delay().get()["evaluated"] == 0
    assert list(JobRun.objects.filter(job="evaluate_tiers").values_list("status", flat=True)) == ["done", "done"]


# --- invitations ---------------------------------------------------------------------------


def test_staff_invite_to_an_invitation_only_tier_until_a_day_and_it_then_ends(rules, store, member, programme_admin, cashier):
    silver = tier_create("silver", 1, "100")
    vip = tier_create("vip", 9, "0", invitation=True, multiplier="2")
    until = local_today() + dt.timedelta(days=10)

    with pytest.raises(PermissionDenied):
        tiers.tier_invite(member=member, tier=vip, until=until, by=cashier)
    for tier, end, field in [(vip, None, "until"), (vip, local_today() - dt.timedelta(days=1), "until"), (silver, until, "tier")]:
        with pytest.raises(ValidationError) as error:
            tiers.tier_invite(member=member, tier=tier, until=end, by=programme_admin)
        assert field in error.value.message_dict
    assert not TierChange.objects.exists()
    assert not MemberTier.objects.filter(tier__isnull=False).exists()

    change = tiers.tier_invite(member=member, tier=vip, until=until, by=programme_admin, note="Opening night guest")

    assert tiers.tier_invite(member=member, tier=vip, until=until, by=programme_admin) == change
    assert (change.reason, change.to_tier, change.actor, change.note) == ("invited", vip, programme_admin, "Opening night guest")
    assert subjects(member, "tier_up") == ["Welcome to Vip"]
    assert tiers.tier_current(member) == vip
    assert buy(store, member, "R-1", "150").entry.points == 300
    assert TierChange.objects.count() == 1  # reaching Silver does not replace a better invitation

    assert tiers.tier_current(member, today=until) == vip
    assert tiers.tier_current(member, today=until + dt.timedelta(days=1)) is None
    assert tiers.tiers_evaluate(today=until).evaluated == 1
    assert status_of(member) == ("vip", None)

    assert tiers.tiers_evaluate(today=until + dt.timedelta(days=1)).invitations_ended == 1

    assert status_of(member) == ("silver", None)
    ended = TierChange.objects.order_by("pk").last()
    assert (ended.reason, ended.from_tier, ended.to_tier) == ("invitation_ended", vip, silver)
    assert subjects(member, "tier_lowered") == ["Your tier is now Silver"]
    assert MemberTier.objects.get(member=member).invited_until is None


def test_an_invitation_below_the_tier_held_is_refused(rules, store, member, programme_admin):
    tier_create("gold", 5, "100")
    guest = tier_create("guest", 2, "0", invitation=True)
    buy(store, member, "R-1", "100")
    with pytest.raises(ValidationError) as error:
        tiers.tier_invite(member=member, tier=guest, until=local_today(), by=programme_admin)
    assert "tier" in error.value.message_dict


def test_staff_can_set_a_tier_by_hand_with_a_reason(rules, member, programme_admin):
    gold = tier_create("gold", 2, "1000")
    with pytest.raises(ValidationError) as error:
        tiers.tier_set(member=member, tier=gold, by=programme_admin, note=" ")
    assert "note" in error.value.message_dict

    change = tiers.tier_set(member=member, tier=gold, by=programme_admin, note="Complaint resolved")

    assert (change.reason, change.to_tier, change.actor) == ("staff", gold, programme_admin)
    assert tiers.tier_set(member=member, tier=gold, by=programme_admin, note="again") is None
    assert tiers.tier_current(member) == gold


# --- progress -------------------------------------------------------------------------------


def test_progress_at_the_end_of_a_calendar_year_in_the_programme_time_zone(rules, store, member):
    tier_create("gold", 1, "1000", window=Tier.Window.CALENDAR_YEAR)
    buy(store, member, "R-1", "300", at=dt.datetime(2025, 12, 31, 23, 30, tzinfo=SHANGHAI))
    buy(store, member, "R-2", "200", at=dt.datetime(2026, 1, 1, 0, 30, tzinfo=SHANGHAI))  # 31 December in UTC

    last_day = tiers.tier_progress(member, today=dt.date(2025, 12, 31))
    first_day = tiers.tier_progress(member, today=dt.date(2026, 1, 1))

    assert last_day == {
        "current": None,
        "next": {"code": "gold", "name": "Gold", "rank": 1},
        "metric": "spend",
        "value": Decimal("300.00"),
        "needed_to_reach": Decimal("700.00"),
        "needed_to_keep": None,
        "window_ends_on": dt.date(2025, 12, 31),
        "keep_by": None,
    }
    assert (first_day["value"], first_day["needed_to_reach"], first_day["window_ends_on"]) == (
        Decimal("200.00"),
        Decimal("800.00"),
        dt.date(2026, 12, 31),
    )


def test_progress_at_the_start_of_a_rolling_window(rules, store, member):
    tier_create("regular", 1, "5", metric=Tier.Metric.PURCHASES, window=Tier.Window.ROLLING, months=1)
    buy(store, member, "R-1", "70", at=dt.datetime(2026, 2, 28, 23, 59, tzinfo=SHANGHAI))
    buy(store, member, "R-2", "50", at=dt.datetime(2026, 3, 1, 0, 0, tzinfo=SHANGHAI))

    # One month back from 31 March is 28 February: the window opens on 1 March.
    progress = tiers.tier_progress(member, today=dt.date(2026, 3, 31))

    assert (progress["metric"], progress["value"], progress["needed_to_reach"]) == ("purchases", 1, 4)
    assert progress["window_ends_on"] is None
    # From 28 to 31 March the window opens on 1 March (there is no 29 February); on the 27th, on 28 February.
    assert tiers.tier_progress(member, today=dt.date(2026, 3, 28))["value"] == 1
    assert tiers.tier_progress(member, today=dt.date(2026, 3, 27))["value"] == 2


def test_progress_to_keep_the_tier_held_and_to_reach_the_next(rules, store, member):
    tier_create("silver", 1, "100", retain="80", window=Tier.Window.CALENDAR_YEAR)
    tier_create("gold", 2, "500", window=Tier.Window.CALENDAR_YEAR)
    buy(store, member, "R-1", "60")
    buy(store, member, "R-2", "60")
    today = local_today()

    progress = tiers.tier_progress(member, today=today)

    assert progress["current"] == {"code": "silver", "name": "Silver", "rank": 1}
    assert progress["next"]["code"] == "gold"
    assert (progress["value"], progress["needed_to_reach"], progress["needed_to_keep"]) == (
        Decimal("120.00"),
        Decimal("380.00"),
        Decimal(0),
    )
    assert progress["window_ends_on"] == progress["keep_by"] == dt.date(today.year, 12, 31)


def test_spending_points_never_lowers_a_tier_counted_in_points(rules, store, member):
    silver = tier_create("silver", 1, "100", metric=Tier.Metric.POINTS, window=Tier.Window.LIFETIME)
    buy(store, member, "R-1", "120")
    services.points_spend(member=member, points=120, reason="Free lunch")

    assert tiers.tier_value(member, silver) == 120
    assert tiers.tiers_evaluate().kept == 1
    assert tiers.tier_current(member) == silver
    progress = tiers.tier_progress(member)
    assert (progress["next"], progress["metric"], progress["value"], progress["needed_to_keep"]) == (None, "points", 120, 0)


# --- the API and the admin --------------------------------------------------------------------


def test_the_member_payload_has_the_tier_and_the_progress(rules, store, member):
    tier_create("silver", 1, "100", window=Tier.Window.CALENDAR_YEAR)
    cache.clear()
    _key, raw = member_services.api_key_create(store=store, name="Till 1")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")

    before = api.get(f"/api/v1/members/{member.member_number}").json()
    buy(store, member, "R-1", "150")
    after = api.get(f"/api/v1/members/{member.member_number}").json()

    assert before["tier"] is None
    assert before["tier_progress"]["next"] == {"code": "silver", "name": "Silver", "rank": 1}
    assert before["tier_progress"]["needed_to_reach"] == "100.00"
    assert after["tier"] == {"code": "silver", "name": "Silver", "rank": 1}
    assert after["tier_progress"] == {
        "current": {"code": "silver", "name": "Silver", "rank": 1},
        "next": None,
        "metric": "spend",
        "value": "150.00",
        "needed_to_reach": None,
        "needed_to_keep": "0.00",
        "window_ends_on": f"{local_today().year}-12-31",
        "keep_by": f"{local_today().year}-12-31",
    }


@pytest.fixture
def admin_client(client, programme_admin):
    client.force_login(programme_admin)
    return client


def test_tier_pages_open_in_the_admin(admin_client, rules, store, member):
    tier_create("silver", 1, "100")
    buy(store, member, "R-1", "150")
    for name in ("tier", "membertier", "tierchange"):
        assert admin_client.get(reverse(f"admin:rewards_{name}_changelist"), {"q": member.member_number}).status_code == 200
    page = admin_client.get(reverse("admin:rewards_tier_add"))
    assert page.status_code == 200
    assert "name_zh_hans" in page.text
    assert admin_client.get(reverse("admin:rewards_membertier_change", args=[member.pk])).status_code == 200


def test_staff_invite_a_member_from_the_admin(admin_client, programme_admin, rules, member):
    vip = tier_create("vip", 9, "0", invitation=True)
    url = reverse("admin:rewards_membertier_add")
    until = local_today() + dt.timedelta(days=30)

    refused = admin_client.post(url, {"member": member.pk, "tier": vip.pk, "invited_until": "2001-01-01", "note": ""})
    assert refused.status_code == 200
    assert "cannot end in the past" in refused.text
    assert not TierChange.objects.exists()

    response = admin_client.post(
        url, {"member": member.pk, "tier": vip.pk, "invited_until": until.isoformat(), "note": "VIP night"}
    )

    assert response.status_code == 302
    assert status_of(member) == ("vip", None)
    change = TierChange.objects.get()
    assert (change.reason, change.actor, change.note) == ("invited", programme_admin, "VIP night")
