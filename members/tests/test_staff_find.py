"""The counter's entry: the shift's store, and one search box for any way a member is known."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from members.access import SHIFT_STORE
from members.tests.factories import MemberFactory, StoreFactory, UserFactory

FIND = reverse("staff:find")


@pytest.mark.django_db
def test_the_counter_needs_a_login_and_a_staff_account(client):
    assert client.get(FIND)["Location"].startswith(reverse("account_login"))
    client.force_login(UserFactory(is_staff=False))
    assert client.get(FIND).status_code == 403


@pytest.mark.django_db
def test_a_cashier_of_one_store_starts_the_shift_there_at_once(client, cashier, store):
    client.force_login(cashier)
    first = client.get(FIND)
    assert first["Location"].startswith(reverse("staff:shift"))
    assert client.get(first["Location"])["Location"] == FIND
    assert client.session[SHIFT_STORE] == store.pk


@pytest.mark.django_db
def test_a_cashier_cannot_start_a_shift_at_another_store_even_by_crafting_the_form(client, cashier, store):
    elsewhere = StoreFactory(code="hz01")
    client.force_login(cashier)
    assert client.post(reverse("staff:shift"), {"store": elsewhere.pk}).status_code == 403
    assert SHIFT_STORE not in client.session


@pytest.mark.django_db
def test_the_shift_page_never_redirects_off_site(client, roles, store):
    client.force_login(UserFactory(role="Cashier", stores=[store, StoreFactory(code="hz01")]))
    response = client.post(reverse("staff:shift"), {"store": store.pk, "next": "https://evil.example/"})
    assert response["Location"] == FIND


@pytest.mark.django_db
@pytest.mark.parametrize(
    "typed",
    ["138 0000 1234", "+86 138-0000-1234", "13800001234", "1234", "Wang Fang", "wang", "fang@example.com", "FANG@EXAMPLE.COM"],
)
def test_any_common_way_of_typing_finds_the_member(at_counter, rules, typed):
    wang = MemberFactory(phone="+8613800001234", name="Wang Fang", email="fang@example.com")
    li = MemberFactory(phone="+8613900005678", name="Li Na", email="na@example.com")

    response = at_counter.get(FIND, {"q": typed}, headers={"HX-Request": "true"})

    assert response.status_code == 200
    html = response.content.decode()
    assert reverse("staff:member", args=[wang.member_number]) in html
    assert li.member_number not in html
    assert "<html" not in html  # the results fragment only
    assert "HX-Request" in response["Vary"]


@pytest.mark.django_db
def test_enter_on_a_unique_match_opens_the_member_and_works_without_javascript(at_counter, rules):
    wang = MemberFactory(name="Wang Fang")
    by_card = at_counter.get(FIND, {"q": wang.card_code.lower()})
    assert by_card["Location"] == reverse("staff:member", args=[wang.member_number])
    assert at_counter.get(FIND, {"q": wang.member_number})["Location"] == by_card["Location"]

    MemberFactory(name="Wang Lei")
    page = at_counter.get(FIND, {"q": "Wang"})
    assert page.status_code == 200
    assert b"<html" in page.content
    assert len(page.context["members"]) == 2


@pytest.mark.django_db
def test_nothing_found_says_so_and_nul_characters_are_harmless(at_counter, rules):
    response = at_counter.get(FIND, {"q": "nobody\x00"})
    assert response.status_code == 200
    assert "Nobody matches" in response.content.decode()


@pytest.mark.django_db
def test_the_search_fragment_takes_the_same_queries_for_one_match_or_many(at_counter, rules):
    MemberFactory(name="Wang Fang")
    at_counter.get(FIND, {"q": "Wang"}, headers={"HX-Request": "true"})  # warm the session
    with CaptureQueriesContext(connection) as one:
        at_counter.get(FIND, {"q": "Wang"}, headers={"HX-Request": "true"})
    for n in range(10):
        MemberFactory(name=f"Wang {n}")
    with CaptureQueriesContext(connection) as eleven:
        response = at_counter.get(FIND, {"q": "Wang"}, headers={"HX-Request": "true"})

    assert response.content.decode().count('href="/staff/members/') == 11
    assert len(eleven) == len(one) <= 6
