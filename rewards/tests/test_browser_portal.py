"""The member portal end to end in Debian's headless Chromium: sign up, claim, redeem, change language, close the account."""

import datetime as dt
import re
from decimal import Decimal
from urllib.parse import urlsplit

import pytest
from allauth.account.models import EmailAddress
from django.core import mail
from django.core.cache import cache
from django.utils import timezone
from playwright.sync_api import Page, expect

from conftest_e2e import STAFF_PASSWORD, BrowserProblems, email_verify
from members import services as member_services
from members.models import Member, User
from members.tests.factories import MemberFactory, UserFactory
from rewards import services
from rewards.models import LedgerEntry, PointsAccount, Redemption, Reward, TermsAcceptance, TermsText, TermsVersion, Voucher
from rewards.selectors import ledger_drift

pytestmark = pytest.mark.e2e

PASSWORD = "plum-blossom-teapot-42"  # the one a customer signs up with
MEMBER_PASSWORD = STAFF_PASSWORD  # UserFactory gives every login this one


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
    TermsText.objects.create(terms=version, language="zh-hant", body="點數不可兌換現金。")
    return version


@pytest.fixture
def member_login(terms):
    """A member with a login and the current terms accepted, as after joining online."""
    user = UserFactory(is_staff=False, email="mei@example.com", name="Mei Lin")
    member = MemberFactory(name="Mei Lin", email="mei@example.com", phone="+8613800007777", user=user)
    services.terms_accept(member=member, channel=Member.Channel.ONLINE, terms=terms)
    email_verify(user)
    return member


def path_is(path: str):
    return lambda url: urlsplit(url).path == path


def sign_in(page: Page, email: str, *, password: str = MEMBER_PASSWORD, next_url: str = "/me/", lands_on: str = "") -> None:
    """Sign in through allauth's form, as a member sent there from next_url, and wait to land on lands_on."""
    page.goto(f"/accounts/login/?next={next_url}")
    # By name: the labels are in whichever language the page is shown.
    page.locator("input[name=login]").fill(email)
    page.locator("input[name=password]").fill(password)
    page.locator("form[action='/accounts/login/']").get_by_role("button").click()
    page.wait_for_url(path_is(lands_on or next_url))


def balance(member: Member) -> PointsAccount:
    return PointsAccount.objects.get(member=member)


def test_a_customer_signs_up_confirms_the_email_accepts_the_terms_and_sees_the_home_page(
    page: Page, browser_problems: BrowserProblems, screenshot, terms
):
    # A customer opens the portal: it asks them to sign in, and offers signing up
    page.goto("/me/")
    page.wait_for_url(path_is("/accounts/login/"))
    expect(page.get_by_role("heading", name="Sign In", level=1)).to_be_visible()
    screenshot("login")
    page.get_by_role("main").get_by_role("link", name="sign up", exact=True).click()

    # They sign up with an e-mail address and a password
    page.wait_for_url(path_is("/accounts/signup/"))
    page.get_by_label("Email").fill("Mei@Example.com")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password (again)").fill(PASSWORD)
    screenshot("signup")
    page.get_by_role("button", name="Sign Up").click()

    # Nothing is theirs until the address is confirmed: an unverified address, no membership, one e-mail
    page.wait_for_url(path_is("/accounts/confirm-email/"))
    expect(page.get_by_role("heading", name="Verify Your Email Address")).to_be_visible()
    screenshot("verification-sent")
    user = User.objects.get()
    assert user.email == "mei@example.com"
    assert not EmailAddress.objects.get(user=user).verified
    assert not Member.objects.exists()
    [message] = mail.outbox
    assert message.to == ["mei@example.com"]
    link = re.search(r"https?://\S+/accounts/confirm-email/\S+/", message.body).group()  # type: ignore[union-attr]

    # The link in the e-mail confirms the address, and says so in the page's live region
    page.goto(link)
    expect(page.get_by_role("heading", name="Confirm Email Address")).to_be_visible()
    screenshot("confirm-email")
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("status")).to_contain_text("You have confirmed mei@example.com.")
    screenshot("confirmed")
    assert EmailAddress.objects.get(user=user).verified

    # They sign in and, having no membership yet, are asked to join, accepting the terms
    page.get_by_label("Email").fill("mei@example.com")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign In").click()
    page.wait_for_url(path_is("/me/join/"))
    join = page.get_by_role("button", name="Join")
    screenshot("join")
    join.click()
    expect(page.get_by_role("checkbox", name="I accept the programme's terms and conditions")).to_be_visible()
    assert not Member.objects.exists()  # not without the terms
    page.get_by_label("I accept the programme's terms and conditions").check()
    join.click()

    # The home page welcomes the new member with their points
    page.wait_for_url(path_is("/me/"))
    member = Member.objects.get()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Hello, {member.member_number}")
    expect(page.locator("dd.big")).to_have_text("0 pts")
    screenshot("home")
    assert (member.user, member.email, member.enrolment_channel) == (user, "mei@example.com", Member.Channel.ONLINE)
    acceptance = TermsAcceptance.objects.get(member=member)
    assert acceptance.terms == terms
    assert browser_problems.all() == []


def test_a_member_enrolled_at_the_counter_claims_the_membership_with_the_texted_code(
    page: Page, browser_problems: BrowserProblems, screenshot, terms, store, cashier, sms
):
    # Given a membership enrolled at the counter by phone, with points, and a new login of its owner's
    wang = member_services.member_enrol(
        channel=Member.Channel.COUNTER, phone="138 0000 1234", name="Wang Fang", store=store, by=cashier
    )
    services.purchase_record(store=store, receipt_number="R-1", amount=Decimal("88.00"), member=wang)
    user = UserFactory(is_staff=False, email="wang@example.com")
    email_verify(user)

    # The login is asked to join, and claims the counter's membership instead
    sign_in(page, user.email, lands_on="/me/join/")
    page.get_by_role("link", name="Claim your membership").click()
    page.wait_for_url(path_is("/me/claim/"))
    screenshot("claim")

    # A code is texted to the number given at the counter, typed as the customer says it
    page.get_by_label("Mobile phone").fill("138 0000 1234")
    page.get_by_role("button", name="Text me a code").click()
    expect(page.get_by_role("status")).to_contain_text("If a membership has this number, a code is on its way to it.")
    screenshot("code-sent")
    [(phone, text)] = sms.sent
    assert phone == "+8613800001234"
    code = re.search(r"\b(\d{6})\b", text).group(1)  # type: ignore[union-attr]

    # Typing it back with the terms accepted links the membership
    by_phone = page.locator("form").filter(has=page.locator("#claim-code"))
    by_phone.get_by_label("Code from the text message").fill(code)
    by_phone.get_by_label("I accept the programme's terms and conditions").check()
    by_phone.get_by_role("button", name="Claim my membership").click()

    # The home page is that membership's, with its points
    page.wait_for_url(path_is("/me/"))
    expect(page.get_by_role("status")).to_contain_text("Your membership is now linked to this login. Welcome!")
    expect(page.get_by_role("heading", level=1)).to_have_text("Hello, Wang Fang")
    expect(page.locator("dd.big")).to_have_text("88 pts")
    screenshot("home")
    wang.refresh_from_db()
    assert wang.user == user
    assert TermsAcceptance.objects.get(member=wang).terms == terms
    assert Member.objects.count() == 1  # linked, not a second membership
    assert browser_problems.all() == []


def test_a_member_redeems_a_reward_once_with_a_double_click_and_shows_the_voucher_qr(
    page: Page, browser_problems: BrowserProblems, screenshot, rules, member_login, store
):
    services.purchase_record(store=store, receipt_number="R-1", amount=Decimal("300"), member=member_login)
    latte = Reward.objects.create(
        programme=rules.programme,
        kind=Reward.Kind.FREE_ITEM,
        title="Free latte",
        points_cost=120,
        voucher_valid_days=30,
        stock=10,
    )
    Reward.objects.create(programme=rules.programme, kind=Reward.Kind.MERCHANDISE, title="Mug", points_cost=500)

    # The catalog says what the member can have and how far they are from the rest
    sign_in(page, member_login.email, next_url="/me/rewards/")
    expect(page.get_by_role("heading", name="You have 300 pts to spend")).to_be_visible()
    expect(page.locator(".rewards .locked")).to_contain_text("200 pts more needed.")
    screenshot("catalog")

    # Redeeming asks to confirm, with what is left afterwards
    page.get_by_role("link", name="Redeem Free latte").click()
    confirm = page.locator("#redeem-confirm")
    expect(confirm.get_by_role("heading")).to_have_text("Redeem Free latte for 120 pts?")
    expect(confirm).to_contain_text("Left after redeeming: 180 pts.")
    screenshot("confirm")
    assert not Redemption.objects.exists()

    # A double click on the confirmation redeems once, and opens the voucher with its QR code
    confirm.get_by_role("button", name="Confirm and redeem").dblclick()
    page.wait_for_url(re.compile(r"/me/vouchers/[^/]+/$"))
    voucher = Voucher.objects.get()
    assert urlsplit(page.url).path == f"/me/vouchers/{voucher.code}/"
    expect(page.get_by_role("status")).to_contain_text("Redeemed Free latte: your voucher is ready.")
    expect(page.locator("#voucher .voucher-code")).to_have_text(voucher.code)
    expect(page.locator("#voucher figure.qr svg")).to_be_visible()
    expect(page.locator("#voucher")).to_contain_text("Ready to use until")
    screenshot("voucher")

    redemption = Redemption.objects.get()
    assert (redemption.member, redemption.reward, redemption.points, voucher.reward) == (member_login, latte, 120, latte)
    assert LedgerEntry.objects.filter(account_id=member_login.pk, kind=LedgerEntry.Kind.SPEND).count() == 1
    assert balance(member_login).available == 180
    latte.refresh_from_db()
    assert latte.stock == 9
    assert ledger_drift() == []

    # Home shows the spent balance and the voucher
    page.get_by_role("link", name="My points").first.click()
    expect(page.locator("dd.big")).to_have_text("180 pts")
    expect(page.get_by_role("link", name="Free latte")).to_be_visible()
    screenshot("home")
    assert browser_problems.all() == []


def test_a_member_switches_to_traditional_chinese_and_the_profile_keeps_it(
    page: Page, browser_problems: BrowserProblems, screenshot, member_login
):
    sign_in(page, member_login.email)
    expect(page.locator("html")).to_have_attribute("lang", "en")

    # The header's switcher shows the same page in Traditional Chinese
    page.get_by_label("Language").select_option("zh-hant")
    page.get_by_role("button", name="Change").click()
    expect(page.locator("html")).to_have_attribute("lang", "zh-hant")
    page.wait_for_url(path_is("/me/"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Mei Lin，您好")
    expect(page.get_by_text("可用點數")).to_be_visible()
    screenshot("home-zh-hant")
    member_login.refresh_from_db()
    assert member_login.language == "en"  # the switcher only changes what this browser shows

    # The profile makes it the member's language
    page.get_by_role("navigation", name="我的會員").get_by_role("link", name="個人資料").click()
    page.wait_for_url(path_is("/me/profile/"))
    profile = page.locator("#profile-form")
    profile.get_by_label("語言").select_option("zh-hant")
    profile.get_by_role("button").click()
    expect(page.get_by_role("status")).to_contain_text("個人資料已儲存")
    screenshot("profile-saved")
    member_login.refresh_from_db()
    assert member_login.language == "zh-hant"

    # Signing out (allauth's pages in the same language) and in again keeps it
    page.get_by_role("link", name="登出").click()
    page.wait_for_url(path_is("/accounts/logout/"))
    expect(page.locator("html")).to_have_attribute("lang", "zh-hant")
    expect(page.get_by_role("heading", level=1)).to_have_text("登出")
    screenshot("sign-out")
    page.get_by_role("main").get_by_role("button", name="登出").click()
    page.wait_for_url(path_is("/"))
    sign_in(page, member_login.email)
    expect(page.locator("html")).to_have_attribute("lang", "zh-hant")
    expect(page.get_by_text("可用點數")).to_be_visible()
    screenshot("home-again")
    assert browser_problems.all() == []


def test_a_member_closes_the_account_with_the_password_and_the_books_are_kept(
    page: Page, browser_problems: BrowserProblems, screenshot, member_login, store
):
    services.purchase_record(store=store, receipt_number="R-1", amount=Decimal("300"), member=member_login)
    entries_before = set(LedgerEntry.objects.filter(account_id=member_login.pk).values_list("pk", flat=True))
    sign_in(page, member_login.email, next_url="/me/privacy/")
    screenshot("privacy")

    # A wrong password closes nothing
    close = page.locator("#close")
    close.get_by_label("Your password").fill("not-my-password")
    close.get_by_label("I understand that this cannot be undone").check()
    close.get_by_role("button", name="Close my account for good").click()
    expect(page.locator("#close")).to_contain_text("This is not your password.")
    screenshot("wrong-password")
    member_login.refresh_from_db()
    assert member_login.status == Member.Status.ACTIVE

    # The right one closes the account and signs the member out
    close = page.locator("#close")
    close.get_by_label("Your password").fill(MEMBER_PASSWORD)
    close.get_by_label("I understand that this cannot be undone").check()
    close.get_by_role("button", name="Close my account for good").click()
    page.wait_for_url(path_is("/"))
    expect(page.get_by_role("banner").get_by_role("link", name="Sign In")).to_be_visible()
    screenshot("closed")

    # The login no longer works
    page.goto("/accounts/login/")
    page.get_by_label("Email").fill("mei@example.com")
    page.get_by_label("Password", exact=True).fill(MEMBER_PASSWORD)
    page.get_by_role("button", name="Sign In").click()
    expect(page.get_by_role("alert")).to_contain_text("The email address and/or password you specified are not correct.")
    screenshot("login-refused")
    assert urlsplit(page.url).path == "/accounts/login/"

    # The member is anonymised, the login gone, the ledger kept with the forfeit explained
    member = Member.objects.get(pk=member_login.pk)
    assert member.status == Member.Status.CLOSED
    assert (member.name, member.phone, member.birthday) == ("", None, None)
    assert member.email == ""
    user = User.objects.get(pk=member.user_id)
    assert not user.is_active
    assert user.email.endswith("@closed.invalid")
    assert not user.has_usable_password()
    entries = LedgerEntry.objects.filter(account_id=member.pk)
    assert entries_before < set(entries.values_list("pk", flat=True))
    assert entries.get(kind=LedgerEntry.Kind.ADJUSTMENT).points == -300
    assert (balance(member).available, balance(member).pending) == (0, 0)
    assert ledger_drift() == []
    assert browser_problems.all() == []


@pytest.mark.parametrize("browser_locale", ["zh-TW"])
def test_the_account_pages_fit_a_360_pixel_phone_in_the_browsers_language(
    page: Page, browser_problems: BrowserProblems, screenshot, member_login
):
    """allauth's pages, signed out and in, lay out 360 CSS pixels wide, in the site's layout and the browser's language."""
    # Signed in, the member's own choice wins over the browser's: the same language here.
    Member.objects.filter(pk=member_login.pk).update(language="zh-hant")
    page.set_viewport_size({"width": 360, "height": 740})

    def fits(path: str, name: str) -> None:
        page.goto(path)
        expect(page.locator("html")).to_have_attribute("lang", "zh-hant")
        expect(page.get_by_role("status")).to_have_count(1)
        expect(page.locator("link[href$='css/site.css']")).to_have_count(1)
        assert page.evaluate("document.documentElement.scrollWidth") <= 360, path
        screenshot(name)

    fits("/accounts/login/", "login")
    expect(page.get_by_role("heading", level=1)).to_have_text("登入")
    fits("/accounts/signup/", "signup")
    fits("/accounts/password/reset/", "password-reset")
    page.get_by_role("main").get_by_role("textbox").fill(member_login.email)
    page.get_by_role("main").get_by_role("button").click()
    page.wait_for_url(path_is("/accounts/password/reset/done/"))
    assert [message.to for message in mail.outbox] == [[member_login.email]]
    fits("/accounts/password/reset/done/", "password-reset-sent")

    sign_in(page, member_login.email)
    for path, name in [
        ("/accounts/email/", "email"),
        ("/accounts/password/change/", "password-change"),
        ("/accounts/logout/", "logout"),
    ]:
        fits(path, name)
        # A signed-in member's way back to the portal
        expect(page.get_by_role("navigation", name="我的會員").get_by_role("link", name="我的點數")).to_be_visible()
    assert browser_problems.all() == []
