"""A referral's life through the purchase and return hooks, the clock and the review queue; the fraud guards."""

import datetime as dt

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.utils import timezone

from members.models import Member, Notification
from members.tests.factories import MemberFactory, UserFactory
from referrals import services
from referrals.models import Referral, ReferralCode, ReferralEvent
from rewards import services as reward_services
from rewards.explanations import explain
from rewards.models import LedgerEntry, Reward, Voucher
from rewards.selectors import account_for, ledger_drift

pytestmark = pytest.mark.django_db


@pytest.fixture
def referrer(offer):
    """An inviter with a Gmail address, for the guard that reads addresses as the mailbox they reach."""
    return MemberFactory(name="Mei Lin", email="mei.lin@gmail.com", phone="+8613700000001")


def friend_joins(code: str, **details: object) -> Member:
    return MemberFactory(name="Wei Zhang", referral_code=code, **details)


@pytest.fixture
def buy(committed):
    def record(store, member, amount="50.00", receipt="R-1", **sale):
        return committed(
            reward_services.purchase_record, store=store, receipt_number=receipt, amount=amount, member=member, **sale
        )

    return record


def referral_entries(member: Member) -> list[tuple[str, int]]:
    entries = LedgerEntry.objects.filter(account_id=member.pk, kind__in=["referral", "withdrawal"]).order_by("pk")
    return [(entry.kind, entry.points) for entry in entries]


def statuses(referral: Referral) -> list[str]:
    return list(referral.events.values_list("status", flat=True))


# --- codes ------------------------------------------------------------------------------------


def test_a_member_gets_one_code_made_on_first_asking_and_read_back_loosely(referrer):
    first = services.referral_code_for(referrer)
    again = services.referral_code_for(referrer)
    typed = first.code.lower()[:3] + " - " + first.code.lower()[3:]

    assert first.pk == again.pk
    assert ReferralCode.objects.count() == 1
    assert services.referral_code_find(typed) == first
    assert services.referral_code_find("NOT-A-CODE!") is None


# --- joining ----------------------------------------------------------------------------------


def test_a_friend_joining_with_a_code_becomes_a_referral_in_status_joined(referrer, code):
    friend = friend_joins(code)

    referral = Referral.objects.get()
    assert (referral.referrer, referral.friend, referral.status, referral.flags) == (referrer, friend, "joined", [])
    assert referral.qualify_by == referral.joined_at + dt.timedelta(days=30)
    assert statuses(referral) == ["joined"]


@pytest.mark.parametrize(
    ("typed", "message"),
    [("ZZZZZZZ", "No member has this referral code"), ("!!", "No member has this referral code")],
)
def test_an_unknown_code_refuses_the_enrolment_and_writes_nothing(referrer, typed, message):
    with pytest.raises(ValidationError) as refused:
        MemberFactory(referral_code=typed, phone="+8613900000009")

    assert message in refused.value.message_dict["referral_code"][0]
    assert not Member.objects.filter(phone="+8613900000009").exists()
    assert not Referral.objects.exists()


def test_a_member_is_referred_once_and_never_by_themselves(referrer, code):
    friend = friend_joins(code)
    other = MemberFactory()
    other_code = services.referral_code_for(other).code

    with pytest.raises(ValidationError) as twice:
        services.referral_join(friend=friend, code=other_code)
    with pytest.raises(ValidationError) as self_referral:
        services.referral_join(friend=referrer, code=code)

    assert "already referred" in twice.value.message_dict["referral_code"][0]
    assert "your own" in self_referral.value.message_dict["referral_code"][0]
    assert Referral.objects.count() == 1


def test_with_referrals_off_a_code_is_ignored(offer, code):
    offer.active = False
    offer.save()

    friend = friend_joins(code)

    assert friend.pk is not None
    assert not Referral.objects.exists()


# --- qualifying, holding, rewarding -----------------------------------------------------------


def test_the_whole_life_joined_qualified_held_then_rewarded_with_explained_points(store, referrer, code, buy):
    friend = friend_joins(code)

    buy(store, friend, amount="20.00", receipt="SMALL")  # under ¥30: not the qualifying purchase
    assert Referral.objects.get().status == "joined"
    buy(store, friend, amount="35.00", receipt="FIRST")

    referral = Referral.objects.get()
    assert referral.status == "qualified"
    assert referral.purchase.receipt_number == "FIRST"
    assert referral.hold_until == referral.purchase.occurred_at + dt.timedelta(days=14)
    assert (referral.referrer_points, referral.friend_points) == (200, 100)
    assert account_for(referrer).pending == 200
    assert referral_entries(friend) == [("referral", 100)]
    referrer_entry = LedgerEntry.objects.get(account_id=referrer.pk, kind="referral")
    assert explain(referrer_entry) == "Thank you for inviting Wei, who joined and made a first purchase: 200 pts"
    friend_entry = LedgerEntry.objects.get(account_id=friend.pk, kind="referral")
    assert explain(friend_entry) == "Welcome reward for joining with Mei's invitation: 100 pts"
    assert set(Notification.objects.filter(kind="referral_reward").values_list("member_id", flat=True)) == {
        referrer.pk,
        friend.pk,
    }

    assert services.referrals_reward_due().referrals == 0  # still held
    with time_machine.travel(referral.hold_until + dt.timedelta(minutes=1)):
        assert services.referrals_reward_due().referrals == 1
        assert services.referrals_reward_due().referrals == 0  # a second run finds nothing
        reward_services.points_release_due()

    referral.refresh_from_db()
    assert referral.status == "rewarded"
    assert statuses(referral) == ["joined", "qualified", "rewarded"]
    assert account_for(referrer).available == 200
    assert ledger_drift() == []


def test_a_purchase_before_joining_or_after_the_deadline_does_not_qualify(store, referrer, code, buy):
    friend = friend_joins(code)
    referral = Referral.objects.get()

    with time_machine.travel(referral.qualify_by + dt.timedelta(hours=1)):
        buy(store, friend, receipt="LATE")

    referral.refresh_from_db()
    assert referral.status == "joined"
    assert account_for(referrer).pending == 0


def test_the_clock_expires_referrals_that_never_qualified_once(store, referrer, code, buy):
    friend_joins(code)
    on_time = friend_joins(code, phone="+8613700000077", email="ontime@example.com")
    buy(store, on_time, receipt="ON-TIME")
    referral = Referral.objects.get(status="joined")

    assert services.referrals_expire_due().referrals == 0
    with time_machine.travel(referral.qualify_by + dt.timedelta(seconds=1)):
        first = services.referrals_expire_due()
        second = services.referrals_expire_due()

    referral.refresh_from_db()
    assert (first.referrals, second.referrals) == (1, 0)
    assert referral.status == "expired"
    assert statuses(referral) == ["joined", "expired"]
    assert Referral.objects.get(friend=on_time).status == "qualified"


def test_a_return_during_the_hold_cancels_both_rewards_and_rejects(store, referrer, code, buy, committed):
    friend = friend_joins(code)
    purchase = buy(store, friend, amount="35.00").purchase

    # Returned at the counter: the cashier is on record, and the members still read "returned".
    committed(
        reward_services.purchase_return, purchase=purchase, return_number="X-1", amount="35.00", by=UserFactory(is_staff=True)
    )

    referral = Referral.objects.get()
    assert referral.status == "rejected"
    assert ReferralEvent.objects.filter(referral=referral, status="rejected").get().reason == (
        "The qualifying purchase was returned."
    )
    assert referral_entries(referrer) == [("referral", 200), ("withdrawal", -200)]
    assert referral_entries(friend) == [("referral", 100), ("withdrawal", -100)]
    reversal = LedgerEntry.objects.get(account_id=referrer.pk, kind="withdrawal")
    assert explain(reversal) == "Referral reward withdrawn: the qualifying purchase was returned (-200 pts)"
    assert (account_for(referrer).pending, account_for(referrer).available) == (0, 0)
    with time_machine.travel(referral.hold_until + dt.timedelta(days=1)):
        assert services.referrals_reward_due().referrals == 0
    assert ledger_drift() == []


def test_a_small_partial_return_keeps_the_referral_and_a_return_after_the_hold_changes_nothing(store, referrer, code, buy):
    friend = friend_joins(code)
    purchase = buy(store, friend, amount="50.00").purchase

    reward_services.purchase_return(purchase=purchase, return_number="X-1", amount="10.00")  # ¥40 still qualifies
    assert Referral.objects.get().status == "qualified"
    referral = Referral.objects.get()
    with time_machine.travel(referral.hold_until + dt.timedelta(minutes=1)):
        services.referrals_reward_due()
        reward_services.purchase_return(purchase=purchase, return_number="X-2", amount="40.00")

    referral.refresh_from_db()
    assert referral.status == "rewarded"
    assert referral_entries(referrer) == [("referral", 200)]
    assert ledger_drift() == []


def test_the_monthly_cap_stops_the_inviters_points_but_still_rewards_the_friend(store, offer, referrer, code, buy):
    offer.monthly_cap = 3
    offer.save()
    friends = [friend_joins(code, phone=f"+861370000010{i}", email=f"f{i}@example.com") for i in range(4)]

    for i, friend in enumerate(friends):
        buy(store, friend, receipt=f"R-{i}")

    paid = Referral.objects.filter(capped=False).count()
    capped = Referral.objects.get(capped=True)
    assert paid == 3
    assert capped.status == "qualified"
    assert (capped.referrer_points, capped.friend_points) == (0, 100)
    assert "limit of 3" in capped.events.last().reason
    assert account_for(referrer).pending == 600
    assert account_for(capped.friend).pending == 100


def test_manual_approval_sends_every_qualified_referral_to_review_then_pays_on_approval(
    store, offer, referrer, code, buy, committed
):
    offer.manual_approval = True
    offer.save()
    reviewer = UserFactory()
    friend = friend_joins(code)

    buy(store, friend)
    referral = Referral.objects.get()
    assert (referral.status, referral.flags) == ("review", ["manual"])
    assert referral_entries(referrer) == referral_entries(friend) == []

    committed(services.referral_approve, referral=referral, by=reviewer, note="Known regulars")
    referral.refresh_from_db()

    assert referral.status == "qualified"
    assert referral_entries(referrer) == [("referral", 200)]
    event = referral.events.get(status="review", by=reviewer)
    assert event.reason == "Known regulars"
    with pytest.raises(ValidationError):
        services.referral_approve(referral=referral, by=reviewer)  # decided already: no second payout
    assert referral_entries(referrer) == [("referral", 200)]


def test_rejecting_needs_a_note_and_takes_back_the_held_points(store, referrer, code, buy, committed):
    reviewer = UserFactory()
    friend = friend_joins(code)
    buy(store, friend)
    referral = Referral.objects.get()

    with pytest.raises(ValidationError) as no_note:
        services.referral_reject(referral=referral, by=reviewer, note=" ")
    assert referral_entries(referrer) == [("referral", 200)]
    committed(services.referral_reject, referral=referral, by=reviewer, note="Same household, second account")

    referral.refresh_from_db()
    assert "note" in no_note.value.message_dict
    assert referral.status == "rejected"
    assert referral_entries(referrer) == [("referral", 200), ("withdrawal", -200)]
    reversal = LedgerEntry.objects.get(account_id=referrer.pk, kind="withdrawal")
    assert explain(reversal) == "Referral reward withdrawn after our review (-200 pts)"
    assert ledger_drift() == []


def test_catalog_rewards_are_issued_as_vouchers_when_the_hold_ends(store, offer, referrer, code, buy):
    latte = Reward.objects.create(programme=offer.programme, kind="free_item", title_en="Free latte", points_cost=200)
    offer.referrer_reward = offer.friend_reward = latte
    offer.referrer_points = offer.friend_points = 0
    offer.save()
    friend = friend_joins(code)
    buy(store, friend)
    referral = Referral.objects.get()
    assert not Voucher.objects.exists()

    with time_machine.travel(referral.hold_until + dt.timedelta(minutes=1)):
        services.referrals_reward_due()
        services.referrals_reward_due()

    assert sorted(Voucher.objects.values_list("member_id", flat=True)) == sorted([referrer.pk, friend.pk])


def test_the_hook_running_twice_pays_once(store, referrer, code, buy, committed):
    friend = friend_joins(code)
    result = buy(store, friend)

    from rewards.hooks import PurchaseRecorded

    committed(services.on_purchases, [PurchaseRecorded(purchase=result.purchase, entry=result.entry)])
    committed(services.on_purchases, [PurchaseRecorded(purchase=result.purchase, entry=result.entry)])
    services.referral_referrer_settle(referral_id=Referral.objects.get().pk)  # a retried task
    referral = Referral.objects.get()
    with time_machine.travel(referral.hold_until + dt.timedelta(minutes=1)):
        services.referrals_reward_due()
    # Granting again (as a retried task that got past its check would) finds the entries by their keys.
    services._grant(referral, member=referrer, role="referrer", points=200, by=None)
    assert services.referrals_settle_due().referrals == 0

    assert referral_entries(referrer) == [("referral", 200)]
    assert referral_entries(friend) == [("referral", 100)]
    assert statuses(referral) == ["joined", "qualified", "rewarded"]


def test_a_replayed_receipt_runs_no_hook_and_pays_nothing_more(store, referrer, code, buy):
    friend = friend_joins(code)
    buy(store, friend)
    buy(store, friend)  # the till retries the same receipt

    assert referral_entries(referrer) == [("referral", 200)]


# --- fraud guards: each with a case that trips it and one that does not -----------------------


@pytest.mark.parametrize(
    ("friend_email", "flagged"),
    [
        ("Mei.Lin+coffee@googlemail.com", True),  # the same Gmail mailbox, written differently
        ("MeiLin@gmail.com", True),
        ("mei.lin@example.com", False),  # another provider: dots may matter there
        ("meilin2@gmail.com", False),
    ],
)
def test_the_inviters_own_e_mail_is_recognised_however_written(store, referrer, code, friend_email, flagged, buy):
    friend = friend_joins(code, email=friend_email)
    buy(store, friend)

    referral = Referral.objects.get()
    assert (Referral.Flag.SAME_CONTACT in referral.flags) is flagged
    assert referral.status == ("review" if flagged else "qualified")
    assert referral_entries(referrer) == ([] if flagged else [("referral", 200)])


def test_a_friend_signing_up_on_the_inviters_device_is_flagged(store, referrer, code):
    services.device_seen(member=referrer, device="device-of-mei")

    flagged = friend_joins(code, device="device-of-mei")
    clean = friend_joins(code, device="device-of-wei", phone="+8613700000066", email="wei@example.com")

    assert Referral.objects.get(friend=flagged).flags == ["same_device"]
    assert Referral.objects.get(friend=clean).flags == []
    assert "device-of-mei" not in str(ReferralCode.objects.get(member=referrer).devices)  # only hashes are kept


def test_paying_with_the_inviters_card_is_flagged(store, referrer, code, buy):
    buy(store, referrer, receipt="MEI-1", payment_fingerprint="card-of-mei")
    flagged, clean = friend_joins(code), friend_joins(code, phone="+8613700000066", email="wei@example.com")

    buy(store, flagged, receipt="F-1", payment_fingerprint="card-of-mei")
    buy(store, clean, receipt="F-2", payment_fingerprint="card-of-wei")

    assert Referral.objects.get(friend=flagged).flags == ["same_payment"]
    assert Referral.objects.get(friend=clean).flags == []


def test_many_sign_ups_from_one_network_are_flagged_beyond_the_limit(offer, referrer, code):
    offer.signups_per_ip = 2
    offer.save()

    joined = [friend_joins(code, phone=f"+861370000020{i}", email=f"n{i}@example.com", ip="203.0.113.7") for i in range(3)]
    elsewhere = friend_joins(code, phone="+8613700000299", email="far@example.com", ip="198.51.100.1")

    flags = [Referral.objects.get(friend=member).flags for member in joined]
    assert flags == [[], [], ["ip_burst"]]
    assert Referral.objects.get(friend=elsewhere).flags == []


def test_many_friends_of_one_inviter_in_a_short_time_are_flagged(offer, referrer, code):
    offer.joins_per_referrer = 2
    offer.save()

    joined = [friend_joins(code, phone=f"+861370000030{i}", email=f"b{i}@example.com") for i in range(3)]
    with time_machine.travel(timezone.now() + dt.timedelta(hours=25)):
        later = friend_joins(code, phone="+8613700000399", email="later@example.com")

    assert [Referral.objects.get(friend=member).flags for member in joined] == [[], [], ["referrer_burst"]]
    assert Referral.objects.get(friend=later).flags == []


def test_a_purchase_rung_up_by_the_inviters_own_staff_login_is_flagged(store, offer, code, referrer, cashier, buy):
    Member.objects.filter(pk=referrer.pk).update(user=cashier)
    referrer.refresh_from_db()
    flagged, clean = friend_joins(code), friend_joins(code, phone="+8613700000066", email="wei@example.com")
    colleague = UserFactory(role="Cashier", stores=[store])

    buy(store, flagged, receipt="F-1", by=cashier)
    buy(store, clean, receipt="F-2", by=colleague)

    assert Referral.objects.get(friend=flagged).flags == ["staff_self"]
    assert Referral.objects.get(friend=flagged).status == "review"
    assert Referral.objects.get(friend=clean).status == "qualified"


def test_each_guard_can_be_switched_off(store, offer, referrer, code, buy):
    offer.guard_same_contact = False
    offer.save()

    friend = friend_joins(code, email="mei.lin+2@gmail.com")
    buy(store, friend)

    assert Referral.objects.get().status == "qualified"


def test_an_inviters_share_whose_task_was_lost_is_settled_by_the_clock_once(store, referrer, code):
    friend = friend_joins(code)
    reward_services.purchase_record(store=store, receipt_number="R-1", amount="50.00", member=friend)  # no commit: no task
    assert referral_entries(referrer) == []
    assert referral_entries(friend) == [("referral", 100)]

    first = services.referrals_settle_due()
    second = services.referrals_settle_due()

    assert (first.referrals, second.referrals) == (1, 0)
    assert referral_entries(referrer) == [("referral", 200)]
    assert Referral.objects.get().referrer_settled_at is not None


def test_a_closed_inviter_gets_nothing_and_the_friends_purchase_and_reward_still_go_through(store, referrer, code, buy):
    friend = friend_joins(code)
    Member.objects.filter(pk=referrer.pk).update(status=Member.Status.CLOSED)

    result = buy(store, friend)

    assert result.created
    referral = Referral.objects.get()
    assert (referral.status, referral.capped, referral.referrer_points) == ("qualified", True, 0)
    assert referral.events.last().reason == "The inviter's membership is no longer active."
    assert referral_entries(friend) == [("referral", 100)]
    assert referral_entries(referrer) == []


def test_the_clock_tasks_leave_a_job_run_with_their_counts(store, referrer, code):
    from referrals import tasks
    from rewards.models import JobRun

    friend_joins(code)
    late = friend_joins(code, phone="+8613700000088", email="late@example.com")
    reward_services.purchase_record(store=store, receipt_number="R-1", amount="50.00", member=late)  # task lost
    referral = Referral.objects.get(friend=late)

    with time_machine.travel(referral.qualify_by + dt.timedelta(minutes=1)):
        expired = tasks.expire_referrals()
        rewarded = tasks.reward_referrals()

    assert expired == {"referrals": 1}
    assert rewarded == {"settled": 1, "rewarded": 1}
    runs = dict(JobRun.objects.values_list("job", "counts"))
    assert runs == {"expire_referrals": {"referrals": 1}, "reward_referrals": {"settled": 1, "rewarded": 1}}


def test_a_sale_sent_late_by_the_till_is_held_from_when_it_happened(store, referrer, code, buy):
    friend = friend_joins(code)
    with time_machine.travel(timezone.now() + dt.timedelta(days=20)):
        # Bought two days after joining; the till's batch arrives eighteen days later, after the hold.
        buy(store, friend, occurred_at=Referral.objects.get().joined_at + dt.timedelta(days=2))

        referral = Referral.objects.get()
        assert referral.status == "rewarded"
        assert (account_for(friend).pending, account_for(referrer).pending) == (0, 0)
        assert referral_entries(referrer) == [("referral", 200)]
    assert ledger_drift() == []


def test_a_device_seen_at_the_inviters_own_enrolment_flags_a_friend_on_it(offer):
    inviter = MemberFactory(name="Mei", device="till-tablet-7")  # enrolled through the API with a fingerprint
    code = services.referral_code_for(inviter).code

    friend = friend_joins(code, device="till-tablet-7")

    assert Referral.objects.get(friend=friend).flags == ["same_device"]


def test_a_purchase_rung_up_by_a_staff_login_with_the_inviters_address_is_flagged(store, offer, buy, roles):
    inviter = MemberFactory(name="Mei", email="mei.lin+shop@gmail.com")  # a membership without a portal login
    code = services.referral_code_for(inviter).code
    her_staff_login = UserFactory(role="Cashier", stores=[store], email="meilin@gmail.com")
    friend = friend_joins(code)

    buy(store, friend, by=her_staff_login)

    assert Referral.objects.get(friend=friend).flags == ["staff_self"]


@pytest.mark.parametrize(
    ("name", "shown"),
    [("王小明", "王••"), ("김민준", "김••"), ("Wei Zhang", "Wei"), ("Ann", "Ann"), ("李", "李")],
)
def test_a_member_is_named_to_another_by_first_or_family_name_only(name, shown):
    member = MemberFactory(name=name)

    assert services.member_display_name(member) == shown


def test_a_return_after_the_hold_leaves_the_referral_alone_even_before_the_clock_runs(store, referrer, code, buy, committed):
    friend = friend_joins(code)
    purchase = buy(store, friend).purchase
    referral = Referral.objects.get()

    with time_machine.travel(referral.hold_until + dt.timedelta(minutes=5)):
        committed(reward_services.purchase_return, purchase=purchase, return_number="X-1", amount="50.00")

    referral.refresh_from_db()
    assert referral.status == "qualified"  # the clock will reward it
    assert referral_entries(referrer) == [("referral", 200)]
