"""The till API and referrals: a code on member creation, and a member's referrals."""

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from members import services as member_services
from members.models import Member
from members.services import fingerprint_digest
from members.tests.factories import MemberFactory, StoreFactory, UserFactory
from referrals import services
from referrals.models import Referral, ReferralEvent
from rewards import services as reward_services
from rewards.models import LedgerEntry

pytestmark = pytest.mark.django_db
PROBLEM = "application/problem+json"


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()


def client_for(store):
    _key, raw = member_services.api_key_create(store=store, name="Till 1")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return client


@pytest.fixture
def api(store):
    return client_for(store)


def problem_of(response, status):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    return response.json()


# --- POST /api/v1/members with a code -------------------------------------------------------------


def test_a_member_created_with_a_code_becomes_the_inviters_referral(api, referrer, code):
    response = api.post(
        "/api/v1/members",
        {"phone": "138 0013 8000", "referral_code": code.lower(), "device_fingerprint": "till-device-7"},
        format="json",
    )

    assert response.status_code == 201, response.content
    referral = Referral.objects.get()
    assert referral.referrer == referrer
    assert referral.friend.member_number == response.json()["member_number"]
    assert referral.device == fingerprint_digest("device", "till-device-7")
    assert referral.signup_ip is None  # the till's address is not the customer's


def test_a_device_the_inviter_used_flags_the_referral(api, referrer, code):
    services.device_seen(member=referrer, device="shared-phone")
    api.post(
        "/api/v1/members", {"phone": "13800138000", "referral_code": code, "device_fingerprint": "shared-phone"}, format="json"
    )
    assert Referral.objects.get().flags == [Referral.Flag.SAME_DEVICE]


@pytest.mark.parametrize("typed", ["ZZZZZZZ", "not a code!", "x" * 32])
def test_an_unknown_code_is_a_422_naming_the_field_and_creates_nobody(api, referrer, typed):
    members = Member.objects.count()

    body = problem_of(api.post("/api/v1/members", {"phone": "13800138000", "referral_code": typed}, format="json"), 422)

    assert list(body["errors"]) == ["referral_code"]
    assert Member.objects.count() == members
    assert not Referral.objects.exists()
    assert not ReferralEvent.objects.exists()


def test_an_overlong_code_is_a_400(api, referrer):
    body = problem_of(api.post("/api/v1/members", {"phone": "13800138000", "referral_code": "X" * 33}, format="json"), 400)
    assert "referral_code" in body["errors"]
    assert Member.objects.count() == 1


def test_a_replayed_creation_with_a_code_refers_once(api, referrer, code):
    body = {"phone": "13800138000", "referral_code": code}
    first = api.post("/api/v1/members", body, format="json", HTTP_IDEMPOTENCY_KEY="enrol-1")
    again = api.post("/api/v1/members", body, format="json", HTTP_IDEMPOTENCY_KEY="enrol-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert Referral.objects.count() == 1


# --- GET /api/v1/members/{member_number}/referrals -----------------------------------------------


def test_a_members_referrals_with_masked_friends_counts_and_points(
    api, store, referrer, code, offer, django_capture_on_commit_callbacks
):
    offer.hold_days = 0
    offer.save()
    paid = MemberFactory(name="Wei Zhang", referral_code=code)
    with django_capture_on_commit_callbacks(execute=True):  # the inviter's share is settled after the commit
        reward_services.purchase_record(store=store, receipt_number="R-1", amount="50", member=paid)
    member_services.member_enrol(channel="api", phone="+8613912345678", referral_code=code)

    body = api.get(f"/api/v1/members/{referrer.member_number}/referrals").json()

    assert body["code"] == code
    assert body["link"] == f"http://testserver/join/{code}/"
    assert body["referred_by"] is None
    assert [(f["name"], f["status"]) for f in body["friends"]] == [("••• 5678", "joined"), ("Wei", "rewarded")]
    assert body["friends"][1]["qualified_at"] is not None
    assert body["friends"][0]["qualified_at"] is None
    assert body["counts"] == {"joined": 1, "review": 0, "qualified": 0, "rewarded": 1, "expired": 0, "rejected": 0}
    assert body["points_earned"] == 200
    assert "13912345678" not in str(body)

    friend = api.get(f"/api/v1/members/{paid.member_number}/referrals").json()
    assert friend["referred_by"]["name"] == "Mei"
    assert friend["referred_by"]["status"] == "rewarded"
    assert friend["points_earned"] == 100
    assert friend["friends"] == []
    assert friend["code"] != code


def test_points_taken_back_while_held_are_not_counted(api, store, referrer, code, django_capture_on_commit_callbacks):
    friend = MemberFactory(name="Wei Zhang", referral_code=code)
    with django_capture_on_commit_callbacks(execute=True):
        reward_services.purchase_record(store=store, receipt_number="R-1", amount="50", member=friend)
    with django_capture_on_commit_callbacks(execute=True):
        services.referral_reject(referral=Referral.objects.get(), by=UserFactory(), note="Second account")

    body = api.get(f"/api/v1/members/{referrer.member_number}/referrals").json()

    assert body["points_earned"] == 0
    assert body["counts"]["rejected"] == 1
    assert LedgerEntry.objects.filter(account_id=referrer.pk, kind="withdrawal").exists()


def test_unknown_member_no_key_and_another_stores_key(api, referrer):
    url = f"/api/v1/members/{referrer.member_number}/referrals"
    assert problem_of(api.get("/api/v1/members/0000000000/referrals"), 404)
    assert problem_of(APIClient().get(url), 401)
    # Members belong to the programme, not to a store: any store's till reads them, as it reads the member.
    elsewhere = client_for(StoreFactory(code="hz01"))
    assert elsewhere.get(url).json() == api.get(url).json()
    assert elsewhere.get(f"/api/v1/members/{referrer.member_number}").status_code == 200


def test_the_endpoint_is_in_the_schema(api):
    schema = APIClient().get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/api/v1/members/{member_number}/referrals"]["get"]
    assert operation["operationId"] == "members_referrals"
    assert {"200", "404"} <= operation["responses"].keys()
    create = schema["paths"]["/api/v1/members"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    fields = schema["components"]["schemas"][create.rsplit("/", 1)[1]]["properties"]
    assert {"referral_code", "device_fingerprint"} <= fields.keys()
