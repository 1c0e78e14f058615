"""The member portal's referral pages: the friend's landing page, joining with a code, and "Invite friends"."""

import datetime as dt
import re

import pytest
import time_machine
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from members.access import DEVICE_COOKIE
from members.middleware import REFERRAL_CODE
from members.models import Member
from members.services import fingerprint_digest
from members.tests.factories import MemberFactory, UserFactory
from referrals import services
from referrals.models import Referral, ReferralCode
from rewards import services as reward_services
from rewards.models import TermsAcceptance, TermsVersion

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
INVITE = reverse("portal:invite")
SHARED = reverse("portal:invite_shared")
JOIN = reverse("portal:join")
HOME = reverse("portal:home")


@pytest.fixture
def terms(rules):
    return TermsVersion.objects.create(programme=rules.programme, version="2026.1", published_at="2026-01-01T00:00Z")


def log_in(client: Client, member: Member, terms: TermsVersion) -> Client:
    """Log the client in as the member's own login, with the current terms accepted."""
    user = UserFactory(is_staff=False)
    Member.objects.filter(pk=member.pk).update(user=user)
    reward_services.terms_accept(member=member, channel=Member.Channel.ONLINE, terms=terms)
    client.force_login(user)
    return client


@pytest.fixture
def mei(offer):
    return MemberFactory(name="Mei Lin", email="mei@example.com", phone="+8613700000001")


@pytest.fixture
def code(mei):
    return services.referral_code_for(mei).code


@pytest.fixture
def me(client, mei, terms):
    return log_in(client, mei, terms)


def landing(code: str) -> str:
    return reverse("referral_join", args=[code])


def text(response) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.content.decode()))


def friend_row(response, name: str) -> str:
    """Return the text of the friends list's row of the friend shown by this name ("" when there is none)."""
    rows = re.findall(r"<li>(.*?)</li>", response.content.decode().split('id="friends"')[1], re.S)
    found = [row for row in rows if f"<strong>{name}</strong>" in row]
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found[0])).strip() if found else ""


def counters(code: str) -> tuple[int, int]:
    found = ReferralCode.objects.get(code=code)
    return found.visits, found.shares


# --- the friend's landing page -----------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, HTMX], ids=["page", "htmx"])
def test_the_landing_page_says_who_invited_and_what_both_get_and_counts_the_visit(client, code, terms, headers):
    response = client.get(landing(code), **headers)

    assert response.status_code == 200
    page = text(response)
    assert "Mei invited you to Morning Light" in page
    assert "Join, and you get 100 pts; Mei gets 200 pts." in page
    assert "first purchase of at least CN¥30.00 within 30 days of joining" in page
    assert f'href="/accounts/signup/?ref={code}"' in response.content.decode()
    assert "Mei Lin" not in page  # the first name only
    assert client.session[REFERRAL_CODE] == code
    assert counters(code) == (1, 0)
    cookie = response.cookies[DEVICE_COOKIE]
    assert len(cookie.value) >= 20
    assert (cookie["httponly"], cookie["samesite"], cookie["max-age"]) == (True, "Lax", 60 * 60 * 24 * 365 * 2)


def test_a_visit_is_counted_once_a_browser_session_and_the_device_cookie_is_kept(client, code, terms):
    first = client.get(landing(code))
    device = first.cookies[DEVICE_COOKIE].value

    again = client.get(landing(code.lower()))  # typed in lower case: the same code
    client.head(landing(code))  # a link preview's look is no visit
    Client().get(landing(code))  # another browser

    assert again.status_code == 200
    assert DEVICE_COOKIE not in again.cookies  # not replaced
    assert client.cookies[DEVICE_COOKIE].value == device
    assert counters(code) == (2, 0)


def test_the_device_cookie_is_secure_in_production(client, code, terms, settings):
    settings.SESSION_COOKIE_SECURE = True

    assert client.get(landing(code)).cookies[DEVICE_COOKIE]["secure"] is True


@pytest.mark.parametrize("typed", ["ZZZZZZZ", "not a code", "x" * 40])
def test_an_unknown_code_is_a_friendly_404_and_counts_nothing(client, code, terms, typed):
    response = client.get(landing(typed))

    assert response.status_code == 404
    assert "This invitation link does not work" in text(response)
    assert REFERRAL_CODE not in client.session
    assert DEVICE_COOKIE not in response.cookies
    assert counters(code) == (0, 0)


def test_a_closed_members_link_no_longer_works(client, mei, code, terms):
    Member.objects.filter(pk=mei.pk).update(status=Member.Status.CLOSED)

    assert client.get(landing(code)).status_code == 404


def test_with_referrals_off_the_link_leads_to_a_plain_sign_up_without_a_promise(client, offer, code, terms):
    offer.active = False
    offer.save()

    response = client.get(landing(code))

    assert response.status_code == 200
    page = text(response)
    assert "Join Morning Light" in page
    assert "Mei" not in page
    assert "100 pts" not in page
    assert 'href="/accounts/signup/"' in response.content.decode()
    assert REFERRAL_CODE not in client.session
    assert counters(code) == (0, 0)


def test_a_logged_in_member_is_sent_to_their_home_page_and_counts_nothing(me, code):
    other = MemberFactory(name="Wei")
    other_code = services.referral_code_for(other).code

    assert me.get(landing(other_code))["Location"] == HOME
    assert me.get(landing(code))["Location"] == HOME
    assert counters(other_code) == (0, 0)
    assert REFERRAL_CODE not in me.session


def test_a_login_without_a_membership_goes_to_join_with_the_code_kept(client, code, terms):
    client.force_login(UserFactory(is_staff=False))

    response = client.get(landing(code))

    assert response["Location"] == JOIN
    assert client.session[REFERRAL_CODE] == code
    assert counters(code) == (1, 0)


def test_the_landing_page_writes_nothing_but_the_count_and_the_session(client, code, terms):
    with CaptureQueriesContext(connection) as queries:
        client.get(landing(code))

    writes = [q["sql"] for q in queries.captured_queries if re.match(r"(INSERT|UPDATE|DELETE)", q["sql"])]
    [count] = [sql for sql in writes if "django_session" not in sql]
    assert count.startswith('UPDATE "referrals_referralcode" SET "visits"')


# --- joining with a code ----------------------------------------------------------------------


def test_joining_after_the_link_fills_in_the_code_and_makes_the_referral(client, mei, code, terms):
    device = client.get(landing(code)).cookies[DEVICE_COOKIE].value
    user = UserFactory(is_staff=False, email="wei@example.com")
    client.force_login(user)

    form = client.get(JOIN)
    assert form.status_code == 200
    assert f'name="referral_code" id="id_referral_code" value="{code}"' in form.content.decode()
    assert "Invited by Mei" in text(form)

    response = client.post(JOIN, {"referral_code": code, "accept_terms": "on"}, REMOTE_ADDR="203.0.113.9")

    assert response["Location"] == HOME
    friend = Member.objects.get(user=user)
    referral = Referral.objects.get()
    assert (referral.referrer, referral.friend, referral.status) == (mei, friend, "joined")
    assert (referral.signup_ip, referral.device) == ("203.0.113.9", fingerprint_digest("device", device))
    assert REFERRAL_CODE not in client.session


@pytest.mark.parametrize("typed", ["ZZZZZZZ", "!!"])
def test_a_bad_code_at_join_shows_the_field_error_and_writes_nothing(client, code, terms, typed):
    user = UserFactory(is_staff=False, email="wei@example.com")
    client.force_login(user)

    response = client.post(JOIN, {"referral_code": typed, "accept_terms": "on"})

    assert response.status_code == 200
    page = response.content.decode()
    assert re.search(r'id="id_referral_code"[^>]*aria-invalid="true"', page)
    assert "No member has this referral code. Check it, or leave it empty." in page
    assert not Member.objects.filter(user=user).exists()
    assert Member.objects.count() == 1  # Mei only
    assert not Referral.objects.exists()
    assert not TermsAcceptance.objects.exists()


def test_with_referrals_off_the_join_page_has_no_code_field_and_ignores_one(client, offer, code, terms):
    offer.active = False
    offer.save()
    client.get(landing(code))
    user = UserFactory(is_staff=False)
    client.force_login(user)

    form = client.get(JOIN).content.decode()
    response = client.post(JOIN, {"referral_code": code, "accept_terms": "on"})

    assert 'name="referral_code"' not in form
    assert "Invited by" not in form
    assert response["Location"] == HOME
    assert Member.objects.filter(user=user).exists()
    assert not Referral.objects.exists()


# --- "Invite friends" ---------------------------------------------------------------------------


@pytest.mark.parametrize("url", [INVITE, f"{INVITE}?page=2"])
@pytest.mark.parametrize("headers", [{}, HTMX], ids=["page", "htmx"])
def test_invite_needs_a_login_and_a_membership(client, terms, url, headers):
    assert client.get(url, **headers)["Location"].startswith(reverse("account_login"))
    client.force_login(UserFactory(is_staff=False))
    assert client.get(url, **headers)["Location"].startswith(JOIN)


def test_invite_shows_the_code_link_qr_and_share_buttons(me, mei, code):
    response = me.get(INVITE)

    assert response.status_code == 200
    html = response.content.decode()
    link = f"http://testserver/join/{code}/"
    assert f'id="invite-code">{code}<' in html
    assert f'id="invite-link">{link}<' in html
    assert re.search(r"<svg[^>]*>.*?<title>" + re.escape(link) + "</title>", html, re.S)
    assert 'href="mailto:?subject=An%20invitation%20to%20Morning%20Light&amp;body=Join%20me%20at%20Morning%20Light' in html
    assert 'href="sms:?&amp;body=Join%20me%20at%20Morning%20Light%20and%20get%20100%20pts' in html
    assert f'href="https://social-plugins.line.me/lineit/share?url=http%3A%2F%2Ftestserver%2Fjoin%2F{code}%2F"' in html
    assert html.count(f'hx-post="{SHARED}"') == 6  # copy, e-mail, SMS, LINE, WeChat, KakaoTalk
    assert re.search(r'<button[^>]*id="copy-link"[^>]*hidden>', html)  # shown by invite.js only where it can copy
    assert "<script" not in html.split("</head>")[1]  # no inline script: the CSP forbids it
    page = text(response)
    assert "For each friend who joins with your invitation, you get 200 pts and your friend gets 100 pts." in page
    assert "You are rewarded for up to 5 friends a month." in page
    assert "They can be used 14 days after that purchase, unless it is returned." in page
    assert "No friend has joined with your invitation yet." in page
    assert "HX-Request" in response["Vary"]


def test_invite_remembers_the_members_device(me, mei, code):
    me.get(INVITE)
    device = me.cookies[DEVICE_COOKIE].value
    me.get(INVITE)

    assert ReferralCode.objects.get(member=mei).devices == [fingerprint_digest("device", device)]


def test_invite_lists_the_members_own_friends_masked_with_their_status_and_points(me, mei, code, store, committed):
    wei = MemberFactory(name="Wei Zhang", referral_code=code)
    MemberFactory(name="", phone="+8613900004321", referral_code=code)
    returned = MemberFactory(name="Jun Park", referral_code=code)
    stranger = MemberFactory(name="Stranger Danger")
    services.referral_join(friend=MemberFactory(name="Someone Else"), code=services.referral_code_for(stranger).code)
    committed(reward_services.purchase_record, store=store, receipt_number="R-1", amount="50", member=wei)
    sale = committed(reward_services.purchase_record, store=store, receipt_number="R-2", amount="50", member=returned).purchase
    committed(reward_services.purchase_return, purchase=sale, return_number="X-1", amount="50")

    response = me.get(INVITE)
    page = text(response)

    assert re.fullmatch(r"Wei member since .+ Qualified The rewards can be used from .+\.", friend_row(response, "Wei"))
    assert "Zhang" not in page
    masked = friend_row(response, "••• 4321")  # no name: the phone's last digits
    assert re.fullmatch(r"••• 4321 member since .+ Joined Waiting for their first purchase, until .+\.", masked)
    assert "13900004321" not in page
    assert re.fullmatch(r"Jun member since .+ Rejected Their first purchase was returned\.", friend_row(response, "Jun"))
    assert "Someone" not in page
    assert "Stranger" not in page
    assert re.search(r"Points from inviting friends 200 pts", page)  # 200 held for Wei, Jun's taken back


def test_the_friend_role_reward_is_not_counted_as_points_from_inviting(client, terms, code, store, committed):
    wei = MemberFactory(name="Wei Zhang", referral_code=code)
    committed(reward_services.purchase_record, store=store, receipt_number="R-1", amount="50", member=wei)

    page = text(log_in(client, wei, terms).get(INVITE))

    assert "Points from inviting friends 0 pts" in page


def test_each_status_reads_in_member_friendly_words_never_a_reviewers_note(me, offer, mei, code, store, committed):
    offer.manual_approval = True
    offer.save()
    with time_machine.travel(timezone.now() - dt.timedelta(days=31)):
        MemberFactory(name="Di", referral_code=code)
    services.referrals_expire_due()
    _waiting, checked, rejected = (MemberFactory(name=name, referral_code=code) for name in ["Ann", "Bo", "Cy"])
    committed(reward_services.purchase_record, store=store, receipt_number="R-1", amount="50", member=checked)
    note = "Looks like Mei's twin"
    committed(services.referral_reject, referral=Referral.objects.get(friend=rejected), by=UserFactory(), note=note)

    response = me.get(INVITE)

    assert re.fullmatch(r"Ann member since .+ Joined Waiting for their first purchase, until .+\.", friend_row(response, "Ann"))
    assert friend_row(response, "Bo").endswith("In review We are checking this invitation before the rewards are given.")
    assert friend_row(response, "Cy").endswith("Rejected It did not meet the programme's conditions.")
    assert re.fullmatch(r"Di member since .+ Expired No qualifying purchase by .+\.", friend_row(response, "Di"))
    page = text(response)
    assert "twin" not in page


def test_the_friends_list_pages_and_htmx_gets_just_the_list(me, mei, code):
    for n in range(23):
        MemberFactory(name=f"Friend{n:02d} Zhang", referral_code=code)

    first = me.get(INVITE)
    fragment = me.get(f"{INVITE}?page=2", **HTMX)

    assert "Friend22" in text(first)
    assert "Friend00" not in text(first)
    assert "Page 1 of 2" in text(first)
    html = fragment.content.decode()
    assert fragment.status_code == 200
    assert html.lstrip().startswith('<div id="friends">')
    assert "<h1>" not in html
    assert "invite-code" not in html
    assert "Friend00" in text(fragment)
    assert "Friend22" not in text(fragment)
    assert "HX-Request" in fragment["Vary"]


def test_invite_takes_the_same_queries_for_one_friend_or_many(me, mei, code, store, committed):
    friend = MemberFactory(name="Wei", referral_code=code)
    committed(reward_services.purchase_record, store=store, receipt_number="R-0", amount="50", member=friend)
    me.get(INVITE)  # the session and the device cookie settle
    with CaptureQueriesContext(connection) as one:
        assert me.get(INVITE).status_code == 200
    for n in range(1, 12):
        friend = MemberFactory(name=f"Friend{n}", referral_code=code)
        committed(reward_services.purchase_record, store=store, receipt_number=f"R-{n}", amount="50", member=friend)
    with CaptureQueriesContext(connection) as twelve:
        page = me.get(INVITE)

    assert "Points from inviting friends 1,000 pts" in text(page)  # five a month, then the cap
    assert len(twelve) == len(one)


def test_with_referrals_off_invite_is_paused_but_the_friends_stay(me, offer, code):
    MemberFactory(name="Wei", referral_code=code)
    offer.active = False
    offer.save()

    response = me.get(INVITE)

    page = text(response)
    assert "Inviting friends is paused at the moment." in page
    assert code not in page
    assert "Joined" in friend_row(response, "Wei")


# --- counting shares ----------------------------------------------------------------------------


def test_a_share_button_counts_a_share(me, code):
    assert me.post(SHARED, {"channel": "line"}, **HTMX).status_code == 204
    assert me.post(SHARED, {"channel": "email"})["Location"] == INVITE

    assert counters(code) == (0, 2)


def test_a_share_is_counted_only_when_posted_by_a_member(client, me, code):
    assert me.get(SHARED).status_code == 405
    assert Client().post(SHARED)["Location"].startswith(reverse("account_login"))
    assert counters(code) == (0, 0)


def test_the_portal_links_to_invite_and_home_shows_an_invite_card_only_while_referrals_are_on(me, offer):
    home = me.get(HOME)
    assert f'href="{INVITE}"' in home.content.decode()
    assert "For each friend who joins with your invitation, you get 200 pts and your friend gets 100 pts." in text(home)

    offer.active = False
    offer.save()
    home = me.get(HOME)
    assert "Get your invitation link" not in text(home)
    assert "For each friend" not in text(home)


def test_how_it_works_explains_referrals_with_their_conditions_and_says_nothing_when_they_are_off(client, offer):
    shown = client.get(reverse("portal:how")).content.decode()
    offer.active = False
    offer.save()
    off = client.get(reverse("portal:how")).content.decode()

    assert "For each friend who joins with your invitation, you get 200 pts and your friend gets 100 pts." in shown
    assert "first purchase of at least" in shown
    assert "You are rewarded for up to 5 friends a month." in shown
    assert "Get your invitation link" in shown
    assert "Get your invitation link" not in off
    assert "For each friend" not in off
