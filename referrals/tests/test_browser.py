"""A referral end to end in Debian's headless Chromium: a member copies their link, a friend signs up through it,
buys at the counter, and both see the reward once the hold is over."""

import datetime as dt
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import time_machine
from django.core import mail
from django.core.cache import cache
from django.utils import timezone
from playwright.sync_api import Browser, Page, expect

from conftest_e2e import _REPORT_CSP_VIOLATIONS, STAFF_PASSWORD, TIMEOUT_MS, BrowserProblems, email_verify, staff_login
from members.models import Member, Notification
from members.tests.factories import MemberFactory, UserFactory
from referrals import services
from referrals.models import Referral, ReferralCode
from rewards import services as reward_services
from rewards.models import LedgerEntry, TermsText, TermsVersion
from rewards.selectors import account_for, ledger_drift

pytestmark = pytest.mark.e2e

PASSWORD = "plum-blossom-teapot-42"


@pytest.fixture(autouse=True)
def cache_cleared():
    """Start without the limits an earlier run left in the shared cache table (allauth sends one confirmation per 3 minutes)."""
    cache.clear()


@pytest.fixture
def terms(rules):
    version = TermsVersion.objects.create(
        programme=rules.programme, version="2026.1", published_at=timezone.now() - dt.timedelta(days=30)
    )
    TermsText.objects.create(terms=version, language="en", body="Points are worth nothing in cash.")
    return version


@pytest.fixture
def offer(offer):
    offer.hold_days = 7  # inside the two weeks a session lasts, so nobody is logged out by the jump in time
    offer.save()
    return offer


@pytest.fixture
def mei(terms, offer):
    user = UserFactory(is_staff=False, email="mei@example.com", name="Mei Lin")
    member = MemberFactory(name="Mei Lin", email="mei@example.com", phone="+8613700007777", user=user)
    reward_services.terms_accept(member=member, channel=Member.Channel.ONLINE, terms=terms)
    email_verify(user)
    return member


@pytest.fixture
def another_page(browser: Browser, live_server, browser_problems: BrowserProblems) -> Iterator:
    """Return a function opening a page in a fresh browser context (another person's phone), watched as `page` is."""
    contexts = []

    def open_page() -> Page:
        context = browser.new_context(base_url=live_server.url, locale="en")
        context.set_default_timeout(TIMEOUT_MS)
        context.expose_function("__reportCspViolation", lambda violation: browser_problems.csp_violations.append(violation))
        context.add_init_script(_REPORT_CSP_VIOLATIONS)
        context.on(
            "console",
            lambda message: (
                message.type == "error"
                and not message.location.get("url", "").endswith("/favicon.ico")
                and browser_problems.console_errors.append(f"{message.text} ({message.location.get('url', '')})")
            ),
        )
        context.on("weberror", lambda web_error: browser_problems.page_errors.append(str(web_error.error)))
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


def path_is(path: str):
    return lambda url: urlsplit(url).path == path


def sign_in(page: Page, email: str, password: str) -> None:
    page.locator("input[name=login]").fill(email)
    page.locator("input[name=password]").fill(password)
    page.locator("form[action^='/accounts/login/']").get_by_role("button").click()


def test_a_friend_joins_through_a_members_link_buys_at_the_counter_and_both_are_rewarded_after_the_hold(
    page: Page, another_page, browser_problems: BrowserProblems, screenshot, live_server, mei, cashier, store
):
    # Mei signs in and opens "Invite friends" from the portal's menu
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    page.goto("/accounts/login/?next=/me/")
    sign_in(page, mei.email, STAFF_PASSWORD)
    page.wait_for_url(path_is("/me/"))
    page.get_by_role("navigation", name="My membership").get_by_role("link", name="Invite friends").click()
    page.wait_for_url(path_is("/me/invite/"))
    expect(page.get_by_role("heading", name="What you both get")).to_be_visible()
    expect(page.locator(".offer").first).to_have_text(
        "For each friend who joins with your invitation, you get 200 pts and your friend gets 100 pts."
    )
    expect(page.locator("#invite-qr svg")).to_be_visible()
    screenshot("invite")

    # She copies her link: the page says so in its live region, and the clipboard holds it
    link = page.locator("#invite-link").inner_text().strip()
    code = ReferralCode.objects.get(member=mei).code
    assert link == f"{live_server.url}/join/{code}/"
    page.get_by_role("button", name="Copy link").click()
    expect(page.get_by_role("status")).to_have_text("Link copied")
    assert page.evaluate("navigator.clipboard.readText()") == link
    screenshot("link-copied")

    # Her friend opens it on their own phone: who invites them, and what they both get
    friend = another_page()
    friend.goto(link)
    expect(friend.get_by_role("heading", level=1)).to_have_text("Mei invited you to Morning Light")
    expect(friend.locator(".offer")).to_have_text("Join, and you get 100 pts; Mei gets 200 pts.")
    screenshot("friend-landing", of=friend)

    # They sign up, and confirm their address from the e-mail
    friend.get_by_role("link", name="Sign up and join").click()
    friend.wait_for_url(path_is("/accounts/signup/"))
    friend.get_by_label("Email").fill("wei@example.com")
    friend.get_by_label("Password", exact=True).fill(PASSWORD)
    friend.get_by_label("Password (again)").fill(PASSWORD)
    screenshot("friend-signup", of=friend)
    friend.get_by_role("button", name="Sign Up").click()
    friend.wait_for_url(path_is("/accounts/confirm-email/"))
    [message] = mail.outbox
    assert message.to == ["wei@example.com"]
    confirm = re.search(r"https?://\S+/accounts/confirm-email/\S+/", message.body).group()  # type: ignore[union-attr]
    friend.goto(confirm)
    friend.get_by_role("button", name="Confirm").click()
    expect(friend.get_by_role("status")).to_contain_text("You have confirmed wei@example.com.")
    screenshot("friend-confirmed", of=friend)

    # Signed in, they join: the invitation is there, with the code filled in
    sign_in(friend, "wei@example.com", PASSWORD)
    friend.get_by_role("banner").get_by_role("link", name="My points").click()
    friend.wait_for_url(path_is("/me/join/"))
    expect(friend.get_by_role("heading", name="Invited by Mei")).to_be_visible()
    expect(friend.get_by_label("Referral code")).to_have_value(code)
    screenshot("friend-join", of=friend)
    friend.get_by_label("I accept the programme's terms and conditions").check()
    friend.get_by_role("button", name="Join").click()
    friend.wait_for_url(path_is("/me/"))
    wei = Member.objects.get(user__email="wei@example.com")
    referral = Referral.objects.get()
    assert (referral.referrer, referral.friend, referral.status, referral.flags) == (mei, wei, "joined", [])
    screenshot("friend-home", of=friend)

    # At the counter, a cashier records the friend's first purchase
    counter = another_page()
    staff_login(counter, cashier, next_url="/staff/")
    counter.goto(f"/staff/members/{wei.member_number}/")
    counter.locator("#purchase-amount").fill("50.00")
    counter.locator("#purchase-receipt_number").fill("R-2001")
    counter.locator("#purchase-receipt_number").press("Enter")
    expect(counter.locator("#purchase-result")).to_contain_text("Receipt R-2001: 50 pts earned.")
    screenshot("counter-purchase", of=counter)
    referral.refresh_from_db()
    assert referral.status == "qualified"
    assert referral.purchase.recorded_by == cashier  # type: ignore[union-attr]
    assert (account_for(mei).pending, account_for(wei).pending) == (200, 100)

    # During the hold, Mei sees her friend qualified, with the rewards on their way
    page.reload()
    row = page.locator("#friends li").filter(has_text="w•••@example.com")
    expect(row).to_contain_text("Qualified")
    expect(page.locator("#referral-points")).to_have_text("200 pts")
    screenshot("invite-during-hold")

    # After the hold, the clock ends it and releases the points: both see them ready to spend
    with time_machine.travel(referral.hold_until + dt.timedelta(minutes=1)):  # type: ignore[operator]
        assert services.referrals_reward_due().referrals == 1
        reward_services.points_release_due()

        friend.goto("/me/")
        expect(friend.locator("dd.big")).to_have_text("150 pts")
        screenshot("friend-rewarded", of=friend)

        page.goto("/me/invite/")
        expect(page.locator("#friends li").filter(has_text="w•••@example.com")).to_contain_text("Rewarded")
        expect(page.locator("#referral-points")).to_have_text("200 pts")
        screenshot("invite-rewarded")
        page.get_by_role("navigation", name="My membership").get_by_role("link", name="My points").click()
        expect(page.locator("dd.big")).to_have_text("200 pts")
        screenshot("home-rewarded")

    referral.refresh_from_db()
    assert referral.status == "rewarded"
    assert (account_for(mei).available, account_for(wei).available) == (200, 150)
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.REFERRAL).count() == 2
    assert set(Notification.objects.filter(kind="referral_reward").values_list("member_id", flat=True)) == {mei.pk, wei.pk}
    assert (ReferralCode.objects.get(member=mei).visits, ReferralCode.objects.get(member=mei).shares) == (1, 1)
    assert ledger_drift() == []
    assert browser_problems.all() == []


@pytest.mark.parametrize("browser_locale", ["zh-CN"])
def test_the_invite_and_landing_pages_fit_a_360_pixel_phone(
    page: Page, browser_problems: BrowserProblems, screenshot, mei, store
):
    code = services.referral_code_for(mei).code
    for n in range(3):
        friend = MemberFactory(name=f"Friend{n} Zhang", referral_code=code)
        reward_services.purchase_record(store=store, receipt_number=f"R-{n}", amount="50", member=friend)
    page.set_viewport_size({"width": 360, "height": 740})

    page.goto(f"/join/{code}/")
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    screenshot("landing")

    page.goto("/accounts/login/?next=/me/invite/")
    sign_in(page, mei.email, STAFF_PASSWORD)
    page.wait_for_url(path_is("/me/invite/"))
    expect(page.locator("#friends li")).to_have_count(3)
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    screenshot("invite")
    assert browser_problems.all() == []
