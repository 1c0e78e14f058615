"""Referrals at the staff counter: the member panel, a code at enrolment, and the marketer's funnel and review queue."""

import datetime as dt
import uuid

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from members.models import ConsentRecord, Member
from members.tests.counter import counter_login
from members.tests.factories import MemberFactory, UserFactory
from referrals import services
from referrals.models import Referral, ReferralEvent
from rewards import services as reward_services
from rewards.models import LedgerEntry, TermsAcceptance, TermsVersion

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}
OVERVIEW = reverse("staff:referrals")


@pytest.fixture
def in_review(offer, store, code):
    """A friend whose qualifying purchase waits for a reviewer (every reward is approved by hand)."""
    offer.manual_approval = True
    offer.save()
    friend = MemberFactory(name="Wei Zhang", referral_code=code)
    reward_services.purchase_record(store=store, receipt_number="R-1", amount="50", member=friend)
    return Referral.objects.get(friend=friend)


@pytest.fixture
def marketer(roles, store):
    return UserFactory(role="Marketer", stores=[store], name="Lin Marketing")


@pytest.fixture
def as_marketer(client, marketer, store):
    return counter_login(client, marketer, store)


def review(referral, decision, note="", token=None):
    return {"decision": decision, "note": note, "token": str(token or uuid.uuid4())}


def written(referral):
    """What a decision would change: the referral's status, its events and the referral points in the ledger."""
    referral.refresh_from_db()
    entries = LedgerEntry.objects.filter(kind__in=["referral", "withdrawal"]).count()
    return referral.status, referral.events.count(), entries


# --- who may see the page -----------------------------------------------------------------------


def test_a_cashier_has_no_referrals_page_even_by_typing_its_address(at_counter, in_review):
    before = written(in_review)
    detail = reverse("staff:referral", args=[in_review.pk])

    assert at_counter.get(OVERVIEW).status_code == 403
    assert at_counter.get(OVERVIEW, headers=HTMX).status_code == 403
    assert at_counter.get(detail).status_code == 403
    assert at_counter.post(detail, review(in_review, "approve")).status_code == 403
    assert at_counter.post(detail, review(in_review, "reject", "fraud"), headers=HTMX).status_code == 403
    assert written(in_review) == before
    assert f'href="{OVERVIEW}"' not in at_counter.get(reverse("staff:find")).content.decode()


def test_a_store_manager_sees_no_programme_wide_referrals(client, manager, store, in_review):
    # The funnel names members of every store: it is head office's, as the staff pages scope all else to the store.
    counter_login(client, manager, store)
    before = written(in_review)
    detail = reverse("staff:referral", args=[in_review.pk])

    assert client.get(OVERVIEW).status_code == 403
    assert client.get(detail).status_code == 403
    assert client.post(detail, review(in_review, "approve")).status_code == 403
    assert written(in_review) == before


def test_a_marketer_without_a_shift_reaches_the_page_from_head_office(client, roles, in_review):
    marketer = UserFactory(role="Marketer")
    client.force_login(marketer)

    page = client.get(OVERVIEW)

    assert page.status_code == 200
    assert "Head office: no shift started" in page.content.decode()


def test_logged_out_visitors_are_sent_to_log_in(client, in_review):
    response = client.get(OVERVIEW)
    assert response.status_code == 302
    assert "/login" in response["Location"]


# --- the funnel, top referrers and the queue ---------------------------------------------------


def test_the_marketer_sees_the_funnel_top_referrers_and_the_queue(
    as_marketer, offer, store, code, referrer, in_review, django_capture_on_commit_callbacks
):
    offer.manual_approval = False
    offer.hold_days = 0
    offer.save()
    MemberFactory(name="Ann Waiting", referral_code=code)  # joined, yet to buy
    rewarded = MemberFactory(name="Bo Paid", referral_code=code)
    with django_capture_on_commit_callbacks(execute=True):  # the inviter's share is settled after the commit
        reward_services.purchase_record(store=store, receipt_number="R-2", amount="40", member=rewarded)
    services.referral_shared(member=referrer)

    response = as_marketer.get(OVERVIEW)

    html = response.content.decode()
    assert response.status_code == 200
    assert "HX-Request" in response["Vary"]
    assert f'href="{OVERVIEW}" aria-current="page"' in html
    assert '<dd class="big" data-figure="joined">3</dd>' in html
    assert 'data-figure="purchased">2</dd>' in html
    assert 'data-figure="rewarded">1</dd>' in html
    assert 'data-figure="review">1</dd>' in html
    assert 'data-figure="waiting">1</dd>' in html
    assert "Links shared (all time)</dt><dd>1</dd>" in html
    top = html.split('id="top-referrers"')[1].split("</table>")[0]
    assert "Mei" in top
    assert referrer.member_number in top
    assert "<td>3</td>" in top
    assert "<td>1</td>" in top
    assert "200 pts" in top
    assert "Review queue: 1 referral" in html
    assert "Every reward is approved by hand" in html
    assert "R-1" in html
    assert 'value="approve"' in html
    assert 'value="reject"' in html


def test_the_funnel_counts_friends_who_joined_in_the_chosen_days(as_marketer, offer, code):
    with time_machine.travel(timezone.now() - dt.timedelta(days=40)):
        MemberFactory(name="Old Friend", referral_code=code)
    MemberFactory(name="New Friend", referral_code=code)
    today = timezone.localdate(timezone=reward_services.programme_get().tz)

    default = as_marketer.get(OVERVIEW).content.decode()
    chosen = as_marketer.get(OVERVIEW, {"start": (today - dt.timedelta(days=60)).isoformat(), "end": today.isoformat()})
    fragment = as_marketer.get(OVERVIEW, {"start": today.isoformat(), "end": today.isoformat()}, headers=HTMX)

    assert 'data-figure="joined">1</dd>' in default
    assert 'data-figure="joined">2</dd>' in chosen.content.decode()
    assert fragment.status_code == 200
    assert b'id="period"' in fragment.content
    assert b"<html" not in fragment.content
    assert b"Review queue" not in fragment.content


def test_a_wrong_period_is_explained_and_the_last_30_days_are_shown(as_marketer, offer, code):
    MemberFactory(referral_code=code)
    html = as_marketer.get(OVERVIEW, {"start": "2025-03-10", "end": "2025-03-01"}).content.decode()
    assert "Choose a day on or after the first day." in html
    assert 'data-figure="joined">1</dd>' in html
    assert as_marketer.get(OVERVIEW, {"start": "soon", "end": "\x00"}).status_code == 200


# --- deciding --------------------------------------------------------------------------------


def test_a_marketer_approves_from_the_queue_and_a_resent_form_decides_once(
    as_marketer, marketer, in_review, django_capture_on_commit_callbacks
):
    detail = reverse("staff:referral", args=[in_review.pk])
    form = review(in_review, "approve", note="Regulars, known to the store")

    with django_capture_on_commit_callbacks(execute=True):
        first = as_marketer.post(detail, form)
    again = as_marketer.post(detail, form, follow=True)

    assert first.status_code == 302
    assert first["Location"] == OVERVIEW
    in_review.refresh_from_db()
    assert in_review.status == Referral.Status.QUALIFIED
    assert (in_review.referrer_points, in_review.friend_points) == (200, 100)
    assert list(in_review.events.filter(by=marketer).values_list("status", "reason")) == [
        ("review", "Regulars, known to the store"),
        ("qualified", ""),
    ]
    entries = LedgerEntry.objects.filter(kind="referral")
    assert sorted(entries.values_list("points", flat=True)) == [100, 200]
    assert "This decision was already recorded." in again.content.decode()
    assert entries.count() == 2
    assert in_review.events.count() == 4  # joined, review, approved, qualified


def test_rejecting_needs_a_note_and_a_refusal_writes_nothing(as_marketer, in_review):
    detail = reverse("staff:referral", args=[in_review.pk])
    before = written(in_review)

    for headers in ({}, HTMX):
        refused = as_marketer.post(detail, review(in_review, "reject", note="  "), headers=headers)
        assert refused.status_code == 200
        assert "Say why: the note is kept with the referral." in refused.content.decode()
        assert 'aria-invalid="true"' in refused.content.decode()
        assert written(in_review) == before

    done = as_marketer.post(detail, review(in_review, "reject", note="Same household"), headers=HTMX)

    html = done.content.decode()
    in_review.refresh_from_db()
    assert in_review.status == Referral.Status.REJECTED
    assert in_review.events.last().reason == "Same household"
    assert "<html" not in html
    assert f'id="decision-{in_review.pk}"' in html
    assert "Status: Rejected" in html
    assert 'name="decision"' not in html
    assert "hx-swap-oob" in html
    assert "Rejected: Wei, invited by Mei." in html


def test_a_referral_decided_meanwhile_is_refused_with_a_message(as_marketer, marketer, in_review):
    services.referral_approve(referral=in_review, by=marketer)
    before = written(in_review)

    refused = as_marketer.post(reverse("staff:referral", args=[in_review.pk]), review(in_review, "approve"), headers=HTMX)

    assert refused.status_code == 200
    assert "This referral was already decided." in refused.content.decode()
    assert written(in_review) == before


def test_a_form_without_a_decision_or_token_is_refused(as_marketer, in_review):
    before = written(in_review)
    detail = reverse("staff:referral", args=[in_review.pk])
    assert as_marketer.post(detail, {"note": "x", "token": str(uuid.uuid4())}).status_code == 200
    assert as_marketer.post(detail, {"decision": "approve", "token": "not-a-uuid"}).status_code == 200
    assert as_marketer.post(detail, {"decision": "delete", "token": str(uuid.uuid4())}).status_code == 200
    assert written(in_review) == before


def test_each_referral_shows_its_history_with_who_decided(as_marketer, marketer, in_review):
    services.referral_reject(referral=in_review, by=marketer, note="Second account")

    page = as_marketer.get(reverse("staff:referral", args=[in_review.pk]))

    events = page.content.decode().split('id="events"')[1]
    assert page.status_code == 200
    order = [events.index(f"<strong>{status}</strong>") for status in ("Joined", "In review", "Rejected")]
    assert order == sorted(order)
    assert "Every reward is approved by hand" in events
    assert "Second account" in events
    assert "by Lin" in events
    assert as_marketer.get(reverse("staff:referral", args=[999999])).status_code == 404


# --- the member panel ---------------------------------------------------------------------------


def test_the_member_panel_says_who_invited_the_member_and_how_many_friends_they_brought(at_counter, offer, store, referrer, code):
    offer.hold_days = 0
    offer.save()
    friend = MemberFactory(name="Wei Zhang", referral_code=code)
    reward_services.purchase_record(store=store, receipt_number="R-1", amount="50", member=friend)
    MemberFactory(referral_code=code)

    friend_page = at_counter.get(reverse("staff:member", args=[friend.member_number])).content.decode()
    referrer_page = at_counter.get(reverse("staff:member", args=[referrer.member_number])).content.decode()

    assert f"Invited by Mei (member {referrer.member_number}): Rewarded" in friend_page
    assert "Brought 0 friends (0 rewarded)" in friend_page
    assert "Not invited by another member." in referrer_page
    assert "Brought 2 friends (1 rewarded)" in referrer_page
    assert reverse("staff:referral", args=[Referral.objects.get(friend=friend).pk]) not in friend_page  # not for cashiers


def test_the_panels_referral_region_costs_the_same_queries_however_many_friends(at_counter, offer, referrer, code):
    url = reverse("staff:member", args=[referrer.member_number])
    MemberFactory(referral_code=code)
    at_counter.get(url)  # warm the session and the programme
    with CaptureQueriesContext(connection) as one_friend:
        at_counter.get(url)
    for _n in range(5):
        MemberFactory(referral_code=code)
    with CaptureQueriesContext(connection) as six_friends:
        page = at_counter.get(url)

    assert "Brought 6 friends" in page.content.decode()
    assert len(six_friends) == len(one_friend)
    assert sum("referrals_referral" in query["sql"] for query in six_friends.captured_queries) == 2


# --- a code at enrolment ----------------------------------------------------------------------


@pytest.fixture
def terms(rules):
    return TermsVersion.objects.create(
        programme=rules.programme, version="2025.1", published_at=timezone.now() - dt.timedelta(days=1)
    )


def customer(**extra):
    return {"phone": "137 0000 1234", "name": "Wang Fang", "language": "en", "terms": "on", **extra}


def test_a_cashier_enrols_a_friend_with_the_code_they_were_given(at_counter, cashier, terms, referrer, code):
    page = at_counter.get(reverse("staff:enrol")).content.decode()
    response = at_counter.post(reverse("staff:enrol"), customer(referral_code=f" {code.lower()[:3]}-{code.lower()[3:]} "))

    friend = Member.objects.get(phone="+8613700001234")
    referral = Referral.objects.get()
    assert 'name="referral_code"' in page
    assert response.status_code == 302
    assert (referral.referrer, referral.friend, referral.status) == (referrer, friend, Referral.Status.JOINED)


def test_an_unknown_code_at_enrolment_is_shown_on_its_field_and_enrols_nobody(at_counter, terms, referrer):
    members = Member.objects.count()

    for headers in ({}, HTMX):
        response = at_counter.post(reverse("staff:enrol"), customer(referral_code="ZZZZ-ZZZ"), headers=headers)
        html = response.content.decode()
        assert response.status_code == 200
        assert "No member has this referral code." in html
        assert 'aria-invalid="true" aria-describedby="enrol-referral_code_helptext enrol-referral_code_error"' in html

    assert Member.objects.count() == members
    assert not Referral.objects.exists()
    assert not TermsAcceptance.objects.exists()
    assert not ConsentRecord.objects.filter(member__phone="+8613700001234").exists()
    assert not ReferralEvent.objects.exists()


# --- a double click, for real -----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_eight_approvals_sent_at_once_pay_out_once(roles, store, offer, code):
    from django.test import Client

    from rewards.tests.test_concurrency import run_at_once

    offer.manual_approval = True
    offer.save()
    friend = MemberFactory(name="Wei Zhang", referral_code=code)
    reward_services.purchase_record(store=store, receipt_number="R-1", amount="50", member=friend)
    referral = Referral.objects.get()
    marketer = UserFactory(role="Marketer", stores=[store])
    clients = [counter_login(Client(), marketer, store) for _n in range(8)]
    url = reverse("staff:referral", args=[referral.pk])
    # Half resend one form (a double click), half send forms of their own (two tabs).
    shared = uuid.uuid4()
    forms = [review(referral, "approve", token=shared if n % 2 else uuid.uuid4()) for n in range(8)]

    outcomes = run_at_once(8, lambda n: clients[n].post(url, forms[n]).status_code)

    assert [o.error for o in outcomes if o.error] == []
    statuses = [o.value for o in outcomes]
    assert 302 in statuses
    assert set(statuses) <= {200, 302}  # the others are told it was decided already
    referral.refresh_from_db()
    assert referral.status == Referral.Status.QUALIFIED
    assert referral.events.filter(status="qualified").count() == 1
    assert sorted(LedgerEntry.objects.filter(kind="referral").values_list("points", flat=True)) == [100, 200]
