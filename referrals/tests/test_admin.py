"""The referral admin: one settings row, referrals read and decided by actions, codes read-only."""

from decimal import Decimal

import pytest
from django.urls import reverse

from members.tests.factories import MemberFactory, UserFactory
from referrals import services
from referrals.models import Referral, ReferralCode, ReferralSettings
from rewards import services as reward_services
from rewards.models import LedgerEntry

pytestmark = pytest.mark.django_db
REFERRALS = reverse("admin:referrals_referral_changelist")


@pytest.fixture
def admin_client(client, roles, rules):
    user = UserFactory(role="Programme admin")
    client.force_login(user)
    client.user = user
    return client


@pytest.fixture
def offer(offer):
    offer.manual_approval = True
    offer.save()
    return offer


@pytest.fixture
def code(offer):
    return services.referral_code_for(MemberFactory(name="Mei Lin", phone="+8613900000001")).code


@pytest.fixture
def in_review(store, code):
    friend = MemberFactory(name="Wei Zhang", referral_code=code)
    reward_services.purchase_record(store=store, receipt_number="R-1", amount="50", member=friend)
    return Referral.objects.get(friend=friend)


def act(client, action, referrals, **extra):
    return client.post(REFERRALS, {"action": action, "_selected_action": [r.pk for r in referrals], **extra}, follow=True)


# --- settings ---------------------------------------------------------------------------------


def test_the_settings_are_one_row_added_once_never_deleted(admin_client, rules):
    add = reverse("admin:referrals_referralsettings_add")
    assert admin_client.get(add).status_code == 200
    response = admin_client.post(
        add,
        {
            "active": "on",
            "qualifying_amount": "30",
            "qualifying_days": "30",
            "referrer_points": "200",
            "friend_points": "100",
            "hold_days": "14",
            "monthly_cap": "10",
            "guard_same_contact": "on",
            "burst_hours": "24",
        },
    )
    assert response.status_code == 302, response.content
    settings = ReferralSettings.objects.get()
    assert (settings.programme, settings.referrer_points, settings.guard_same_device) == (rules.programme, 200, False)

    assert admin_client.get(add).status_code == 403
    delete = reverse("admin:referrals_referralsettings_delete", args=[settings.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    changelist = admin_client.get(reverse("admin:referrals_referralsettings_changelist"))
    assert changelist["Location"] == reverse("admin:referrals_referralsettings_change", args=[settings.pk])
    assert ReferralSettings.objects.count() == 1


def test_a_bad_setting_is_refused_and_changes_nothing(admin_client, offer):
    change = reverse("admin:referrals_referralsettings_change", args=[offer.pk])
    response = admin_client.post(
        change, {"qualifying_amount": "-1", "qualifying_days": "30", "hold_days": "x", "burst_hours": "24"}
    )
    assert response.status_code == 200
    offer.refresh_from_db()
    assert offer.qualifying_amount == Decimal(30)


# --- referrals --------------------------------------------------------------------------------


def test_referrals_are_listed_searched_filtered_and_read_with_their_events(admin_client, in_review, code):
    friend_number = in_review.friend.member_number

    listed = admin_client.get(REFERRALS).content.decode()
    by_number = admin_client.get(REFERRALS, {"q": friend_number}).content.decode()
    by_code = admin_client.get(REFERRALS, {"q": code}).content.decode()
    flagged = admin_client.get(REFERRALS, {"flag": "manual"}).content.decode()
    other_flag = admin_client.get(REFERRALS, {"flag": "same_device"}).content.decode()
    rewarded = admin_client.get(REFERRALS, {"status__exact": "rewarded"}).content.decode()
    page = admin_client.get(reverse("admin:referrals_referral_change", args=[in_review.pk])).content.decode()

    assert "Every reward is approved by hand" in listed
    assert friend_number in by_number
    assert friend_number in by_code
    assert friend_number in flagged
    assert friend_number not in other_flag
    assert friend_number not in rewarded
    assert "Every reward is approved by hand" in page  # the review event's reason, in the read-only inline
    assert 'name="_save"' not in page
    assert admin_client.get(reverse("admin:referrals_referral_add")).status_code == 403
    assert admin_client.post(reverse("admin:referrals_referral_delete", args=[in_review.pk]), {"post": "yes"}).status_code == 403


def test_approving_by_action_pays_once(admin_client, in_review, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):  # the inviter's share is settled after the commit
        act(admin_client, "approve", [in_review])
    response = act(admin_client, "approve", [in_review])

    in_review.refresh_from_db()
    assert in_review.status == Referral.Status.QUALIFIED
    assert LedgerEntry.objects.filter(kind="referral").count() == 2
    assert "This referral was already decided." in response.content.decode()


def test_rejecting_by_action_asks_for_a_note_first(admin_client, in_review):
    asked = act(admin_client, "reject", [in_review])
    assert 'name="note"' in asked.content.decode()
    empty = act(admin_client, "reject", [in_review], apply="1", note="")
    assert 'name="note"' in empty.content.decode()
    in_review.refresh_from_db()
    assert in_review.status == Referral.Status.REVIEW

    done = act(admin_client, "reject", [in_review], apply="1", note="Same household")

    in_review.refresh_from_db()
    assert in_review.status == Referral.Status.REJECTED
    assert in_review.events.last().reason == "Same household"
    assert "Rejected 1 referral(s)." in done.content.decode()


def test_a_store_manager_has_no_referrals_in_the_admin(client, roles, store, in_review):
    client.force_login(UserFactory(role="Store manager", stores=[store]))
    listed = client.get(REFERRALS)
    assert listed.status_code == 403
    client.post(REFERRALS, {"action": "approve", "_selected_action": [in_review.pk]})
    in_review.refresh_from_db()
    assert in_review.status == Referral.Status.REVIEW


# --- codes ------------------------------------------------------------------------------------


def test_codes_are_read_only(admin_client, code):
    found = ReferralCode.objects.get(code=code)
    listed = admin_client.get(reverse("admin:referrals_referralcode_changelist"), {"q": code}).content.decode()
    change = reverse("admin:referrals_referralcode_change", args=[found.pk])

    assert code in listed
    assert admin_client.get(reverse("admin:referrals_referralcode_add")).status_code == 403
    assert admin_client.get(change).status_code == 200
    assert admin_client.post(change, {"code": "HACKED1", "shares": "99"}).status_code == 403
    assert ReferralCode.objects.get(pk=found.pk).code == code
