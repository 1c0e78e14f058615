"""The member portal's entry: joining with a new login, and the home page."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from members.models import Member
from members.tests.factories import MemberFactory, UserFactory
from rewards import services
from rewards.models import TermsAcceptance, TermsVersion


@pytest.fixture
def terms(rules):
    return TermsVersion.objects.create(programme=rules.programme, version="2026.1", published_at="2026-01-01T00:00Z")


@pytest.mark.django_db
def test_the_portal_needs_a_login_and_a_membership(client, terms):
    assert client.get(reverse("portal:home"))["Location"].startswith(reverse("account_login"))
    client.force_login(UserFactory(is_staff=False))
    assert client.get(reverse("portal:home"))["Location"].startswith(reverse("portal:join"))


@pytest.mark.django_db
def test_a_new_login_joins_by_accepting_the_terms_and_nothing_is_written_without_them(client, terms):
    user = UserFactory(is_staff=False, email="mei@example.com")
    client.force_login(user)
    refused = client.post(reverse("portal:join"), {"phone": "138 0000 1234"})
    assert refused.status_code == 200
    assert not Member.objects.exists()

    assert client.post(reverse("portal:join"), {"phone": "138 0000 1234", "accept_terms": "on"})["Location"] == reverse(
        "portal:home"
    )
    member = Member.objects.get(user=user)
    assert (member.email, str(member.phone)) == ("mei@example.com", "+8613800001234")
    assert TermsAcceptance.objects.filter(member=member, terms=terms).exists()


@pytest.mark.django_db
def test_joining_with_a_members_phone_never_says_whose_it_is_and_writes_nothing(client, terms):
    existing = MemberFactory(phone="+8613800001234")
    client.force_login(UserFactory(is_staff=False, email="someone@example.com"))

    response = client.post(reverse("portal:join"), {"phone": "138 0000 1234", "accept_terms": "on"})

    html = response.content.decode()
    assert response.status_code == 200
    assert "This is already a member&#x27;s. If the membership is yours, claim it" in html
    assert existing.member_number not in html
    assert Member.objects.count() == 1


@pytest.mark.django_db
def test_home_shows_the_members_own_points_only(client, terms, store):
    user = UserFactory(is_staff=False)
    mine = MemberFactory(name="Mei")
    Member.objects.filter(pk=mine.pk).update(user=user)
    services.terms_accept(member=mine, channel=Member.Channel.ONLINE, terms=terms)
    other = MemberFactory(name="Someone Else")
    services.purchase_record(store=store, receipt_number="R-1", amount="42", member=mine)
    services.purchase_record(store=store, receipt_number="R-2", amount="99", member=other)
    client.force_login(user)

    page = client.get(reverse("portal:home")).content.decode()

    assert "Hello, Mei" in page
    assert "42 pts" in page
    assert "99 pts" not in page
    assert "Someone Else" not in page


@pytest.mark.django_db
def test_home_takes_the_same_queries_for_one_purchase_or_many(client, terms, store):
    user = UserFactory(is_staff=False)
    mine = MemberFactory(name="Mei")
    Member.objects.filter(pk=mine.pk).update(user=user)
    services.terms_accept(member=mine, channel=Member.Channel.ONLINE, terms=terms)
    services.purchase_record(store=store, receipt_number="R-1", amount="42", member=mine)
    client.force_login(user)
    client.get(reverse("portal:home"))  # warm the session
    with CaptureQueriesContext(connection) as one:
        client.get(reverse("portal:home"))
    for n in range(2, 12):
        services.purchase_record(store=store, receipt_number=f"R-{n}", amount="10", member=mine)
    with CaptureQueriesContext(connection) as eleven:
        page = client.get(reverse("portal:home"))

    assert page.status_code == 200
    assert len(eleven) == len(one)
