"""Enrolling a customer at the counter: phone in any format, consent per channel, the terms, a link to claim online."""

import datetime as dt

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from members.models import ConsentRecord, Member
from members.tests.counter import counter_login as counter_client
from members.tests.factories import MemberFactory, StoreFactory, UserFactory
from rewards.models import TermsAcceptance, TermsVersion

ENROL = reverse("staff:enrol")
HTMX = {"HX-Request": "true"}


@pytest.fixture
def terms(rules):
    return TermsVersion.objects.create(
        programme=rules.programme, version="2025.1", published_at=timezone.now() - dt.timedelta(days=1)
    )


def customer(**overrides):
    data = {"phone": "138 0000 1234", "name": "Wang Fang", "email": "", "birthday": "", "language": "zh-hans", "terms": "on"}
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def nothing_written():
    return not Member.objects.exists() and not ConsentRecord.objects.exists() and not TermsAcceptance.objects.exists()


@pytest.mark.django_db
def test_the_enrolment_form_is_in_the_counter_nav_and_works_without_javascript(at_counter, terms):
    page = at_counter.get(ENROL)

    assert page.status_code == 200
    html = page.content.decode()
    assert f'href="{ENROL}" aria-current="page"' in html
    assert 'name="phone"' in html
    assert 'method="post"' in html
    assert "HX-Request" in page["Vary"]
    assert f'href="{ENROL}"' in at_counter.get(reverse("staff:find")).content.decode()


@pytest.mark.django_db
def test_a_cashier_enrols_a_customer_who_gets_a_text_to_claim_the_account(
    at_counter, cashier, store, terms, sms, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = at_counter.post(
            ENROL,
            customer(email="Fang@Example.com", birthday="1990-05-17", sms_consent="on"),
        )

    member = Member.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("staff:member", args=[member.member_number])
    assert str(member.phone) == "+8613800001234"
    assert (member.name, member.email, member.birthday, member.language) == (
        "Wang Fang",
        "fang@example.com",
        dt.date(1990, 5, 17),
        "zh-hans",
    )
    assert (member.enrolment_channel, member.enrolled_store, member.enrolled_by) == ("counter", store, cashier)
    consent = ConsentRecord.objects.get()
    assert (consent.channel, consent.granted, consent.source, consent.recorded_by) == ("sms", True, "counter", cashier)
    assert member.sms_consent
    assert not member.email_consent
    acceptance = TermsAcceptance.objects.get()
    assert (acceptance.member, acceptance.terms, acceptance.channel) == (member, terms, "counter")
    [(phone, text)] = sms.sent
    assert phone == "+8613800001234"
    link = "http://testserver" + reverse("account_signup")
    assert link in text
    assert Client().get(reverse("account_signup")).status_code == 200  # the link leads somewhere
    assert member.member_number in text
    panel = at_counter.get(response["Location"]).content.decode()
    assert f"member {member.member_number}" in panel  # the message, in the status region


@pytest.mark.django_db
def test_the_welcome_text_needs_no_marketing_consent_and_waits_for_the_commit(
    at_counter, terms, sms, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        at_counter.post(ENROL, customer())

    assert sms.sent == []  # nothing before the commit
    for callback in callbacks:
        callback()
    assert len(sms.sent) == 1
    assert not Member.objects.get().sms_consent


@pytest.mark.django_db
def test_a_gateway_failure_does_not_undo_the_enrolment(at_counter, terms, sms, django_capture_on_commit_callbacks):
    sms.fail = True
    with django_capture_on_commit_callbacks(execute=True):
        response = at_counter.post(ENROL, customer())

    assert response.status_code == 302
    assert Member.objects.count() == 1


@pytest.mark.django_db
def test_with_htmx_success_sends_the_browser_to_the_new_member(at_counter, terms, sms):
    response = at_counter.post(ENROL, customer(), headers=HTMX)

    member = Member.objects.get()
    assert response.status_code == 200
    assert response["HX-Redirect"] == reverse("staff:member", args=[member.member_number])


@pytest.mark.django_db
@pytest.mark.parametrize("headers", [{}, HTMX])
def test_the_terms_must_be_accepted_and_nothing_is_written_without_them(at_counter, terms, sms, headers):
    response = at_counter.post(ENROL, customer(terms=None), headers=headers)

    assert response.status_code == 200
    html = response.content.decode()
    assert "must accept the programme terms" in html
    assert 'aria-invalid="true"' in html
    assert ("<html" in html) is not bool(headers)
    assert nothing_written()
    assert sms.sent == []


@pytest.mark.django_db
@pytest.mark.parametrize("headers", [{}, HTMX])
@pytest.mark.parametrize(
    ("typed", "existing"),
    [
        ({"phone": "+86 138-0000-1234"}, {"phone": "+8613800001234", "email": ""}),
        ({"phone": "139 0000 5678", "email": "FANG@example.com"}, {"phone": "+8613800001234", "email": "fang@example.com"}),
    ],
)
def test_a_known_phone_or_email_links_to_the_existing_member_and_writes_nothing(
    at_counter, terms, sms, headers, typed, existing, django_capture_on_commit_callbacks
):
    known = MemberFactory(name="Wang Fang", **existing)

    with django_capture_on_commit_callbacks(execute=True):
        response = at_counter.post(ENROL, customer(**typed), headers=headers)

    assert response.status_code == 200
    html = response.content.decode()
    assert f'href="{reverse("staff:member", args=[known.member_number])}"' in html
    assert f"already member {known.member_number}" in html
    assert Member.objects.count() == 1
    assert not TermsAcceptance.objects.exists()
    assert sms.sent == []


@pytest.mark.django_db
def test_a_phone_that_is_not_a_number_is_refused_on_its_field(at_counter, terms):
    response = at_counter.post(ENROL, customer(phone="12"))

    assert response.status_code == 200
    assert response.context["form"].errors["phone"] == ["Enter a valid phone number."]
    assert 'aria-describedby="enrol-phone_helptext enrol-phone_error"' in response.content.decode()
    assert nothing_written()


@pytest.mark.django_db
def test_without_published_terms_nobody_is_enrolled(at_counter, rules, sms):
    response = at_counter.post(ENROL, customer())

    assert response.status_code == 200
    assert "no published terms" in response.content.decode()
    assert nothing_written()


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["Cashier", "Store manager", "Programme admin"])
def test_every_counter_role_may_enrol(client, roles, store, terms, sms, role):
    counter_client(client, UserFactory(role=role, stores=[store]), store)
    assert client.post(ENROL, customer()).status_code == 302
    assert Member.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("headers", [{}, HTMX])
def test_a_marketer_cannot_enrol_even_by_crafting_the_form(client, roles, store, terms, sms, headers):
    counter_client(client, UserFactory(role="Marketer", stores=[store]), store)

    assert client.get(ENROL, headers=headers).status_code == 403
    assert client.post(ENROL, customer(), headers=headers).status_code == 403
    assert nothing_written()
    assert f'href="{ENROL}"' not in client.get(reverse("staff:find")).content.decode()


@pytest.mark.django_db
def test_enrolment_needs_staff_and_a_shift(client, roles, store, terms):
    assert client.post(ENROL, customer())["Location"].startswith(reverse("account_login"))
    client.force_login(UserFactory(is_staff=False))
    assert client.post(ENROL, customer()).status_code == 403
    client.force_login(UserFactory(role="Cashier", stores=[store, StoreFactory(code="hz01")]))
    assert client.post(ENROL, customer())["Location"].startswith(reverse("staff:shift"))
    assert nothing_written()
