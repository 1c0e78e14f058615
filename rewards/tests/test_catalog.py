"""The reward catalog: every redemption check, vouchers through their lifecycle, the clock's voucher jobs."""

import datetime as dt
import re

import pytest
import time_machine
from django import forms
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.formats import date_format

from members.models import Member, Notification
from members.tests.factories import MemberFactory, StoreFactory, UserFactory
from rewards import catalog, config, services, tasks
from rewards.models import (
    JobRun,
    LedgerEntry,
    MemberTier,
    PointsLot,
    ProgrammeRules,
    Redemption,
    Reward,
    Tier,
    Voucher,
)
from rewards.selectors import account_for, ledger_drift
from rewards.tests.factories import settings_change
from rewards.tests.test_concurrency import errors_by_type, run_at_once, unexpected

pytestmark = pytest.mark.django_db

CODE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$")


def earn(store, member, amount, receipt: str | None = None, days_ago: int = 0):
    receipt = receipt or f"R-{member.pk}-{PointsLot.objects.count()}"
    occurred_at = timezone.now() - dt.timedelta(days=days_ago)
    return services.purchase_record(store=store, receipt_number=receipt, amount=amount, member=member, occurred_at=occurred_at)


def reward_create(rules: ProgrammeRules, **fields) -> Reward:
    """Add a reward as a merchant does in the admin."""
    values = {"kind": Reward.Kind.FREE_ITEM, "title": "Free latte", "points_cost": 50, "voucher_valid_days": 30}
    values.update(fields)
    return Reward.objects.create(programme=rules.programme, **values)


def tier_create(rules: ProgrammeRules, code: str, rank: int) -> Tier:
    return Tier.objects.create(
        programme=rules.programme, code=code, name=code.title(), rank=rank, entry_threshold=rank * 1000, retain_threshold=0
    )


def nothing_redeemed(member: Member, reward: Reward, stock: int | None = None) -> None:
    assert not Redemption.objects.exists()
    assert not Voucher.objects.exists()
    assert not LedgerEntry.objects.filter(source_ref__startswith="redemption:").exists()
    assert not Notification.objects.filter(kind="voucher_issued").exists()
    reward.refresh_from_db()
    assert reward.stock == stock


@pytest.fixture
def latte(rules):
    return reward_create(rules)


# --- redeeming ------------------------------------------------------------------------------


def test_redeeming_spends_the_soonest_expiring_points_takes_stock_and_issues_a_voucher(rules, store, member, cashier):
    # Given points earned long ago and recently, and a reward with 3 in stock
    older = earn(store, member, "30", days_ago=100).entry.lot
    newer = earn(store, member, "40", days_ago=1).entry.lot
    reward = reward_create(rules, stock=3, voucher_valid_days=14)

    # When the member redeems it at the counter
    redemption = catalog.redemption_create(member=member, reward=reward, by=cashier, store=store, via="counter")

    # Then the oldest points went first, the stock went down and a voucher was issued
    entry = redemption.spend_entry
    assert (entry.kind, entry.points, entry.source_ref) == ("spend", -50, f"redemption:{redemption.pk}")
    assert sorted(entry.allocations.values_list("lot_id", "points")) == sorted([(older.pk, 30), (newer.pk, 20)])
    assert entry.explanation == "Redeemed: Free latte"
    assert (redemption.points, redemption.status, redemption.store, redemption.created_by) == (50, "redeemed", store, cashier)
    account = account_for(member)
    assert (account.available, account.lifetime_spent) == (20, 50)
    reward.refresh_from_db()
    assert reward.stock == 2
    voucher = redemption.voucher
    assert CODE.match(voucher.code)
    assert (voucher.member, voucher.reward, voucher.status) == (member, reward, "issued")
    assert voucher.expires_at == voucher.issued_at + dt.timedelta(days=14) == redemption.created_at + dt.timedelta(days=14)
    message = Notification.objects.get(member=member, kind="voucher_issued")
    assert message.key == f"voucher:{voucher.code}"
    assert message.subject == "Your voucher for Free latte is ready"
    assert voucher.code in message.body
    assert ledger_drift() == []


def test_unlimited_stock_stays_unlimited(rules, store, member, latte):
    earn(store, member, "50")
    catalog.redemption_create(member=member, reward=latte)
    latte.refresh_from_db()
    assert latte.stock is None


def test_a_blocked_member_cannot_redeem(rules, store, member, latte):
    earn(store, member, "100")
    Member.objects.filter(pk=member.pk).update(status=Member.Status.BLOCKED)
    member.refresh_from_db()
    with pytest.raises(catalog.RewardUnavailable) as error:
        catalog.redemption_create(member=member, reward=latte)
    assert (error.value.field, error.value.reason) == ("member", "member_not_active")
    nothing_redeemed(member, latte)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"active": False}, "not_offered"),
        ({"visible_from": dt.timedelta(days=1)}, "not_offered"),
        ({"visible_until": dt.timedelta(days=-1)}, "not_offered"),
        ({"available_from": dt.timedelta(days=1)}, "not_yet_redeemable"),
        ({"available_until": dt.timedelta(seconds=-1)}, "no_longer_redeemable"),
        ({"visible_from": dt.timedelta(days=-1), "available_from": dt.timedelta(hours=2)}, "not_yet_redeemable"),
    ],
)
def test_rewards_outside_their_windows_are_refused(rules, store, member, fields, reason):
    now = timezone.now()
    fields = {k: now + v if isinstance(v, dt.timedelta) else v for k, v in fields.items()}
    reward = reward_create(rules, **fields)
    earn(store, member, "100")
    with pytest.raises(catalog.RewardUnavailable) as error:
        catalog.redemption_create(member=member, reward=reward)
    assert (error.value.field, error.value.reason) == ("reward", reason)
    nothing_redeemed(member, reward)


def test_a_reward_inside_its_windows_can_be_redeemed(rules, store, member):
    now = timezone.now()
    day = dt.timedelta(days=1)
    reward = reward_create(
        rules, visible_from=now - 2 * day, visible_until=now + 2 * day, available_from=now - day, available_until=now + day
    )
    earn(store, member, "100")
    assert catalog.redemption_create(member=member, reward=reward).voucher.status == "issued"


@pytest.mark.parametrize(
    ("member_tier", "invited_until_days", "allowed"),
    [
        (None, None, False),
        ("silver", None, False),
        ("gold", None, True),
        ("platinum", None, True),
        ("gold", -1, False),  # an invitation that has ended does not count
        ("gold", 0, True),  # its last day still does
    ],
)
def test_tier_only_rewards(rules, store, member, member_tier, invited_until_days, allowed):
    tiers = {code: tier_create(rules, code, rank) for code, rank in [("silver", 1), ("gold", 2), ("platinum", 3)]}
    if member_tier:
        today = timezone.now().astimezone(rules.programme.tz).date()
        invited_until = None if invited_until_days is None else today + dt.timedelta(days=invited_until_days)
        MemberTier.objects.update_or_create(member=member, defaults={"tier": tiers[member_tier], "invited_until": invited_until})
    reward = reward_create(rules, min_tier=tiers["gold"])
    earn(store, member, "100")
    if allowed:
        catalog.redemption_create(member=member, reward=reward)
        return
    with pytest.raises(catalog.RewardUnavailable) as error:
        catalog.redemption_create(member=member, reward=reward)
    assert (error.value.reason, error.value.facts["required_tier"]) == ("tier", "gold")
    assert "Gold members and above" in error.value.message
    nothing_redeemed(member, reward)


def test_the_last_one_in_stock_goes_once(rules, store, latte):
    reward = reward_create(rules, stock=1)
    first, second = MemberFactory(), MemberFactory()
    earn(store, first, "100")
    earn(store, second, "100")
    catalog.redemption_create(member=first, reward=reward)
    with pytest.raises(catalog.RewardUnavailable) as error:
        catalog.redemption_create(member=second, reward=reward)
    assert error.value.reason == "sold_out"
    reward.refresh_from_db()
    assert reward.stock == 0
    assert account_for(second).available == 100


def test_the_limit_per_member_counts_redemptions_not_cancelled(rules, store, member):
    reward = reward_create(rules, limit_per_member=1)
    earn(store, member, "200")
    first = catalog.redemption_create(member=member, reward=reward)
    with pytest.raises(catalog.RewardUnavailable) as error:
        catalog.redemption_create(member=member, reward=reward)
    assert (error.value.reason, error.value.facts["limit"]) == ("limit_reached", 1)
    assert Redemption.objects.count() == 1

    catalog.redemption_cancel(redemption=first)
    second = catalog.redemption_create(member=member, reward=reward)
    assert second.pk != first.pk
    # Another member has a limit of their own.
    other = MemberFactory()
    earn(store, other, "50")
    catalog.redemption_create(member=other, reward=reward)


def test_the_programme_minimum_per_redemption_applies(rules, store, member):
    settings_change(rules, min_redemption_points=100)
    cheap, enough = reward_create(rules, points_cost=50), reward_create(rules, points_cost=100, title="Cake")
    earn(store, member, "200")
    with pytest.raises(catalog.RewardUnavailable) as error:
        catalog.redemption_create(member=member, reward=cheap)
    assert (error.value.reason, error.value.facts["minimum"]) == ("below_minimum", 100)
    nothing_redeemed(member, cheap)
    catalog.redemption_create(member=member, reward=enough)


def test_short_of_points_says_how_many_more_are_needed(rules, store, member, latte):
    earn(store, member, "49")
    with pytest.raises(services.InsufficientPoints) as error:
        catalog.redemption_create(member=member, reward=latte)
    assert error.value.facts == {"available": 49, "points_needed": 1}
    assert "1 more points are needed" in error.value.message
    nothing_redeemed(member, latte)
    assert account_for(member).available == 49

    earn(store, member, "1")
    catalog.redemption_create(member=member, reward=latte)
    assert account_for(member).available == 0


def test_pending_points_do_not_count(store, member):
    from rewards.tests.factories import programme_create

    rules = programme_create(pending_days=14)
    reward = reward_create(rules)
    earn(store, member, "80")
    with pytest.raises(services.InsufficientPoints) as error:
        catalog.redemption_create(member=member, reward=reward)
    assert error.value.facts["points_needed"] == 50


def test_points_owed_from_a_return_block_redeeming(rules, store, member, latte):
    purchase = earn(store, member, "60").purchase
    services.points_spend(member=member, points=60, reason="Cake")
    services.purchase_return(purchase=purchase, return_number="RT-1", amount="60")
    earn(store, member, "10")  # repays part of the debt
    with pytest.raises(services.PointsOwed):
        catalog.redemption_create(member=member, reward=latte)
    nothing_redeemed(member, latte)


def test_points_past_their_validity_are_not_spent_even_before_the_clock_runs(rules, store, member, latte):
    earn(store, member, "50", days_ago=400)
    with pytest.raises(services.InsufficientPoints):
        catalog.redemption_create(member=member, reward=latte)
    nothing_redeemed(member, latte)


def test_a_retried_redemption_with_its_key_happens_once(rules, store, member, latte):
    earn(store, member, "200")
    first = catalog.redemption_create(member=member, reward=latte, idempotency_key="portal:abc")
    again = catalog.redemption_create(member=member, reward=latte, idempotency_key="portal:abc")
    assert again == first
    assert Redemption.objects.count() == Voucher.objects.count() == 1
    assert account_for(member).available == 150
    other = reward_create(rules, title="Cake")
    with pytest.raises(services.ReplayConflict) as error:
        catalog.redemption_create(member=member, reward=other, idempotency_key="portal:abc")
    assert error.value.field == "idempotency_key"
    # The key is the member's own: another member's use of it is a different request.
    someone = MemberFactory()
    earn(store, someone, "50")
    assert catalog.redemption_create(member=someone, reward=latte, idempotency_key="portal:abc") != first


def test_the_spend_reads_in_the_readers_language(rules, store, member):
    reward = reward_create(rules, title_en="Free latte", title_zh_hans="免费拿铁")
    earn(store, member, "50")
    entry = catalog.redemption_create(member=member, reward=reward).spend_entry
    assert entry.detail["reward"] == {"en": "Free latte", "zh-hans": "免费拿铁"}
    with translation.override("zh-hans"):
        assert "免费拿铁" in entry.explanation
    with translation.override("ko"):  # no Korean title: the English one
        assert "Free latte" in entry.explanation


def test_the_voucher_message_is_in_the_members_language(rules, store):
    member = MemberFactory(language="zh-hans")
    reward = reward_create(rules, title_en="Free latte", title_zh_hans="免费拿铁")
    earn(store, member, "50")
    catalog.redemption_create(member=member, reward=reward)
    assert "免费拿铁" in Notification.objects.get(member=member, kind="voucher_issued").subject


# --- vouchers: issuing, codes, QR -----------------------------------------------------------


def test_voucher_issue_without_a_redemption(rules, member, latte):
    # As a full stamp card does: no points move.
    now = timezone.now()
    voucher = catalog.voucher_issue(member=member, reward=latte, now=now)
    assert (voucher.redemption, voucher.issued_at, voucher.expires_at) == (None, now, now + dt.timedelta(days=30))
    assert not LedgerEntry.objects.exists()
    assert Notification.objects.filter(member=member, key=f"voucher:{voucher.code}").count() == 1


def test_codes_are_random_and_read_as_typed(rules, member, latte):
    codes = {catalog.voucher_code_new() for _i in range(2000)}
    assert len(codes) == 2000
    assert all(CODE.match(code) for code in codes)
    assert catalog.voucher_code_normalise("7kq2 m9xd 4hta") == "7KQ2-M9XD-4HTA"
    assert catalog.voucher_code_normalise("OIL0-0000-0000") == "0110-0000-0000"
    for bad in ["", "7KQ2", "7KQ2-M9XD-4HTU", "7KQ2-M9XD-4HTA-1", "7KQ2-M9XD-4HT\x00"]:
        assert catalog.voucher_code_normalise(bad) == ""


def test_the_qr_image_is_an_svg_of_the_code():
    svg = catalog.voucher_qr_svg("7KQ2-M9XD-4HTA")
    assert svg.startswith("<svg")
    assert "<title>7KQ2-M9XD-4HTA</title>" in svg
    assert svg != catalog.voucher_qr_svg("7KQ2-M9XD-4HTB")


# --- vouchers: using ------------------------------------------------------------------------


@pytest.fixture
def voucher(rules, store, member, latte):
    earn(store, member, "100")
    return catalog.redemption_create(member=member, reward=latte).voucher


def test_using_a_voucher_records_who_where_and_when(voucher, store, cashier):
    used = catalog.voucher_use(code=voucher.code.lower().replace("-", ""), by=cashier, store=store, via="Till 1")
    assert (used.pk, used.status, used.used_by, used.used_store, used.used_via) == (voucher.pk, "used", cashier, store, "Till 1")
    assert used.used_at is not None
    assert not LedgerEntry.objects.exclude(kind__in=["earn", "spend"]).exists()


def test_a_second_use_is_refused_even_from_the_same_till_at_once(voucher, store, cashier):
    # A screenshot of the voucher shown again at the same till a moment later is not a retry.
    first = catalog.voucher_use(code=voucher.code, by=cashier, store=store, via="Till 1")
    with pytest.raises(catalog.VoucherAlreadyUsed) as error:
        catalog.voucher_use(code=voucher.code, by=cashier, store=store, via="Till 1")
    when = first.used_at.astimezone(voucher.reward.programme.tz).strftime("%Y-%m-%d %H:%M")
    assert error.value.message == f"This voucher was already used on {when} at Jing'an."
    assert (error.value.reason, error.value.facts["used_at"]) == ("used", first.used_at.isoformat())
    voucher.refresh_from_db()
    assert (voucher.status, voucher.used_at, voucher.used_by) == ("used", first.used_at, cashier)
    assert not hasattr(catalog, "USE_REPLAY_WINDOW")


def test_using_it_elsewhere_or_later_says_when_and_where_it_was_used(voucher, store):
    first = catalog.voucher_use(code=voucher.code, store=store, via="Till 1")
    other = StoreFactory(code="sh02", name="Xuhui")
    with pytest.raises(catalog.VoucherAlreadyUsed) as error:
        catalog.voucher_use(code=voucher.code, store=other, via="Till 9")
    when = first.used_at.astimezone(voucher.reward.programme.tz).strftime("%Y-%m-%d %H:%M")
    assert error.value.message == f"This voucher was already used on {when} at Jing'an."
    assert error.value.facts["used_store"] == "sh01"
    with time_machine.travel(timezone.now() + dt.timedelta(hours=1)), pytest.raises(catalog.VoucherAlreadyUsed):
        catalog.voucher_use(code=voucher.code, store=store, via="Till 1")
    voucher.refresh_from_db()
    assert (voucher.used_store, voucher.used_via, voucher.used_at) == (store, "Till 1", first.used_at)


def test_an_expired_voucher_cannot_be_used_even_before_the_job_runs(voucher, store):
    with time_machine.travel(voucher.expires_at + dt.timedelta(seconds=1)):
        with pytest.raises(catalog.VoucherUnusable) as error:
            catalog.voucher_use(code=voucher.code, store=store)
        assert error.value.reason == "expired"
    voucher.refresh_from_db()
    assert voucher.status == "issued"
    catalog.vouchers_expire_due(now=voucher.expires_at)
    with pytest.raises(catalog.VoucherUnusable):
        catalog.voucher_use(code=voucher.code, store=store)


def test_a_cancelled_or_unknown_voucher_cannot_be_used(voucher, store):
    catalog.redemption_cancel(redemption=voucher.redemption)
    with pytest.raises(catalog.VoucherUnusable) as error:
        catalog.voucher_use(code=voucher.code, store=store)
    assert error.value.reason == "cancelled"
    with pytest.raises(catalog.VoucherUnusable) as error:
        catalog.voucher_use(code="0000-0000-0000", store=store)
    assert (error.value.reason, error.value.field) == ("not_found", "code")


# --- cancelling -----------------------------------------------------------------------------


def test_cancelling_gives_the_points_back_with_their_validity_and_the_stock_back(rules, store, member, manager):
    reward = reward_create(rules, stock=2)
    earned = earn(store, member, "80", days_ago=30).entry.lot
    redemption = catalog.redemption_create(member=member, reward=reward)

    cancelled = catalog.redemption_cancel(redemption=redemption, by=manager, reason="Changed her mind")

    assert (cancelled.status, cancelled.cancelled_at is not None) == ("cancelled", True)
    entry = cancelled.refund_entry
    assert (entry.kind, entry.points, entry.actor, entry.source_ref) == ("reversal", 50, manager, f"redemption:{redemption.pk}")
    code = redemption.voucher.code
    assert entry.explanation == f"Points back: your voucher {code} (Free latte) was cancelled (Changed her mind)"
    assert entry.lot.points == entry.lot.remaining == 50
    assert entry.lot.status == "available"
    assert (entry.lot.earned_at, entry.lot.expires_at) == (earned.earned_at, earned.expires_at)
    assert entry.lot.available_at <= cancelled.cancelled_at
    voucher = Voucher.objects.get(pk=redemption.voucher.pk)
    assert (voucher.status, voucher.closed_at) == ("cancelled", cancelled.cancelled_at)
    account = account_for(member)
    assert (account.available, account.lifetime_spent) == (80, 50)
    reward.refresh_from_db()
    assert reward.stock == 2
    assert ledger_drift() == []

    # Cancelling again changes nothing.
    again = catalog.redemption_cancel(redemption=redemption)
    assert again.refund_entry == entry
    assert LedgerEntry.objects.filter(kind="reversal").count() == 1
    reward.refresh_from_db()
    assert reward.stock == 2
    assert account_for(member).available == 80


def expiring_tomorrow(store, member, amount: str) -> PointsLot:
    """Earn points a year ago, so they reach the end of their validity within two days."""
    lot = earn(store, member, amount, days_ago=365).entry.lot
    assert timezone.now() < lot.expires_at <= timezone.now() + dt.timedelta(days=2)
    return lot


def earned_on(lot: PointsLot, rules: ProgrammeRules) -> str:
    return date_format(lot.earned_at.astimezone(rules.programme.tz).date(), "DATE_FORMAT")


def test_redeeming_and_cancelling_does_not_extend_the_validity_of_points(rules, store, member):
    # Given 100 points that expire tomorrow, redeemed for a reward
    lot = expiring_tomorrow(store, member, "100")
    redemption = catalog.redemption_create(member=member, reward=reward_create(rules, points_cost=100))
    assert ledger_drift() == []

    # When the redemption is cancelled
    cancelled = catalog.redemption_cancel(redemption=redemption)

    # Then the points are back at once, but with the date they had
    back = PointsLot.objects.get(pk=cancelled.refund_entry.lot_id)
    assert (back.points, back.remaining, back.status) == (100, 100, "available")
    assert (back.earned_at, back.expires_at) == (lot.earned_at, lot.expires_at)
    assert account_for(member).available == 100
    assert LedgerEntry.objects.filter(kind="reversal").count() == 1
    assert ledger_drift() == []

    # And after that date they expire, explained, leaving nothing
    with time_machine.travel(lot.expires_at + dt.timedelta(minutes=1)):
        services.points_expire_due()
    account = account_for(member)
    assert (account.balance, account.available) == (0, 0)
    expiry = LedgerEntry.objects.get(kind="expire")
    assert (expiry.points, expiry.lot_id) == (-100, back.pk)
    assert expiry.explanation == f"100 pts earned on {earned_on(lot, rules)} reached the end of their validity"
    assert ledger_drift() == []


def test_points_past_their_date_when_cancelled_expire_at_once_and_never_repay_a_debt(rules, store, member):
    # Given 100 points about to expire and 50 newer ones, 120 of them spent, then the newer purchase returned
    old = expiring_tomorrow(store, member, "100")
    newer = earn(store, member, "50")
    redemption = catalog.redemption_create(member=member, reward=reward_create(rules, points_cost=120))
    services.purchase_return(purchase=newer.purchase, return_number="RT-1", amount="50")
    assert (account_for(member).owed, account_for(member).available) == (20, 0)

    # When the redemption is cancelled after the old points' date (its voucher still valid)
    with time_machine.travel(old.expires_at + dt.timedelta(hours=1)):
        cancelled = catalog.redemption_cancel(redemption=redemption)

    # Then one entry gives the 120 back: the 100 past their date expire at once, explained, and only
    # the 20 still valid repay what the return left owing
    entry = cancelled.refund_entry
    assert (entry.kind, entry.points, entry.lot.expires_at) == ("reversal", 120, old.expires_at)
    back = PointsLot.objects.filter(pk__gte=entry.lot_id).order_by("pk")
    assert list(back.values_list("points", "remaining", "expires_at", "status")) == [
        (100, 0, old.expires_at, "expired"),
        (20, 0, newer.entry.lot.expires_at, "available"),
    ]
    expiry = LedgerEntry.objects.get(kind="expire")
    assert (expiry.points, expiry.lot_id, expiry.occurred_at) == (-100, entry.lot_id, old.expires_at)
    assert expiry.explanation == f"100 pts earned on {earned_on(old, rules)} reached the end of their validity"
    account = account_for(member)
    assert (account.available, account.pending, account.owed, account.balance) == (0, 0, 0, 0)
    assert ledger_drift() == []


def test_a_used_or_expired_voucher_cannot_be_cancelled(rules, store, member, latte):
    earn(store, member, "100")
    used = catalog.redemption_create(member=member, reward=latte)
    catalog.voucher_use(code=used.voucher.code, store=store)
    with pytest.raises(catalog.RedemptionNotCancellable) as error:
        catalog.redemption_cancel(redemption=used)
    assert error.value.reason == "used"

    expiring = catalog.redemption_create(member=member, reward=latte)
    with time_machine.travel(expiring.voucher.expires_at), pytest.raises(catalog.RedemptionNotCancellable) as error:
        catalog.redemption_cancel(redemption=expiring)
    assert error.value.reason == "expired"
    assert not LedgerEntry.objects.filter(kind="reversal").exists()
    assert Redemption.objects.filter(status="redeemed").count() == 2
    assert account_for(member).available == 0


# --- the clock: expiring vouchers -----------------------------------------------------------


def test_expired_vouchers_keep_their_points_by_default(rules, store, member, latte):
    earn(store, member, "100")
    due = catalog.redemption_create(member=member, reward=latte).voucher
    with time_machine.travel(timezone.now() + dt.timedelta(days=10)):
        later = catalog.redemption_create(member=member, reward=latte).voucher
    stamp_voucher = catalog.voucher_issue(member=member, reward=latte)

    now = due.expires_at + dt.timedelta(minutes=1)
    first = catalog.vouchers_expire_due(now=now)
    second = catalog.vouchers_expire_due(now=now)

    assert first == catalog.VoucherExpiry(vouchers=2, refunded=0, points=0)
    assert second == catalog.VoucherExpiry()
    statuses = dict(Voucher.objects.values_list("pk", "status"))
    assert statuses == {due.pk: "expired", stamp_voucher.pk: "expired", later.pk: "issued"}
    assert Voucher.objects.get(pk=due.pk).closed_at == now
    assert not LedgerEntry.objects.filter(kind="reversal").exists()
    assert account_for(member).available == 0


def test_expired_vouchers_give_points_back_when_the_rules_say_so(rules, store, member, latte):
    # Given a rule to refund, a member with a voucher, and another who owes points from a return
    settings_change(rules, refund_expired_vouchers=True)
    earn(store, member, "60")
    due = catalog.redemption_create(member=member, reward=latte)
    owing = MemberFactory()
    purchase = earn(store, owing, "50").purchase
    owing_redemption = catalog.redemption_create(member=owing, reward=latte)
    services.purchase_return(purchase=purchase, return_number="RT-1", amount="20")
    assert account_for(owing).owed == 20
    stamp_voucher = catalog.voucher_issue(member=member, reward=latte)
    cancelled = catalog.redemption_create(member=member, reward=reward_create(rules, points_cost=10, title="Cookie"))
    catalog.redemption_cancel(redemption=cancelled)

    # When the job runs after they expired, twice
    now = due.voucher.expires_at + dt.timedelta(minutes=1)
    first = catalog.vouchers_expire_due(now=now)
    second = catalog.vouchers_expire_due(now=now)

    # Then each redeemed voucher gave its points back once, explained; the owed points were repaid
    assert first == catalog.VoucherExpiry(vouchers=3, refunded=2, points=100)
    assert second == catalog.VoucherExpiry()
    due.refresh_from_db()
    entry = due.refund_entry
    assert (entry.kind, entry.points, entry.source_ref) == ("reversal", 50, f"redemption:{due.pk}")
    assert entry.explanation == f"Points back for your voucher {due.voucher.code} (Free latte), which expired unused"
    assert due.status == "redeemed"
    assert Voucher.objects.get(pk=stamp_voucher.pk).status == "expired"
    assert account_for(member).available == 10 + 50
    owing_account = account_for(owing)
    assert (owing_account.owed, owing_account.available) == (0, 30)
    owing_redemption.refresh_from_db()
    assert owing_redemption.refund_entry.points == 50
    assert LedgerEntry.objects.filter(kind="reversal").count() == 3  # two refunds and the cancellation
    assert ledger_drift() == []


def test_expired_vouchers_give_points_back_with_the_validity_they_had(rules, store, member):
    # Given a refund rule, and a voucher bought with 100 points about to expire and 20 newer ones
    settings_change(rules, refund_expired_vouchers=True)
    old = expiring_tomorrow(store, member, "100")
    newer = earn(store, member, "50").entry.lot
    reward = reward_create(rules, points_cost=120, voucher_valid_days=7)
    redemption = catalog.redemption_create(member=member, reward=reward)

    # When the voucher expires unused and the job runs, twice
    now = redemption.voucher.expires_at + dt.timedelta(minutes=1)
    first = catalog.vouchers_expire_due(now=now)
    second = catalog.vouchers_expire_due(now=now)

    # Then one entry gave the 120 back; the 100 had passed their date and expired at once, explained
    assert (first, second) == (catalog.VoucherExpiry(vouchers=1, refunded=1, points=120), catalog.VoucherExpiry())
    redemption.refresh_from_db()
    entry = redemption.refund_entry
    assert (entry.kind, entry.points, entry.source_ref) == ("reversal", 120, f"redemption:{redemption.pk}")
    assert entry.explanation == f"Points back for your voucher {redemption.voucher.code} (Free latte), which expired unused"
    assert LedgerEntry.objects.filter(kind="reversal").count() == 1
    back = PointsLot.objects.filter(pk__gte=entry.lot_id).order_by("pk")
    assert [(lot.points, lot.remaining, lot.status, lot.expires_at, lot.earned_at) for lot in back] == [
        (100, 0, "expired", old.expires_at, old.earned_at),
        (20, 20, "available", newer.expires_at, newer.earned_at),
    ]
    expiry = LedgerEntry.objects.get(kind="expire")
    assert (expiry.points, expiry.lot_id) == (-100, entry.lot_id)
    assert expiry.explanation == f"100 pts earned on {earned_on(old, rules)} reached the end of their validity"
    account = account_for(member)
    assert (account.available, account.balance) == (30 + 20, 50)
    assert ledger_drift() == []


def test_the_expiry_task_records_its_run(rules, store, member, latte):
    earn(store, member, "50")
    redemption = catalog.redemption_create(member=member, reward=latte)
    with time_machine.travel(redemption.voucher.expires_at + dt.timedelta(seconds=1)):
        counts = tasks.expire_vouchers()
        assert tasks.expire_vouchers() == {"vouchers": 0, "refunded": 0, "points": 0}
    assert counts == {"vouchers": 1, "refunded": 0, "points": 0}
    run = JobRun.objects.filter(job="expire_vouchers").order_by("started_at").first()
    assert (run.status, run.counts) == ("done", counts)


# --- the clock: reminders -------------------------------------------------------------------


def test_vouchers_are_reminded_once_before_they_expire(rules, store, member):
    settings_change(rules, voucher_reminder_days=3)
    earn(store, member, "300")
    month = reward_create(rules, voucher_valid_days=30)
    two_days = reward_create(rules, voucher_valid_days=2, title="Cake")
    soon = catalog.redemption_create(member=member, reward=month).voucher
    used = catalog.redemption_create(member=member, reward=month).voucher
    catalog.voucher_use(code=used.code, store=store)
    short = catalog.redemption_create(member=member, reward=two_days).voucher  # announced with its date already

    # Right away the two-day voucher is within 3 days of expiry, but its message gave the date.
    assert catalog.vouchers_remind_due() == catalog.VoucherReminders(reminded=0)
    with time_machine.travel(soon.expires_at - dt.timedelta(days=2)):
        first = tasks.remind_vouchers()
        second = tasks.remind_vouchers()

    assert (first, second) == ({"reminded": 1}, {"reminded": 0})
    message = Notification.objects.get(kind="voucher_expiring")
    assert (message.member, message.key) == (member, f"voucher-expiring:{soon.code}")
    assert message.subject == "Your voucher for Free latte expires soon"
    assert soon.code in message.body
    assert Voucher.objects.get(pk=soon.pk).reminded_at is not None
    assert Voucher.objects.get(pk=short.pk).reminded_at is None


def test_no_reminders_when_the_programme_sends_none(rules, store, member, latte):
    settings_change(rules, voucher_reminder_days=0)
    earn(store, member, "50")
    voucher = catalog.redemption_create(member=member, reward=latte).voucher
    assert catalog.vouchers_remind_due(now=voucher.expires_at - dt.timedelta(hours=1)) == catalog.VoucherReminders()
    assert not Notification.objects.filter(kind="voucher_expiring").exists()


# --- the catalog as a member sees it -------------------------------------------------------


def test_the_catalog_says_what_stands_between_the_member_and_each_reward(rules, store, member, django_assert_num_queries):
    # Given a member with 60 points, a silver tier and one latte already redeemed
    now = timezone.now()
    silver, gold = tier_create(rules, "silver", 1), tier_create(rules, "gold", 2)
    MemberTier.objects.update_or_create(member=member, defaults={"tier": silver})
    earn(store, member, "110")
    latte = reward_create(rules, points_cost=50, limit_per_member=1)
    catalog.redemption_create(member=member, reward=latte)
    cake = reward_create(rules, points_cost=60, title="Cake", min_tier=silver)
    reward_create(rules, points_cost=70, title="Mug", kind=Reward.Kind.MERCHANDISE)
    reward_create(rules, points_cost=10, title="Lounge", kind=Reward.Kind.EXPERIENCE, min_tier=gold)
    reward_create(rules, points_cost=10, title="Tote", stock=0)
    reward_create(rules, points_cost=10, title="Moon cake", available_from=now + dt.timedelta(days=3))
    reward_create(rules, points_cost=10, title="Hidden", visible_from=now + dt.timedelta(days=1))
    reward_create(rules, points_cost=10, title="Retired", active=False)

    # When the catalog is read, in a fixed number of queries (the programme's settings are read
    # once per process for a few seconds, rewards.config, and are not the catalog's)
    config.current()
    with django_assert_num_queries(4):
        items = {item.reward.title: item for item in catalog.catalog_for(member, at=now)}

    # Then every visible reward is there with its flags
    assert set(items) == {"Free latte", "Cake", "Mug", "Lounge", "Tote", "Moon cake"}
    assert items["Cake"].can_redeem is True
    assert (items["Mug"].affordable, items["Mug"].points_needed, items["Mug"].can_redeem) == (False, 10, False)
    assert (items["Lounge"].locked_by_tier, items["Lounge"].required_tier, items["Lounge"].can_redeem) == (True, gold, False)
    assert (items["Cake"].locked_by_tier, items["Cake"].points_needed) == (False, 0)
    assert (items["Free latte"].limit_reached, items["Free latte"].can_redeem) == (True, False)
    assert (items["Tote"].sold_out, items["Tote"].can_redeem) == (True, False)
    assert (items["Moon cake"].not_yet_redeemable, items["Moon cake"].can_redeem) == (True, False)
    assert [item.reward for item in items.values() if item.can_redeem] == [cake]


def test_the_catalog_for_nobody_in_particular(rules, latte, django_assert_num_queries):
    with django_assert_num_queries(1):
        (item,) = catalog.catalog_for(None)
    assert (item.reward, item.affordable, item.points_needed, item.can_redeem, item.sold_out) == (latte, None, None, None, False)


def test_a_member_without_points_sees_what_they_need(rules, member, latte):
    (item,) = catalog.catalog_for(member)
    assert (item.affordable, item.points_needed, item.locked_by_tier, item.limit_reached) == (False, 50, False, False)


def test_redeeming_takes_a_bounded_number_of_queries(rules, store, member, django_assert_max_num_queries):
    # Stock and a limit per member: the checks that cost a statement each.
    reward = reward_create(rules, stock=10, limit_per_member=5)
    earn(store, member, "100")
    with django_assert_max_num_queries(22):
        catalog.redemption_create(member=member, reward=reward)


# --- the admin ------------------------------------------------------------------------------


@pytest.fixture
def admin_client(client, roles, rules):
    user = UserFactory(role="Programme admin")
    client.force_login(user)
    client.user = user
    return client


@pytest.mark.parametrize("model", ["reward", "redemption", "voucher"])
def test_the_catalog_changelists_open_and_search(admin_client, voucher, model):
    url = reverse(f"admin:rewards_{model}_changelist")
    assert admin_client.get(url).status_code == 200
    assert admin_client.get(url, {"q": voucher.member.member_number}).status_code == 200


def test_vouchers_are_found_by_their_code_as_typed(admin_client, voucher):
    response = admin_client.get(reverse("admin:rewards_voucher_changelist"), {"q": voucher.code.lower().replace("-", " ")})
    assert voucher.code in response.text


def test_a_reward_is_added_in_every_language(admin_client, rules):
    response = admin_client.post(
        reverse("admin:rewards_reward_add"),
        {
            "kind": "fixed_voucher",
            "title_en": "¥10 off",
            "title_zh_hans": "立减10元",
            "description_en": "",
            "points_cost": "200",
            "value": "10",
            "voucher_valid_days": "30",
            "active": "on",
        },
    )
    assert response.status_code == 302, response.content
    reward = Reward.objects.get()
    assert (reward.programme, reward.title_zh_hans, reward.points_cost) == (rules.programme, "立减10元", 200)


@pytest.fixture
def superuser_client(client, rules):
    client.force_login(UserFactory(is_superuser=True))
    return client


def as_posted(page) -> dict[str, object]:
    """Return what a browser posts back from an admin change page left as it was."""
    data: dict[str, object] = {}
    for field in page.context["adminform"].form:
        widget, value = field.field.widget, field.value()
        if isinstance(widget, forms.ClearableFileInput):
            continue
        if isinstance(widget, forms.CheckboxInput):
            data.update({field.html_name: "on"} if value else {})
        elif isinstance(widget, forms.MultiWidget):
            data.update({f"{field.html_name}_{i}": part or "" for i, part in enumerate(widget.decompress(value))})
        else:
            data[field.html_name] = "" if value is None else value
    return data


def test_saving_a_reward_in_the_admin_never_undoes_redemptions_made_meanwhile(superuser_client, rules, store, member):
    # Given a reward with 5 in stock, whose page a merchant opens
    reward = reward_create(rules, stock=5, description="Any size")
    url = reverse("admin:rewards_reward_change", args=[reward.pk])
    page = superuser_client.get(url)
    posted = as_posted(page)
    # And a member who redeems one while the page is open
    earn(store, member, "200")
    catalog.redemption_create(member=member, reward=reward)

    # When the merchant saves a new description, leaving the stock as shown
    response = superuser_client.post(url, {**posted, "description_en": "Any size, hot or iced"})

    # Then the description changed and the redemption was not undone
    assert response.status_code == 302, response.context["adminform"].form.errors
    reward.refresh_from_db()
    assert (reward.description, reward.stock) == ("Any size, hot or iced", 4)

    # When a merchant who saw 5 adds 10, the 10 are added to what is left
    assert superuser_client.post(url, {**posted, "stock": "15"}).status_code == 302
    reward.refresh_from_db()
    assert reward.stock == 14
    assert Redemption.objects.count() == 1
    assert ledger_drift() == []
    # The page carried the stock it showed, for the browser to send back.
    assert '<input type="hidden" name="stock_seen" value="5"' in page.text


def test_taking_more_stock_away_in_the_admin_than_is_left_is_a_form_error(superuser_client, rules, store, member):
    reward = reward_create(rules, stock=2, description="Any size")
    url = reverse("admin:rewards_reward_change", args=[reward.pk])
    posted = as_posted(superuser_client.get(url))
    earn(store, member, "200")
    catalog.redemption_create(member=member, reward=reward)

    # The merchant saw 2 and takes 2 away, but only 1 is left: refused, naming the field, nothing saved
    response = superuser_client.post(url, {**posted, "stock": "0", "description_en": "Sold out soon"})

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "stock": ["Only 1 left in stock now (2 when the page was opened): the stock cannot go below 0."]
    }
    reward.refresh_from_db()
    assert (reward.stock, reward.description) == (1, "Any size")

    # A change form that does not say what stock it showed is refused too
    response = superuser_client.post(url, {key: value for key, value in posted.items() if key != "stock_seen"})
    assert response.status_code == 200
    assert "This page is out of date" in response.text
    reward.refresh_from_db()
    assert reward.stock == 1


def test_switching_a_reward_between_unlimited_and_a_number_in_the_admin_sets_it(superuser_client, rules):
    reward = reward_create(rules, stock=3)
    url = reverse("admin:rewards_reward_change", args=[reward.pk])

    assert superuser_client.post(url, {**as_posted(superuser_client.get(url)), "stock": ""}).status_code == 302
    reward.refresh_from_db()
    assert reward.stock is None

    page = superuser_client.get(url)
    assert '<input type="hidden" name="stock_seen" id="id_stock_seen">' in page.text
    assert superuser_client.post(url, {**as_posted(page), "stock": "7"}).status_code == 302
    reward.refresh_from_db()
    assert reward.stock == 7


def test_a_redemption_is_cancelled_from_the_admin_through_the_service(admin_client, voucher):
    response = admin_client.post(
        reverse("admin:rewards_redemption_changelist"),
        {"action": "cancel", "_selected_action": [voucher.redemption.pk]},
    )
    assert response.status_code == 302
    redemption = Redemption.objects.get()
    assert (redemption.status, redemption.refund_entry.actor) == ("cancelled", admin_client.user)


def test_redemptions_and_vouchers_are_read_only_in_the_admin(admin_client, voucher):
    response = admin_client.get(reverse("admin:rewards_voucher_change", args=[voucher.pk]))
    assert response.status_code == 200
    assert 'name="_save"' not in response.text
    response = admin_client.get(reverse("admin:rewards_redemption_add"))
    assert response.status_code == 403


# --- races on PostgreSQL --------------------------------------------------------------------


@pytest.mark.parametrize("round_number", range(3))
@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_64_members_racing_for_the_last_5_in_stock_get_exactly_5(rules, store, round_number):
    # Given 64 members who can each afford the reward, and 5 left in stock
    reward = reward_create(rules, stock=5)
    members = [MemberFactory() for _i in range(64)]
    for i, member in enumerate(members):
        earn(store, member, "60", receipt=f"R{round_number}-{i}")

    # When they all redeem it at the same moment
    outcomes = run_at_once(64, lambda i: catalog.redemption_create(member=members[i], reward=reward))

    # Then exactly 5 got it and paid for it; the others were told it is sold out and kept their points
    assert unexpected(outcomes, catalog.RewardUnavailable) == []
    assert {o.error.reason for o in outcomes if o.error is not None} == {"sold_out"}
    winners = {o.value.member_id for o in outcomes if o.error is None}
    assert len(winners) == 5
    reward.refresh_from_db()
    assert reward.stock == 0
    assert Redemption.objects.count() == Voucher.objects.count() == 5
    assert sorted(account_for(m).available for m in members) == [10] * 5 + [60] * 59
    assert {account_for(m).available for m in members if m.pk in winners} == {10}
    assert ledger_drift() == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_one_member_racing_many_redemptions_never_overspends(rules, store, member):
    # Given a member whose points pay for exactly 3 lattes, in two lots
    reward = reward_create(rules, points_cost=40)
    earn(store, member, "70", receipt="R-1", days_ago=5)
    earn(store, member, "50", receipt="R-2")

    # When 32 redemptions of theirs arrive at once
    outcomes = run_at_once(32, lambda _i: catalog.redemption_create(member=member, reward=reward))

    # Then 3 went through and the rest were refused for points, never below zero
    assert unexpected(outcomes, services.InsufficientPoints) == []
    assert sum(o.error is None for o in outcomes) == 3
    assert errors_by_type(outcomes) == {services.InsufficientPoints: 29}
    account = account_for(member)
    assert (account.available, account.lifetime_spent) == (0, 120)
    assert LedgerEntry.objects.filter(kind="spend").count() == Voucher.objects.count() == 3
    assert ledger_drift() == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_one_member_racing_past_the_limit_per_member_gets_the_limit(rules, store, member):
    reward = reward_create(rules, points_cost=10, limit_per_member=2)
    earn(store, member, "500")
    outcomes = run_at_once(16, lambda _i: catalog.redemption_create(member=member, reward=reward))
    assert unexpected(outcomes, catalog.RewardUnavailable) == []
    assert sum(o.error is None for o in outcomes) == 2
    assert account_for(member).available == 480
    assert ledger_drift() == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_tills_racing_to_use_one_voucher_use_it_once(rules, store, member):
    reward = reward_create(rules)
    earn(store, member, "50")
    code = catalog.redemption_create(member=member, reward=reward).voucher.code
    stores = [StoreFactory(code=f"t{i:02d}") for i in range(16)]

    outcomes = run_at_once(16, lambda i: catalog.voucher_use(code=code, store=stores[i], via="Till"))

    assert unexpected(outcomes, catalog.VoucherAlreadyUsed) == []
    (winner,) = [o.value for o in outcomes if o.error is None]
    assert Voucher.objects.get(code=code).used_store == winner.used_store


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_cancel_racing_a_use_lets_exactly_one_win(rules, store, member):
    reward = reward_create(rules, stock=3)
    earn(store, member, "500")
    redemptions = [catalog.redemption_create(member=member, reward=reward) for _i in range(3)]

    def work(i: int) -> object:
        redemption = redemptions[i // 2]
        if i % 2:
            return catalog.voucher_use(code=redemption.voucher.code, store=store)
        return catalog.redemption_cancel(redemption=redemption)

    outcomes = run_at_once(6, work)

    assert unexpected(outcomes, catalog.VoucherUnusable, catalog.RedemptionNotCancellable) == []
    assert sum(o.error is None for o in outcomes) == 3
    cancelled = Redemption.objects.filter(status="cancelled").count()
    used = Voucher.objects.filter(status="used").count()
    assert cancelled + used == 3
    assert Voucher.objects.filter(status="cancelled").count() == cancelled
    assert account_for(member).available == 500 - 50 * used
    reward.refresh_from_db()
    assert reward.stock == cancelled
    assert ledger_drift() == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_expiry_runs_racing_each_other_and_redemptions_refund_once(rules, store):
    # Given 12 members with a voucher due to expire and points left to redeem more, under a refund rule
    settings_change(rules, refund_expired_vouchers=True)
    reward = reward_create(rules, voucher_valid_days=1)
    members = [MemberFactory() for _i in range(12)]
    with time_machine.travel(timezone.now() - dt.timedelta(days=2)):
        for i, member in enumerate(members):
            earn(store, member, "200", receipt=f"R-{i}")
            catalog.redemption_create(member=member, reward=reward)

    # When 4 expiry runs in small chunks race 12 new redemptions
    def work(i: int) -> object:
        if i < 4:
            return catalog.vouchers_expire_due(chunk=3)
        return catalog.redemption_create(member=members[i - 4], reward=reward)

    outcomes = run_at_once(16, work)

    # Then every old voucher expired and was refunded exactly once, and nothing drifted
    assert [o.error for o in outcomes if o.error is not None] == []
    assert sum(o.value.refunded for o in outcomes[:4]) == 12
    assert Voucher.objects.filter(status="expired").count() == 12
    assert LedgerEntry.objects.filter(kind="reversal").count() == 12
    assert {account_for(m).available for m in members} == {200 - 50 + 50 - 50}
    assert ledger_drift() == []
