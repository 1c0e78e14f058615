"""Accounts in the member portal: claiming a counter membership, a referral link, newer terms, login lock-out."""

import datetime as dt

import pytest
import time_machine
from allauth.account.models import EmailAddress
from django.conf import settings as django_settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from members import claims
from members import services as member_services
from members.models import Member
from members.tests.factories import MemberFactory, UserFactory
from members.tests.sms import RecordingSms
from rewards import services
from rewards.models import TermsAcceptance, TermsText, TermsVersion
from rewards.tests.test_concurrency import run_at_once, unexpected

CLAIM = reverse("portal:claim")
TERMS = reverse("portal:terms")
HOME = reverse("portal:home")
HTMX = {"HX-Request": "true"}
PASSWORD = "correct-horse-battery"
SENT = "If a membership has this number, a code is on its way to it."
NO_MATCH = "This member number and e-mail address do not match a membership you can claim."


@pytest.fixture
def terms(rules):
    version = TermsVersion.objects.create(
        programme=rules.programme, version="2025.1", published_at=timezone.now() - dt.timedelta(days=30)
    )
    TermsText.objects.create(terms=version, language="en", body="Points are worth nothing in cash.")
    return version


@pytest.fixture
def counter_member(terms):
    """Enrolled at the counter by phone, with no login yet."""
    return MemberFactory(phone="+8613800001234", email="mei@example.com", name="Mei")


def login_for(email: str):
    user = UserFactory(is_staff=False, email=email)
    EmailAddress.objects.create(user=user, email=email, verified=True, primary=True)
    return user


@pytest.fixture
def user():
    return login_for("mei@example.com")


@pytest.fixture
def logged_in(client, user):
    client.force_login(user)
    return client


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


def page_text(response) -> str:
    return response.content.decode()


# --- the claim page -------------------------------------------------------------------


@pytest.mark.django_db
def test_the_claim_page_needs_a_login_and_is_linked_from_join(client, user, terms):
    assert client.get(CLAIM)["Location"].startswith(reverse("account_login"))
    client.force_login(user)

    assert CLAIM in page_text(client.get(reverse("portal:join")))
    for headers in ({}, HTMX):
        page = client.get(CLAIM, headers=headers)
        assert page.status_code == 200
        assert 'name="phone"' in page_text(page)
        assert 'name="member_number"' in page_text(page)
        assert 'name="code"' not in page_text(page)  # no code asked for yet


@pytest.mark.django_db
def test_a_login_with_a_membership_already_goes_home(logged_in, user, counter_member):
    member_services.member_claim(member=counter_member, user=user)

    assert logged_in.get(CLAIM)["Location"] == HOME
    assert logged_in.post(CLAIM, {"step": "phone", "phone": "138 0000 1234"})["Location"] == HOME


@pytest.mark.django_db
def test_claim_by_a_code_texted_to_the_phone_links_the_membership_and_accepts_the_terms(
    logged_in, user, counter_member, terms, sms
):
    # Given a code texted to the number given at the counter, typed in a local format
    asked = logged_in.post(CLAIM, {"step": "phone", "phone": "138 0000 1234"}, follow=True)
    assert SENT in page_text(asked)
    assert [phone for phone, _text in sms.sent] == ["+8613800001234"]
    code = RecordingSms.last_code()
    assert code not in str(cache.get(f"members:claim_code:{user.pk}"))  # kept hashed only
    assert 'name="code"' in page_text(asked)

    # When a wrong code, or the right one without accepting the terms, is sent: nothing happens
    refused = logged_in.post(CLAIM, {"step": "code", "code": wrong(code), "accept_terms": "on"})
    assert "This is not the code we sent." in page_text(refused)
    unaccepted = logged_in.post(CLAIM, {"step": "code", "code": code})
    assert unaccepted.status_code == 200
    counter_member.refresh_from_db()
    assert counter_member.user is None
    assert not TermsAcceptance.objects.exists()

    # Then the right code with the terms accepted links the membership and records the acceptance
    claimed = logged_in.post(CLAIM, {"step": "code", "code": f" {code} ", "accept_terms": "on"})
    assert claimed["Location"] == HOME
    counter_member.refresh_from_db()
    assert counter_member.user == user
    acceptance = TermsAcceptance.objects.get(member=counter_member)
    assert (acceptance.terms, acceptance.channel) == (terms, Member.Channel.ONLINE)
    assert logged_in.get(HOME).status_code == 200
    assert claims.claim_code_pending(user=user) is None  # used up


@pytest.mark.django_db
def test_a_number_no_member_has_gets_the_same_answer_and_no_text(logged_in, user, counter_member, sms):
    unknown = logged_in.post(CLAIM, {"step": "phone", "phone": "139 0000 9999"}, follow=True)
    known_elsewhere = logged_in.post(CLAIM, {"step": "phone", "phone": "138 0000 1234"}, follow=True)

    assert unknown.redirect_chain == known_elsewhere.redirect_chain == [(CLAIM, 302)]
    assert SENT in page_text(unknown)
    assert [phone for phone, _text in sms.sent] == ["+8613800001234"]


@pytest.mark.django_db
def test_no_code_ever_claims_a_number_no_member_has(user, counter_member, sms):
    claims.claim_code_send(user=user, phone="139 0000 9999")

    for guess in ("000000", "123456", "999999"):
        with pytest.raises(ValidationError, match="not the code"):
            claims.claim_code_check(user=user, code=guess)
    assert not sms.sent


@pytest.mark.django_db
def test_a_gateway_failure_answers_as_if_the_code_was_sent(logged_in, counter_member, sms):
    sms.fail = True

    response = logged_in.post(CLAIM, {"step": "phone", "phone": "138 0000 1234"})

    assert response["Location"] == CLAIM


@pytest.mark.django_db
def test_a_bad_phone_number_is_named_and_costs_no_code(logged_in, user, counter_member, sms):
    response = logged_in.post(CLAIM, {"step": "phone", "phone": "12"})

    assert response.status_code == 200
    assert "Enter a valid phone number." in page_text(response)
    for _code in range(claims.CODES_PER_HOUR):
        claims.claim_code_send(user=user, phone="138 0000 1234")  # the hour's codes are all still there


@pytest.mark.django_db
def test_five_wrong_codes_use_the_code_up(logged_in, user, counter_member, sms):
    claims.claim_code_send(user=user, phone="+8613800001234")
    code = RecordingSms.last_code()
    for _try in range(claims.CODE_TRIES):
        response = logged_in.post(CLAIM, {"step": "code", "code": wrong(code), "accept_terms": "on"})
        assert "This is not the code we sent." in page_text(response)

    response = logged_in.post(CLAIM, {"step": "code", "code": code, "accept_terms": "on"})

    assert "Too many wrong codes." in page_text(response)
    assert claims.claim_code_pending(user=user) is None
    counter_member.refresh_from_db()
    assert counter_member.user is None


@pytest.mark.django_db
def test_the_right_code_on_the_fifth_try_still_works(user, counter_member, sms):
    claims.claim_code_send(user=user, phone="+8613800001234")
    code = RecordingSms.last_code()
    for _try in range(claims.CODE_TRIES - 1):
        with pytest.raises(ValidationError):
            claims.claim_code_check(user=user, code=wrong(code))

    assert claims.claim_code_check(user=user, code=code) == counter_member


@pytest.mark.django_db
def test_a_code_expires_after_ten_minutes(user, counter_member, sms):
    claims.claim_code_send(user=user, phone="+8613800001234")

    later = time_machine.travel(timezone.now() + dt.timedelta(minutes=10, seconds=1))
    with later, pytest.raises(ValidationError, match="expired"):
        claims.claim_code_check(user=user, code=RecordingSms.last_code())


@pytest.mark.django_db
def test_a_code_works_only_for_the_login_that_asked_for_it(user, counter_member, sms):
    claims.claim_code_send(user=user, phone="+8613800001234")
    other = login_for("someone@example.com")

    with pytest.raises(ValidationError, match="expired"):
        claims.claim_code_check(user=other, code=RecordingSms.last_code())
    assert claims.claim_code_check(user=user, code=RecordingSms.last_code()) == counter_member


@pytest.mark.django_db
def test_three_codes_an_hour_per_login_and_per_phone(logged_in, user, counter_member, sms):
    for _code in range(claims.CODES_PER_HOUR):
        assert logged_in.post(CLAIM, {"step": "phone", "phone": "138 0000 1234"}).status_code == 302

    refused = logged_in.post(CLAIM, {"step": "phone", "phone": "138 0000 1234"})
    assert refused.status_code == 200
    assert "Too many codes were asked for." in page_text(refused)
    assert len(sms.sent) == claims.CODES_PER_HOUR
    with pytest.raises(ValidationError, match="Too many codes"):
        claims.claim_code_send(user=user, phone="139 0000 9999")  # this login, another phone
    with pytest.raises(ValidationError, match="Too many codes"):
        claims.claim_code_send(user=login_for("other@example.com"), phone="138 0000 1234")  # this phone, another login

    with time_machine.travel(timezone.now() + dt.timedelta(hours=1, seconds=1)):
        claims.claim_code_send(user=user, phone="138 0000 1234")
    assert len(sms.sent) == claims.CODES_PER_HOUR + 1


@pytest.mark.django_db
def test_claim_by_member_number_and_the_email_on_file(logged_in, user, counter_member):
    data = {"step": "number", "member_number": counter_member.member_number, "email": " MEI@Example.com ", "accept_terms": "on"}

    assert logged_in.post(CLAIM, data)["Location"] == HOME

    counter_member.refresh_from_db()
    assert counter_member.user == user
    assert TermsAcceptance.objects.filter(member=counter_member, channel=Member.Channel.ONLINE).exists()


@pytest.mark.django_db
def test_a_number_and_email_mismatch_says_the_same_whatever_was_wrong(logged_in, user, counter_member):
    unverified = login_for("mei.other@example.com")
    EmailAddress.objects.create(user=unverified, email="mei@example.com", verified=False)
    valid_unused = "1234567897"  # a valid check digit, no member has it
    assert not Member.objects.filter(member_number=valid_unused).exists()
    attempts = [
        (logged_in, valid_unused, "mei@example.com"),
        (logged_in, "12345", "mei@example.com"),
        (logged_in, counter_member.member_number, "someone.else@example.com"),
    ]
    for client, number, email in attempts:
        response = client.post(CLAIM, {"step": "number", "member_number": number, "email": email, "accept_terms": "on"})
        assert response.status_code == 200
        assert NO_MATCH in page_text(response)
    # The right number and e-mail, but this login has not verified that address
    with pytest.raises(ValidationError) as refused:
        claims.claim_by_number(user=unverified, member_number=counter_member.member_number, email="mei@example.com")

    assert refused.value.messages == [NO_MATCH]
    counter_member.refresh_from_db()
    assert counter_member.user is None
    assert not TermsAcceptance.objects.exists()


@pytest.mark.django_db
def test_claims_by_number_are_throttled(logged_in, counter_member):
    number = counter_member.member_number
    wrong_email = {"step": "number", "member_number": number, "email": "x@example.com", "accept_terms": "on"}
    for _try in range(claims.NUMBER_TRIES_PER_HOUR):
        assert NO_MATCH in page_text(logged_in.post(CLAIM, wrong_email))

    response = logged_in.post(CLAIM, {**wrong_email, "email": "mei@example.com"})

    assert "Too many tries." in page_text(response)
    counter_member.refresh_from_db()
    assert counter_member.user is None


@pytest.mark.django_db
def test_a_closed_membership_cannot_be_claimed(logged_in, counter_member):
    Member.objects.filter(pk=counter_member.pk).update(status=Member.Status.CLOSED)
    data = {"step": "number", "member_number": counter_member.member_number, "email": "mei@example.com", "accept_terms": "on"}

    response = logged_in.post(CLAIM, data)

    assert "This membership was closed and cannot be claimed." in page_text(response)
    counter_member.refresh_from_db()
    assert counter_member.user is None
    assert not TermsAcceptance.objects.exists()


# --- member_claim -----------------------------------------------------------------------


@pytest.mark.django_db
def test_member_claim_links_once_and_refuses_what_it_must(user, counter_member):
    assert member_services.member_claim(member=counter_member, user=user).user == user
    assert member_services.member_claim(member=counter_member, user=user).user == user  # again: no-op

    with pytest.raises(ValidationError, match="another login"):
        member_services.member_claim(member=counter_member, user=login_for("thief@example.com"))
    with pytest.raises(ValidationError, match="has a membership already"):
        member_services.member_claim(member=MemberFactory(), user=user)
    blocked = MemberFactory()
    Member.objects.filter(pk=blocked.pk).update(status=Member.Status.BLOCKED)
    with pytest.raises(ValidationError, match="blocked"):
        member_services.member_claim(member=blocked, user=login_for("blocked@example.com"))
    assert Member.objects.filter(user__isnull=False).count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_many_logins_racing_for_one_membership_link_exactly_one(rules):
    member = MemberFactory()
    users = [login_for(f"racer{i}@example.com") for i in range(12)]

    outcomes = run_at_once(len(users), lambda i: member_services.member_claim(member=member, user=users[i]))

    assert unexpected(outcomes, ValidationError) == []
    winners = [outcome.value for outcome in outcomes if outcome.error is None]
    assert len(winners) == 1
    member.refresh_from_db()
    assert member.user == winners[0].user  # type: ignore[union-attr]


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_one_login_racing_for_many_memberships_gets_one(rules):
    user = login_for("greedy@example.com")
    members = [MemberFactory() for _ in range(12)]

    outcomes = run_at_once(len(members), lambda i: member_services.member_claim(member=members[i], user=user))

    assert unexpected(outcomes, ValidationError) == []
    assert sum(outcome.error is None for outcome in outcomes) == 1
    assert Member.objects.filter(user=user).count() == 1


# --- a referral code from a sign-up link ----------------------------------------------------


@pytest.mark.django_db
def test_the_signup_page_keeps_a_referral_code_for_the_referrals_app(client):
    response = client.get(reverse("account_signup"), {"ref": "MEI-2025"})

    assert response.status_code == 200
    assert client.session["referral_code"] == "MEI-2025"


@pytest.mark.django_db
@pytest.mark.parametrize("ref", ["", "ab", "<script>", "x" * 33, "MEI 2025"])
def test_a_malformed_referral_code_is_ignored(client, ref):
    assert client.get(reverse("account_signup"), {"ref": ref}).status_code == 200
    assert "referral_code" not in client.session


@pytest.mark.django_db
def test_a_referral_code_on_another_page_is_ignored(client, terms):
    client.get(reverse("portal:how"), {"ref": "MEI-2025"})

    assert "referral_code" not in client.session


# --- newer terms ---------------------------------------------------------------------------


@pytest.fixture
def member_login(logged_in, user, counter_member):
    """A member who claimed their membership online, accepting the terms then in force."""
    member_services.member_claim(member=counter_member, user=user)
    services.terms_accept(member=counter_member, channel=Member.Channel.ONLINE)
    return logged_in


def publish(rules, version: str, **fields):
    terms = TermsVersion.objects.create(programme=rules.programme, version=version, published_at=timezone.now(), **fields)
    TermsText.objects.create(terms=terms, language="en", body=f"The text of {version}.")
    return terms


@pytest.mark.django_db
def test_a_newer_version_is_accepted_before_the_portal_is_used_again(member_login, counter_member, rules):
    assert member_login.get(HOME).status_code == 200
    newer = publish(rules, "2026.1", summary_of_changes="Points now last two years.")

    sent_away = member_login.get(HOME)
    assert sent_away["Location"] == f"{TERMS}?next=%2Fme%2F"
    fragment = member_login.get(HOME, headers=HTMX)
    assert (fragment.status_code, fragment["HX-Redirect"]) == (200, f"{TERMS}?next=%2Fme%2F")

    page = member_login.get(sent_away["Location"])
    assert "The text of 2026.1." in page_text(page)
    assert "Points now last two years." in page_text(page)
    unaccepted = member_login.post(TERMS, {"version": newer.pk, "next": HOME})
    assert unaccepted.status_code == 200
    assert not counter_member.terms_acceptances.filter(terms=newer).exists()

    accepted = member_login.post(TERMS, {"version": newer.pk, "next": HOME, "accept_terms": "on"})

    assert accepted["Location"] == HOME
    acceptance = counter_member.terms_acceptances.get(terms=newer)
    assert acceptance.channel == Member.Channel.ONLINE
    assert timezone.now() - acceptance.accepted_at < dt.timedelta(minutes=1)
    assert member_login.get(HOME).status_code == 200


@pytest.mark.django_db
def test_the_terms_how_it_works_privacy_and_logout_stay_open_while_terms_wait(member_login, rules):
    publish(rules, "2026.1")

    assert member_login.get(TERMS).status_code == 200
    assert member_login.get(reverse("portal:how")).status_code == 200
    assert member_login.get(reverse("portal:privacy")).status_code == 200  # leaving stays possible
    assert member_login.get(reverse("account_logout")).status_code == 200
    assert member_login.get("/").status_code in (200, 302)
    assert not member_login.get("/").get("Location", "").startswith(TERMS)


@pytest.mark.django_db
def test_terms_published_while_reading_are_shown_before_they_are_accepted(member_login, counter_member, rules):
    newer = publish(rules, "2026.1")
    newest = publish(rules, "2026.2")

    response = member_login.post(TERMS, {"version": newer.pk, "next": HOME, "accept_terms": "on"})

    assert response["Location"] == f"{TERMS}?next=%2Fme%2F"
    assert not counter_member.terms_acceptances.filter(terms__in=[newer, newest]).exists()


@pytest.mark.django_db
def test_accepting_on_another_device_lets_this_session_through(member_login, counter_member, rules):
    assert member_login.get(HOME).status_code == 200  # this session remembers the version accepted
    newer = publish(rules, "2026.1")
    services.terms_accept(member=counter_member, channel=Member.Channel.ONLINE, terms=newer)  # on the phone

    sent_away = member_login.get(HOME)

    assert member_login.get(sent_away["Location"])["Location"] == HOME
    assert member_login.get(HOME).status_code == 200


@pytest.mark.django_db
def test_after_accepting_the_terms_page_never_leaves_the_site(member_login, counter_member, rules):
    newer = publish(rules, "2026.1")

    response = member_login.post(TERMS, {"version": newer.pk, "next": "https://evil.example/", "accept_terms": "on"})

    assert response["Location"] == HOME


@pytest.mark.django_db
def test_the_terms_page_needs_a_login_and_a_membership(client, user, terms):
    assert client.get(TERMS)["Location"].startswith(reverse("account_login"))
    client.force_login(user)
    assert client.get(TERMS)["Location"].startswith(reverse("portal:join"))


@pytest.mark.django_db
def test_a_member_who_never_accepted_any_terms_is_asked_too(logged_in, user, counter_member):
    """A member imported from another system never accepted our terms: the portal asks them first."""
    Member.objects.filter(pk=counter_member.pk).update(user=user)

    assert logged_in.get(HOME)["Location"].startswith(reverse("portal:terms"))


def terms_queries(context: CaptureQueriesContext) -> int:
    return sum("rewards_terms" in query["sql"] for query in context.captured_queries)


@pytest.mark.django_db
def test_the_terms_check_costs_one_query_per_request(member_login):
    for _request in range(2):  # first without, then with the version remembered in the session
        with CaptureQueriesContext(connection) as queries:
            assert member_login.get(HOME).status_code == 200
        assert terms_queries(queries) == 1


# --- logging in -------------------------------------------------------------------------------


def log_in(client, email: str, password: str, **extra):
    return client.post(reverse("account_login"), {"login": email, "password": password, **extra})


@pytest.mark.django_db
def test_five_wrong_passwords_lock_the_login_out_for_a_while(client, user):
    other = login_for("other@example.com")
    other.set_password(PASSWORD)
    other.save()
    for _try in range(5):
        assert log_in(client, user.email, "not-the-password").status_code == 200

    refused = log_in(client, user.email, PASSWORD)

    assert refused.status_code == 200
    assert "Too many failed login attempts." in page_text(refused)
    assert "_auth_user_id" not in client.session
    assert log_in(client, other.email, PASSWORD).status_code == 302  # another login from the same place is not locked
    client.logout()
    with time_machine.travel(timezone.now() + dt.timedelta(minutes=5, seconds=1)):
        assert log_in(client, user.email, PASSWORD).status_code == 302


@pytest.mark.django_db
def test_sessions_last_two_weeks_when_remembered_else_until_the_browser_closes(client, user):
    assert django_settings.SESSION_COOKIE_AGE == 14 * 24 * 60 * 60
    assert not django_settings.SESSION_EXPIRE_AT_BROWSER_CLOSE

    assert log_in(client, user.email, PASSWORD, remember="on").status_code == 302
    assert client.session.get_expiry_age() == 14 * 24 * 60 * 60
    assert not client.session.get_expire_at_browser_close()
    client.logout()
    assert log_in(client, user.email, PASSWORD).status_code == 302
    assert client.session.get_expire_at_browser_close()
