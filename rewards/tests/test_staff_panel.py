"""The member panel at the counter: what staff see of a member's points."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from members.access import SHIFT_STORE
from members.tests.factories import MemberFactory
from rewards import services


@pytest.fixture
def at_counter(client, cashier, store):
    client.force_login(cashier)
    session = client.session
    session[SHIFT_STORE] = store.pk
    session.save()
    return client


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
