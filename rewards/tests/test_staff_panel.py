"""The member panel at the counter: what staff see of a member's points."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from members.access import SHIFT_STORE
from members.tests.factories import MemberFactory
from rewards import services


@pytest.mark.django_db
def test_the_member_panel_shows_points_and_history_in_a_fixed_number_of_queries(at_counter, rules, store):
    member = MemberFactory(name="Wang Fang")
    services.purchase_record(store=store, receipt_number="R-1", amount="42", member=member)
    url = reverse("staff:member", args=[member.member_number])
    at_counter.get(url)  # warm the session and the programme

    with CaptureQueriesContext(connection) as one_purchase:
        page = at_counter.get(url)
    for n in range(2, 8):
        services.purchase_record(store=store, receipt_number=f"R-{n}", amount="10", member=member)
    with CaptureQueriesContext(connection) as seven_purchases:
        at_counter.get(url)

    assert page.status_code == 200
    assert "Receipt R-1" in page.content.decode()
    assert len(seven_purchases) == len(one_purchase)
    fragment = at_counter.get(url, headers={"HX-Request": "true"})
    assert b'id="balance"' in fragment.content
    assert b"<html" not in fragment.content


@pytest.mark.django_db
def test_odd_input_in_addresses_is_a_404_or_a_refusal_never_a_500(at_counter, rules):
    member = MemberFactory()
    assert at_counter.get("/staff/members/%00/").status_code == 404
    assert at_counter.get("/staff/members/%00/purchase/").status_code == 404
    rewards = reverse("staff:member_rewards", args=[member.member_number])
    assert at_counter.get(rewards, {"redeemed": "²"}).status_code == 200
    assert at_counter.get(rewards, {"reward": "99999999999999999999"}).status_code == 200
    assert at_counter.post(reverse("staff:shift"), {"store": "²"}).status_code == 403


@pytest.mark.django_db
def test_a_cashier_of_another_store_sees_only_enough_to_serve_the_member(client, rules, roles, store):
    from members import services as member_services
    from members.models import Member
    from members.tests.factories import StoreFactory, UserFactory

    elsewhere = StoreFactory(code="hz01")
    member = member_services.member_enrol(
        channel=Member.Channel.COUNTER, phone="+8613800001234", email="fang@example.com", name="Wang Fang", store=store
    )
    member.notes = "Oat milk, no sugar"
    member.save(update_fields=["notes"])
    url = reverse("staff:member", args=[member.member_number])

    def page_for(user, shift):
        client.force_login(user)
        session = client.session
        session[SHIFT_STORE] = shift.pk
        session.save()
        return client.get(url).content.decode()

    home = page_for(UserFactory(role="Cashier", stores=[store]), store)
    away = page_for(UserFactory(role="Cashier", stores=[elsewhere]), elsewhere)
    manager_away = page_for(UserFactory(role="Store manager", stores=[elsewhere]), elsewhere)

    assert "fang@example.com" in home
    assert "Oat milk" in home
    assert "Marketing by SMS" in home
    assert "fang@example.com" not in away
    assert "Oat milk" not in away
    assert "13800001234" not in away
    assert "phone ending 1234" in away
    assert "fang@example.com" in manager_away
