"""Contract tests for the catalog endpoints: success, replay, conflict, refusals, and another store's access."""

import datetime as dt

import pytest
import time_machine
from django.core.cache import cache
from django.utils import timezone
from rest_framework.test import APIClient

from members import services as member_services
from members.models import Member
from members.tests.factories import MemberFactory, StoreFactory
from rewards import catalog
from rewards.models import LedgerEntry, MemberTier, Redemption, Reward, Voucher
from rewards.tests.test_catalog import earn, reward_create, tier_create

pytestmark = pytest.mark.django_db
PROBLEM = "application/problem+json"


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()


def client_for(store) -> APIClient:
    _key, raw = member_services.api_key_create(store=store, name=f"Till of {store.code}")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return client


@pytest.fixture
def api(store):
    return client_for(store)


@pytest.fixture
def other_api(db):
    return client_for(StoreFactory(code="sh02", name="Xuhui"))


@pytest.fixture
def latte(rules):
    return reward_create(rules, stock=5)


def problem_of(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    return body


def redeem(api, member, reward, headers=None):
    body = {"member_number": member.member_number, "reward_id": reward.pk}
    return api.post("/api/v1/redemptions", body, format="json", headers=headers)


# --- the catalog ----------------------------------------------------------------------------


def test_the_catalog_for_a_member_says_what_they_can_redeem(rules, api, store, member, latte):
    gold = tier_create(rules, "gold", 2)
    reward_create(rules, title="Lounge", points_cost=10, min_tier=gold)
    reward_create(rules, title="Mug", points_cost=80)
    earn(store, member, "60")

    response = api.get("/api/v1/rewards", {"member_number": member.member_number})

    assert response.status_code == 200, response.content
    items = {item["title"]: item for item in response.json()}
    assert set(items) == {"Free latte", "Lounge", "Mug"}
    assert items["Free latte"] | {"id": 0} == {
        "id": 0,
        "kind": "free_item",
        "title": "Free latte",
        "description": "",
        "image": None,
        "points_cost": 50,
        "value": None,
        "required_tier": None,
        "stock": 5,
        "limit_per_member": None,
        "available_from": None,
        "available_until": None,
        "voucher_valid_days": 30,
        "sold_out": False,
        "not_yet_redeemable": False,
        "no_longer_redeemable": False,
        "affordable": True,
        "points_needed": 0,
        "locked_by_tier": False,
        "limit_reached": False,
        "can_redeem": True,
    }
    assert items["Lounge"]["required_tier"] == {"code": "gold", "name": "Gold", "rank": 2}
    assert (items["Lounge"]["locked_by_tier"], items["Lounge"]["can_redeem"]) == (True, False)
    assert (items["Mug"]["affordable"], items["Mug"]["points_needed"]) == (False, 20)


def test_the_catalog_without_a_member_has_no_member_flags(rules, api, latte):
    (item,) = api.get("/api/v1/rewards").json()
    assert (item["affordable"], item["points_needed"], item["can_redeem"], item["sold_out"]) == (None, None, None, False)


def test_the_catalog_for_an_unknown_member_names_the_field(rules, api, latte):
    assert "member_number" in problem_of(api.get("/api/v1/rewards", {"member_number": "0000000000"}), 422)["errors"]
    assert "member_number" in problem_of(api.get("/api/v1/rewards", {"member_number": "1" * 13}), 400)["errors"]


# --- redeeming ------------------------------------------------------------------------------


def test_redeem_a_reward(rules, api, store, member, latte):
    earn(store, member, "80")

    response = redeem(api, member, latte)

    assert response.status_code == 201, response.content
    body = response.json()
    redemption = Redemption.objects.get()
    assert (body["id"], body["member_number"], body["reward_id"], body["points"]) == (
        redemption.pk,
        member.member_number,
        latte.pk,
        50,
    )
    assert body["status"] == "redeemed"
    assert body["balance"] == {"available": 30, "pending": 0, "owed": 0}
    voucher = body["voucher"]
    assert (voucher["code"], voucher["status"], voucher["title"]) == (redemption.voucher.code, "issued", "Free latte")
    assert voucher["member_number"] == member.member_number
    assert (redemption.store, redemption.created_via) == (store, "Till of sh01")


def test_a_redemption_retried_with_its_key_replays_and_refuses_another_body(rules, api, store, member, latte):
    earn(store, member, "200")
    first = redeem(api, member, latte, headers={"Idempotency-Key": "r-1"})
    again = redeem(api, member, latte, headers={"Idempotency-Key": "r-1"})
    other = redeem(api, member, reward_create(rules, title="Cake"), headers={"Idempotency-Key": "r-1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert "Idempotency-Key" in problem_of(other, 409)["errors"]
    assert Redemption.objects.count() == 1
    member.points.refresh_from_db()
    assert member.points.available == 150


def test_short_of_points_is_a_409_with_the_points_still_needed(rules, api, store, member, latte):
    earn(store, member, "30")
    body = problem_of(redeem(api, member, latte), 409)
    assert (body["points_needed"], body["available"]) == (20, 30)
    assert body["type"] == "/api/problems/insufficient-points"
    assert not Redemption.objects.exists()
    latte.refresh_from_db()
    assert latte.stock == 5


@pytest.mark.parametrize(
    ("setup", "reason", "field"),
    [
        (lambda r, m: Reward.objects.filter(pk=r.pk).update(stock=0), "sold_out", "reward_id"),
        (lambda r, m: Reward.objects.filter(pk=r.pk).update(active=False), "not_offered", "reward_id"),
        (
            lambda r, m: Reward.objects.filter(pk=r.pk).update(available_from=timezone.now() + dt.timedelta(days=1)),
            "not_yet_redeemable",
            "reward_id",
        ),
        (lambda r, m: Member.objects.filter(pk=m.pk).update(status="closed"), "member_not_active", "member_number"),
    ],
)
def test_a_reward_not_open_to_the_member_is_a_422_naming_the_field(rules, api, store, member, latte, setup, reason, field):
    earn(store, member, "100")
    setup(latte, member)
    body = problem_of(redeem(api, member, latte), 422)
    assert body["reason"] == reason
    assert field in body["errors"]
    assert not Redemption.objects.exists()
    assert not LedgerEntry.objects.filter(kind="spend").exists()


def test_a_tier_only_reward_names_the_tier(rules, api, store, member):
    gold = tier_create(rules, "gold", 2)
    reward = reward_create(rules, min_tier=gold)
    earn(store, member, "100")
    body = problem_of(redeem(api, member, reward), 422)
    assert (body["reason"], body["required_tier"]) == ("tier", "gold")
    MemberTier.objects.update_or_create(member=member, defaults={"tier": gold})
    assert redeem(api, member, reward).status_code == 201


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({}, 400, "member_number"),
        ({"member_number": "1", "reward_id": "x"}, 400, "reward_id"),
        ({"member_number": "1", "reward_id": 0}, 400, "reward_id"),
        ({"member_number": "0000000000", "reward_id": 1}, 422, "member_number"),
    ],
)
def test_bad_redemptions_name_the_field_and_write_nothing(rules, api, body, status, field):
    assert field in problem_of(api.post("/api/v1/redemptions", body, format="json"), status)["errors"]
    assert not Redemption.objects.exists()


def test_an_unknown_reward_names_the_field(rules, api, member):
    body = {"member_number": member.member_number, "reward_id": 2**62}
    assert "reward_id" in problem_of(api.post("/api/v1/redemptions", body, format="json"), 422)["errors"]


# --- vouchers -------------------------------------------------------------------------------


@pytest.fixture
def voucher(rules, store, member, latte):
    earn(store, member, "100")
    return catalog.redemption_create(member=member, reward=latte, store=store).voucher


def test_any_store_of_the_programme_reads_a_voucher_as_typed(rules, api, other_api, voucher, member):
    for client in (api, other_api):
        response = client.get(f"/api/v1/vouchers/{voucher.code.lower().replace('-', '')}")
        assert response.status_code == 200, response.content
        body = response.json()
        assert (body["code"], body["status"], body["title"], body["kind"]) == (voucher.code, "issued", "Free latte", "free_item")
        assert (body["member_number"], body["redemption_id"], body["used_at"], body["used_store"]) == (
            member.member_number,
            voucher.redemption.pk,
            None,
            None,
        )
        assert body["valid_until"] == voucher.expires_at.isoformat().replace("+00:00", "Z")


def test_an_unknown_or_malformed_code_is_a_404(rules, api, voucher):
    problem_of(api.get("/api/v1/vouchers/0000-0000-0000"), 404)
    problem_of(api.get("/api/v1/vouchers/%00"), 404)
    problem_of(api.get("/api/v1/vouchers/not-a-code"), 404)
    problem_of(api.post("/api/v1/vouchers/0000-0000-0000/use"), 404)


def test_a_voucher_past_its_date_reads_as_expired_before_the_job_runs(rules, api, voucher):
    with time_machine.travel(voucher.expires_at + dt.timedelta(seconds=1)):
        assert api.get(f"/api/v1/vouchers/{voucher.code}").json()["status"] == "expired"
        assert problem_of(api.post(f"/api/v1/vouchers/{voucher.code}/use"), 422)["reason"] == "expired"


def test_a_voucher_is_used_once_even_by_the_same_till(rules, api, other_api, store, voucher):
    first = api.post(f"/api/v1/vouchers/{voucher.code}/use")
    assert first.status_code == 200, first.content
    assert (first.json()["status"], first.json()["used_store"]) == ("used", "sh01")
    voucher.refresh_from_db()
    assert (voucher.status, voucher.used_store, voucher.used_via) == ("used", store, "Till of sh01")
    used_at = voucher.used_at

    # The same till a moment later (a screenshot shown twice), and another store: both refused.
    for client in (api, other_api):
        body = problem_of(client.post(f"/api/v1/vouchers/{voucher.code}/use"), 409)
        assert (body["reason"], body["used_store"]) == ("used", "sh01")
        assert dt.datetime.fromisoformat(body["used_at"]) == used_at
        assert "already used on" in body["detail"]
        assert "at Jing'an" in body["detail"]
    voucher.refresh_from_db()
    assert (voucher.used_store, voucher.used_at) == (store, used_at)


def test_use_with_an_idempotency_key_replays_the_first_answer(rules, api, voucher):
    url = f"/api/v1/vouchers/{voucher.code}/use"
    first = api.post(url, headers={"Idempotency-Key": "u-1"})
    with time_machine.travel(timezone.now() + dt.timedelta(hours=2)):
        again = api.post(url, headers={"Idempotency-Key": "u-1"})
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json()
    # Another key, or none, is another use: refused.
    assert problem_of(api.post(url, headers={"Idempotency-Key": "u-2"}), 409)["reason"] == "used"
    assert problem_of(api.post(url), 409)["reason"] == "used"
    # The key replays only this voucher's use: on another code it is a conflict, and nothing is used.
    other = catalog.voucher_issue(member=voucher.member, reward=voucher.reward)
    problem_of(api.post(f"/api/v1/vouchers/{other.code}/use", headers={"Idempotency-Key": "u-1"}), 409)
    assert Voucher.objects.get(pk=other.pk).status == "issued"


def test_a_cancelled_voucher_cannot_be_used(rules, api, voucher):
    catalog.redemption_cancel(redemption=voucher.redemption)
    assert problem_of(api.post(f"/api/v1/vouchers/{voucher.code}/use"), 422)["reason"] == "cancelled"
    assert Voucher.objects.get().status == "cancelled"


# --- cancelling -----------------------------------------------------------------------------


def test_cancel_a_redemption_gives_points_and_stock_back_once(rules, api, voucher, member, latte):
    url = f"/api/v1/redemptions/{voucher.redemption.pk}/cancel"
    first = api.post(url, {"reason": "Wrong size"}, format="json")
    again = api.post(url, {}, format="json")

    assert (first.status_code, again.status_code) == (200, 200), first.content
    assert (first.json()["status"], first.json()["voucher"]["status"]) == ("cancelled", "cancelled")
    assert first.json()["balance"]["available"] == 100
    assert again.json() == first.json()
    assert LedgerEntry.objects.filter(kind="reversal").count() == 1
    latte.refresh_from_db()
    assert latte.stock == 5


def test_another_stores_redemption_cannot_be_cancelled(rules, other_api, voucher):
    problem_of(other_api.post(f"/api/v1/redemptions/{voucher.redemption.pk}/cancel", {}, format="json"), 404)
    problem_of(other_api.post("/api/v1/redemptions/999999999/cancel", {}, format="json"), 404)
    assert Redemption.objects.get().status == "redeemed"


def test_a_used_voucher_cannot_be_cancelled(rules, api, voucher):
    api.post(f"/api/v1/vouchers/{voucher.code}/use")
    body = problem_of(api.post(f"/api/v1/redemptions/{voucher.redemption.pk}/cancel", {}, format="json"), 422)
    assert (body["reason"], list(body["errors"])) == ("used", ["redemption"])
    assert not LedgerEntry.objects.filter(kind="reversal").exists()


def test_the_catalog_endpoints_need_a_key(rules, voucher):
    anonymous = APIClient()
    problem_of(anonymous.get("/api/v1/rewards"), 401)
    problem_of(anonymous.get(f"/api/v1/vouchers/{voucher.code}"), 401)
    problem_of(anonymous.post(f"/api/v1/vouchers/{voucher.code}/use"), 401)
    assert Voucher.objects.get().status == "issued"


def test_a_member_redeeming_at_another_store_of_the_chain(rules, other_api, store, latte):
    member = MemberFactory()
    earn(store, member, "50")
    response = redeem(other_api, member, latte)
    assert response.status_code == 201
    assert Redemption.objects.get().store.code == "sh02"
