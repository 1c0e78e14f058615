"""Contract tests for the till API: every endpoint's success, replay, conflict and refusals."""

import datetime as dt
import time

import pytest
from django.core.cache import cache
from django.utils import timezone
from rest_framework.test import APIClient

from members import api_auth
from members import services as member_services
from members.models import ApiKey, Member
from members.tests.factories import MemberFactory, StoreFactory
from rewards import services
from rewards.models import LedgerEntry, Purchase, Return

pytestmark = pytest.mark.django_db
PROBLEM = "application/problem+json"


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    cache.clear()


@pytest.fixture
def api_key(store):
    return member_services.api_key_create(store=store, name="Till 1")


@pytest.fixture
def api(api_key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {api_key[1]}")
    return client


def problem_of(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    body = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert body["status"] == status
    return body


# --- authentication and rate limiting ----------------------------------------------


def test_no_key_wrong_key_and_revoked_key_are_refused(rules, store, api_key):
    assert problem_of(APIClient().get("/api/v1/members/lookup?phone=1"), 401)
    wrong = APIClient()
    wrong.credentials(HTTP_AUTHORIZATION="Api-Key lk_00000000_nope")
    assert problem_of(wrong.get("/api/v1/members/lookup?phone=1"), 401)

    key, raw = api_key
    member_services.api_key_revoke(key=key)
    revoked = APIClient()
    revoked.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    response = revoked.post("/api/v1/purchases", {"receipt_number": "R-1", "amount": "10"}, format="json")
    assert problem_of(response, 401)
    assert not Purchase.objects.exists()


def test_a_key_revoked_by_another_web_process_stops_working_within_the_cache_time(rules, api, api_key, monkeypatch):
    lookup = "/api/v1/members/lookup?member_number=0000000000"
    assert api.get(lookup).status_code == 404  # the key works, and this process remembers it
    ApiKey.objects.filter(pk=api_key[0].pk).update(revoked_at=timezone.now())  # revoked elsewhere
    assert api.get(lookup).status_code == 404  # still remembered here, for at most the cache time
    monkeypatch.setattr(member_services, "API_KEY_CACHE_SECONDS", 0)
    assert problem_of(api.get(lookup), 401)


def test_a_key_records_when_it_was_last_used(rules, api, api_key):
    api.get("/api/v1/members/lookup?member_number=0000000000")
    api_key[0].refresh_from_db()
    assert api_key[0].last_used_at is not None


def test_each_key_is_rate_limited_per_minute_with_retry_after(rules, api, api_key, member, monkeypatch):
    key = api_key[0]
    key.requests_per_minute = 3
    key.save()
    cache.clear()
    clock = [(time.time() // 60 + 1) * 60 - 15]  # 15 seconds before a minute turns
    monkeypatch.setattr(api_auth.time, "time", lambda: clock[0])
    for _ in range(3):
        assert api.get(f"/api/v1/members/{member.member_number}").status_code == 200

    response = api.get(f"/api/v1/members/{member.member_number}")

    problem_of(response, 429)
    assert response["Retry-After"] == "15"
    clock[0] += 15  # the next minute has its own budget
    assert api.get(f"/api/v1/members/{member.member_number}").status_code == 200


# --- members --------------------------------------------------------------------------


def test_create_a_member(rules, api, store):
    response = api.post("/api/v1/members", {"phone": "138 0013 8000", "name": "王芳", "birthday": "1990-05-01"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["phone"] == "+8613800138000"
    assert len(body["card_code"]) == 16
    assert body["points"] == {"available": 0, "pending": 0, "owed": 0, "expiring": []}
    member = Member.objects.get(member_number=body["member_number"])
    assert (member.enrolment_channel, member.enrolled_store) == ("api", store)


def test_a_duplicate_phone_is_a_409_naming_the_member(rules, api, member):
    response = api.post("/api/v1/members", {"phone": str(member.phone)}, format="json")
    body = problem_of(response, 409)
    assert body["member_number"] == member.member_number
    assert "phone" in body["errors"]
    assert Member.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({}, 422, "phone"),
        ({"phone": "12"}, 422, "phone"),
        ({"email": "x"}, 400, "email"),
        ({"birthday": "soon"}, 400, "birthday"),
    ],
)
def test_bad_member_input(rules, api, body, status, field):
    assert field in problem_of(api.post("/api/v1/members", body, format="json"), status)["errors"]
    assert not Member.objects.exists()


def test_member_creation_replays_with_an_idempotency_key(rules, api):
    first = api.post("/api/v1/members", {"phone": "13800138000"}, format="json", HTTP_IDEMPOTENCY_KEY="enrol-1")
    again = api.post("/api/v1/members", {"phone": "13800138000"}, format="json", HTTP_IDEMPOTENCY_KEY="enrol-1")
    other = api.post("/api/v1/members", {"phone": "13800138001"}, format="json", HTTP_IDEMPOTENCY_KEY="enrol-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert "Idempotency-Key" in problem_of(other, 409)["errors"]
    assert Member.objects.count() == 1


@pytest.mark.parametrize("field", ["phone", "email", "card", "member_number", "external_ref"])
def test_lookup_by_each_identifier(rules, api, field):
    member = member_services.member_enrol(channel="api", phone="13800138000", email="mei@example.com", external_ref="POS-9")
    value = {
        "phone": "138-0013-8000",
        "email": "MEI@example.com",
        "card": member.card_code,
        "member_number": member.member_number,
        "external_ref": "POS-9",
    }[field]
    response = api.get("/api/v1/members/lookup", {field: value})
    assert response.status_code == 200
    assert response.json()["member_number"] == member.member_number


def test_lookup_needs_exactly_one_identifier_and_404s_on_none(rules, api):
    assert "query" in problem_of(api.get("/api/v1/members/lookup"), 400)["errors"]
    assert problem_of(api.get("/api/v1/members/lookup", {"phone": "13800138000", "email": "a@b.c"}), 400)
    assert problem_of(api.get("/api/v1/members/lookup", {"email": "nobody@example.com"}), 404)


def test_member_balance_with_next_expiries(rules, api, store, member):
    services.purchase_record(
        store=store, receipt_number="R-1", amount="30", member=member, occurred_at=timezone.now() - dt.timedelta(days=40)
    )
    body = api.get(f"/api/v1/members/{member.member_number}").json()
    assert body["points"]["available"] == 30
    [expiry] = body["points"]["expiring"]
    assert expiry["points"] == 30
    assert dt.date.fromisoformat(expiry["expires_on"]) > timezone.localdate()
    assert problem_of(api.get("/api/v1/members/0000000000"), 404)


def test_the_ledger_is_cursor_paginated_with_explanations(rules, api, store, member):
    for i in range(3):
        services.purchase_record(store=store, receipt_number=f"R-{i}", amount="10", member=member)
    page = api.get(f"/api/v1/members/{member.member_number}/ledger", {"page_size": 2}).json()
    assert len(page["results"]) == 2
    assert page["results"][0]["receipt_number"] == "R-2"
    assert page["results"][0]["explanation"].startswith("Receipt R-2")
    assert page["results"][0]["store"] == store.code
    rest = api.get(page["next"]).json()
    assert [entry["receipt_number"] for entry in rest["results"]] == ["R-0"]


# --- purchases -----------------------------------------------------------------------


def purchase(api, headers=None, **body):
    return api.post("/api/v1/purchases", {"receipt_number": "R-1", "amount": "42.00", **body}, format="json", headers=headers)


def test_record_a_purchase(rules, api, member, store):
    response = purchase(api, member_number=member.member_number, lines=[{"sku": "LAT", "category": "coffee", "amount": "42.00"}])
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["points_earned"] == 42
    assert body["entries"] == [{"points": 42, "explanation": "Receipt R-1: CN¥42.00 × 1 pt per CN¥1 = 42 pts"}]
    assert body["balance"] == {"available": 42, "pending": 0, "owed": 0}
    assert Purchase.objects.get().store == store


def test_a_replayed_purchase_returns_the_original_answer(rules, api, member):
    first = purchase(api, member_number=member.member_number)
    services.purchase_record(store=StoreFactory(), receipt_number="X", amount="5", member=member)  # balance moves on
    again = purchase(api, member_number=member.member_number)
    assert again.status_code == 200
    assert again.json() == first.json()
    assert LedgerEntry.objects.filter(kind="earn").count() == 2


def test_a_conflicting_replay_is_409_and_writes_nothing(rules, api, member):
    purchase(api, member_number=member.member_number)
    body = problem_of(purchase(api, member_number=member.member_number, amount="43.00"), 409)
    assert body["errors"]
    assert Purchase.objects.count() == 1


def test_an_idempotency_key_replays_and_refuses_another_body(rules, api):
    first = purchase(api, headers={"Idempotency-Key": "k-1"})
    again = purchase(api, headers={"Idempotency-Key": "k-1"})
    other = purchase(api, headers={"Idempotency-Key": "k-1"}, receipt_number="R-2")
    assert (first.status_code, again.status_code) == (201, 200)
    problem_of(other, 409)
    assert Purchase.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"amount": "-1"}, 422, "amount"),
        ({"amount": "0"}, 422, "amount"),
        ({"amount": "abc"}, 400, "amount"),
        ({"amount": "1.234"}, 400, "amount"),
        ({"receipt_number": ""}, 400, "receipt_number"),
        ({"discount": "50"}, 422, "discount"),
        ({"channel": "fax"}, 400, "channel"),
        ({"occurred_at": "2999-01-01T00:00:00Z"}, 422, "occurred_at"),
        ({"member_number": "0000000000"}, 422, "member_number"),
        ({"lines": [{"amount": "1"}]}, 422, "lines"),
        ({"lines": [{"amount": "42", "quantity": 0}]}, 400, "lines[0].quantity"),
    ],
)
def test_bad_purchases_name_the_field_and_write_nothing(rules, api, body, status, field):
    assert field in problem_of(purchase(api, **body), status)["errors"]
    assert not Purchase.objects.exists()


def test_malformed_json_and_wrong_content_type_are_problems(rules, api):
    problem_of(api.post("/api/v1/purchases", "{not json", content_type="application/json"), 400)
    problem_of(api.post("/api/v1/purchases", "a=b", content_type="application/x-www-form-urlencoded"), 415)


# --- returns and claims ------------------------------------------------------------


def test_return_by_amount_with_replay_and_limit(rules, api, member):
    purchase_id = purchase(api, member_number=member.member_number, amount="100.00").json()["purchase_id"]
    url = f"/api/v1/purchases/{purchase_id}/returns"
    first = api.post(url, {"return_number": "X-1", "amount": "30"}, format="json")
    again = api.post(url, {"return_number": "X-1", "amount": "30"}, format="json")
    assert first.status_code == 201, first.content
    assert first.json()["points_clawed_back"] == 30
    assert first.json()["balance"]["available"] == 70
    assert again.status_code == 200
    assert again.json()["return_id"] == first.json()["return_id"]
    problem_of(api.post(url, {"return_number": "X-1", "amount": "31"}, format="json"), 409)
    assert "amount" in problem_of(api.post(url, {"return_number": "X-2", "amount": "70.01"}, format="json"), 422)["errors"]
    assert "amount" in problem_of(api.post(url, {"return_number": "X-3"}, format="json"), 400)["errors"]
    assert Return.objects.count() == 1


def test_return_by_lines(rules, api, member):
    lines = [{"sku": "LAT", "amount": "40", "quantity": 2}, {"sku": "CAKE", "amount": "10"}]
    purchase_id = purchase(api, member_number=member.member_number, amount="50", lines=lines).json()["purchase_id"]
    response = api.post(
        f"/api/v1/purchases/{purchase_id}/returns",
        {"return_number": "X-1", "lines": [{"line_number": 1, "quantity": 1}]},
        format="json",
    )
    assert response.status_code == 201
    assert (response.json()["amount"], response.json()["points_clawed_back"]) == ("20.00", 20)


def test_another_stores_purchase_is_not_found(rules, api, member):
    other = services.purchase_record(store=StoreFactory(), receipt_number="R-9", amount="10", member=member).purchase
    problem_of(api.post(f"/api/v1/purchases/{other.pk}/returns", {"return_number": "X", "amount": "1"}, format="json"), 404)
    problem_of(api.post(f"/api/v1/purchases/{other.pk}/claim", {"member_number": member.member_number}, format="json"), 404)
    assert not Return.objects.exists()


def test_claim_an_anonymous_sale_once(rules, api):
    member = MemberFactory()
    purchase_id = purchase(api).json()["purchase_id"]
    url = f"/api/v1/purchases/{purchase_id}/claim"
    first = api.post(url, {"member_number": member.member_number}, format="json")
    again = api.post(url, {"member_number": member.member_number}, format="json")
    assert first.status_code == 201
    assert first.json()["points_earned"] == 42
    assert again.status_code == 200
    assert "purchase" in problem_of(api.post(url, {"member_number": MemberFactory().member_number}, format="json"), 422)["errors"]
    assert "member_number" in problem_of(api.post(url, {"member_number": "0000000000"}, format="json"), 422)["errors"]
    assert LedgerEntry.objects.count() == 1


# --- schema ----------------------------------------------------------------------------


def test_the_schema_and_docs_are_served_without_a_key(rules):
    client = APIClient()
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    assert "/api/v1/purchases" in schema.json()["paths"]
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert "cdn" not in docs.text.lower()


def test_the_largest_amount_earns_points_without_overflow(rules, api, member):
    response = purchase(api, member_number=member.member_number, amount="999999999999.99")
    assert response.status_code == 201, response.content
    assert response.json()["points_earned"] == 999_999_999_999


def test_a_nul_character_in_a_query_is_a_400_not_a_500(rules, api):
    assert "member_number" in problem_of(api.get("/api/v1/members/lookup", {"member_number": "12\x0034"}), 400)["errors"]


def test_an_unknown_api_address_is_a_problem(rules, api):
    problem_of(api.post("/api/v1/purchases/-5/claim", {}, format="json"), 404)


def test_a_batch_records_each_sale_once_and_reports_each(rules, api, member):
    purchase(api, member_number=member.member_number, receipt_number="OLD", amount="5")
    items = [
        {"receipt_number": "B-1", "amount": "10", "member_number": member.member_number},
        {"receipt_number": "B-1", "amount": "10", "member_number": member.member_number},
        {"receipt_number": "OLD", "amount": "6", "member_number": member.member_number},
        {"receipt_number": "B-2", "amount": "-1"},
        {"receipt_number": "B-3", "amount": "abc"},
        {"receipt_number": "B-4", "amount": "7", "member_number": "0000000000"},
        {"receipt_number": "B-5", "amount": "8"},
    ]
    response = api.post("/api/v1/purchases/batch", {"purchases": items}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert [r["status"] for r in body["results"]] == [201, 200, 409, 422, 400, 422, 201]
    assert body["results"][0]["points_earned"] == 10
    assert "amount" in body["results"][3]["errors"]
    assert "member_number" in body["results"][5]["errors"]
    assert (body["created"], body["replayed"], body["refused"]) == (2, 1, 4)
    again = api.post("/api/v1/purchases/batch", {"purchases": items}, format="json").json()
    assert (again["created"], again["replayed"]) == (0, 3)
    assert Purchase.objects.count() == 3
    member.points.refresh_from_db()
    assert member.points.available == 15


def test_a_batch_is_limited_to_a_thousand(rules, api):
    items = [{"receipt_number": f"B-{i}", "amount": "1"} for i in range(1001)]
    assert "purchases" in problem_of(api.post("/api/v1/purchases/batch", {"purchases": items}, format="json"), 400)["errors"]
    assert not Purchase.objects.exists()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_32_identical_requests_at_once_write_one_purchase(rules, api_key, member):
    """Given 32 tills retrying the same sale at once, then exactly one purchase and one earn exist."""
    import threading

    from django.db import connection

    barrier = threading.Barrier(32)
    responses: list = []
    body = {"receipt_number": "SAME", "amount": "42.00", "member_number": member.member_number}

    def till(use_header: bool) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {api_key[1]}")
        try:
            barrier.wait()
            headers = {"Idempotency-Key": "same-key"} if use_header else None
            responses.append(client.post("/api/v1/purchases", body, format="json", headers=headers))
        finally:
            connection.close()

    threads = [threading.Thread(target=till, args=(i % 2 == 0,)) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(r.status_code for r in responses) == [200] * 31 + [201]
    assert {r.json()["purchase_id"] for r in responses} == {Purchase.objects.get().pk}
    assert LedgerEntry.objects.filter(kind="earn").count() == 1
    member.points.refresh_from_db()
    assert member.points.available == 42


def test_a_nul_in_an_address_or_header_is_a_4xx_not_a_500(rules, api, member):
    problem_of(api.get("/api/v1/members/%00"), 404)
    problem_of(api.get("/api/v1/members/%00/ledger"), 404)
    response = purchase(api, headers={"Idempotency-Key": "a\x00b"})
    assert "Idempotency-Key" in problem_of(response, 400)["errors"]
    assert not Purchase.objects.exists()


def test_an_overlong_email_is_a_400(rules, api):
    assert "email" in problem_of(api.post("/api/v1/members", {"email": "a" * 300 + "@example.com"}, format="json"), 400)["errors"]
    assert not Member.objects.exists()


def test_emails_are_compared_as_the_unique_index_compares_them(rules, api):
    member_services.member_enrol(channel="api", email="sam@example.com")
    member_services.member_enrol(channel="api", email="ſam@example.com")  # a long s: different under LOWER
    assert api.get("/api/v1/members/lookup", {"email": "SAM@example.com"}).status_code == 200


def test_a_conflicting_receipt_names_the_receipt_number(rules, api):
    purchase(api)
    assert "receipt_number" in problem_of(purchase(api, amount="43.00"), 409)["errors"]
