"""The staff counter end to end in Debian's headless Chromium: find by phone and record a sale, use a voucher, be refused."""

import re
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Frame, Page, expect

from conftest_e2e import STAFF_PASSWORD, BrowserProblems, email_verify, focus_by_tab, staff_login
from members.tests.factories import MemberFactory
from rewards import catalog, services
from rewards.models import LedgerEntry, Purchase, Reward, Voucher

pytestmark = pytest.mark.e2e


@contextmanager
def without_reload(page: Page) -> Iterator[None]:
    """Fail if the page is loaded anew inside the block: htmx must swap fragments into the same document."""
    loads: list[str] = []

    def on_navigated(frame: Frame) -> None:
        if frame == page.main_frame:
            loads.append(frame.url)

    # A reload loses the marker; the navigation events also catch one that comes back to the same URL.
    page.evaluate("window.__sameDocument = true")
    page.on("framenavigated", on_navigated)
    try:
        yield
    finally:
        page.remove_listener("framenavigated", on_navigated)
    assert loads == []
    assert page.evaluate("window.__sameDocument === true")


def path_is(path: str):
    return lambda url: urlsplit(url).path == path


def test_cashier_finds_a_member_by_phone_and_records_a_purchase_by_keyboard(
    page: Page, browser_problems: BrowserProblems, screenshot, rules, cashier, store
):
    wang = MemberFactory(phone="+8613800001234", name="Wang Fang")
    li = MemberFactory(phone="+8613900005678", name="Li Na")
    email_verify(cashier)

    # The cashier signs in through the real form, with the keyboard alone
    page.goto("/accounts/login/?next=/staff/")
    focus_by_tab(page, "input[name=login]")
    page.keyboard.type(cashier.email)
    page.keyboard.press("Tab")
    page.keyboard.type(STAFF_PASSWORD)
    screenshot("login")
    page.keyboard.press("Enter")

    # One store: the shift starts there without asking, on the search box
    page.wait_for_url(path_is("/staff/"))
    expect(page.locator(".shift")).to_contain_text(store.name)
    search = page.locator("#member-search")
    expect(search).to_be_focused()
    screenshot("counter")

    # Typing the phone as the customer says it shows the member as it is typed, without loading a page
    with without_reload(page):
        page.keyboard.type("138 0000 1234")
        results = page.locator("#results")
        expect(results.get_by_role("link")).to_have_count(1)
        expect(results).to_contain_text(wang.member_number)
        expect(results).not_to_contain_text(li.name)
    screenshot("found")

    # Enter opens the one member found
    page.keyboard.press("Enter")
    page.wait_for_url(path_is(f"/staff/members/{wang.member_number}/"))
    balance = page.locator("#balance")
    expect(page.get_by_role("heading", name="Wang Fang", level=1)).to_be_visible()
    expect(balance.locator("dd.big")).to_have_text("0 pts")
    screenshot("member")

    # The sale is typed into the panel's purchase form; Enter in the receipt number sends it
    focus_by_tab(page, "#purchase-amount")
    with without_reload(page):
        page.keyboard.type("128.50")
        page.keyboard.press("Tab")
        expect(page.locator("#purchase-receipt_number")).to_be_focused()
        page.keyboard.type("R-1001")
        page.keyboard.press("Enter")

        result = page.locator("#purchase-result")
        expect(result).to_contain_text("Receipt R-1001: 128 pts earned.")
        expect(result.locator(".explanation")).not_to_be_empty()
        # The balance region refreshed itself on the pointsChanged event
        expect(balance.locator("dd.big")).to_have_text("128 pts")
        expect(page.locator("#status")).to_contain_text("Receipt R-1001 recorded: 128 pts earned.")
        # Ready for the next sale: an empty form, the focus kept in it
        expect(page.locator("#purchase-receipt_number")).to_have_value("")
        assert page.evaluate("document.activeElement !== document.body")
    screenshot("purchase-recorded")

    purchase = Purchase.objects.get()
    assert (purchase.member, purchase.store, purchase.receipt_number) == (wang, store, "R-1001")
    assert purchase.gross == Decimal("128.50")
    assert purchase.points_earned == 128
    assert not li.purchases.exists()
    assert browser_problems.all() == []


def test_cashier_scans_a_voucher_uses_it_once_and_a_second_use_is_refused(
    page: Page, browser_problems: BrowserProblems, screenshot, rules, cashier, store
):
    member = MemberFactory(name="Wang Fang")
    services.purchase_record(store=store, receipt_number="R-1", amount=Decimal(100), member=member)
    latte = Reward.objects.create(
        programme=rules.programme,
        kind=Reward.Kind.FREE_ITEM,
        title="Free latte",
        description="One latte of any size.",
        points_cost=50,
        voucher_valid_days=30,
    )
    code = catalog.redemption_create(member=member, reward=latte).voucher.code

    staff_login(page, cashier, next_url="/staff/vouchers/")
    code_box = page.get_by_label("Voucher code")
    expect(code_box).to_be_focused()
    screenshot("vouchers")

    # A second till has the same voucher on screen, ready to be used
    other_till = page.context.new_page()
    other_till.goto(f"/staff/vouchers/?code={code}")
    expect(other_till.get_by_role("button", name="Mark as used: Free latte")).to_be_visible()

    # The scanner types the code and presses Enter: what the voucher is for, and that it is valid
    page.keyboard.type(code)
    page.keyboard.press("Enter")
    voucher = page.locator("#voucher")
    expect(voucher.get_by_role("heading", name="Free latte")).to_be_visible()
    expect(voucher).to_contain_text("One latte of any size.")
    expect(voucher).to_contain_text(member.member_number)
    expect(voucher).to_contain_text("Valid: ready to use")
    screenshot("scanned")

    with without_reload(page):
        voucher.get_by_role("button", name="Mark as used: Free latte").click()
        expect(page.locator("#status")).to_contain_text(f"Voucher {code} used: Free latte for")
        expect(voucher).to_contain_text(f"at {store.name}")
        expect(voucher.get_by_role("button")).to_have_count(0)
    screenshot("used")

    # Scanned again (the box has the focus back for it), or typed by hand: it says when and where it was used
    expect(code_box).to_be_focused()
    typed = code.lower().replace("-", " ")
    page.keyboard.type(typed)
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: parse_qs(urlsplit(url).query).get("code") == [typed])
    expect(page.locator("#status")).to_be_empty()
    expect(voucher).to_contain_text(code)
    expect(voucher).to_contain_text(f"at {store.name}")
    expect(voucher).not_to_contain_text("Valid: ready to use")
    expect(voucher.get_by_role("button")).to_have_count(0)
    screenshot("scanned-again")

    # The other till's button, pressed now, is refused
    other_till.get_by_role("button", name="Mark as used: Free latte").click()
    already_used = re.compile(rf"This voucher was already used on .+ at {re.escape(store.name)}\.")
    expect(other_till.locator("#voucher-check")).to_contain_text(already_used)
    screenshot("refused-at-other-till", of=other_till)

    used = Voucher.objects.get()
    assert (used.status, used.used_by, used.used_store) == (Voucher.Status.USED, cashier, store)
    assert browser_problems.all() == []


def test_cashier_cannot_adjust_points(page: Page, browser_problems: BrowserProblems, screenshot, live_server, rules, cashier):
    member = MemberFactory(name="Wang Fang")
    staff_login(page, cashier, next_url="/staff/")

    # Typed straight into the address bar, the adjustment page is refused
    adjust = f"/staff/members/{member.member_number}/adjust/"
    response = page.goto(adjust)
    assert response is not None
    assert response.status == 403
    expect(page.get_by_role("heading", name="403 Forbidden")).to_be_visible()
    expect(page.get_by_label("Points")).to_have_count(0)
    screenshot("refused")

    # The member panel offers the cashier's actions but no adjustment
    page.goto(f"/staff/members/{member.member_number}/")
    expect(page.get_by_role("link", name="Redeem a reward")).to_be_visible()
    expect(page.get_by_role("link", name="Adjust points")).to_have_count(0)
    expect(page.get_by_role("link", name="Adjustments")).to_have_count(0)
    screenshot("panel-without-adjustment")

    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.ADJUSTMENT).exists()
    # The browser reports the refused page itself as a failed load; nothing else went wrong.
    refused = f"Failed to load resource: the server responded with a status of 403 (Forbidden) ({live_server.url}{adjust})"
    assert browser_problems.all() == [refused]


@pytest.mark.parametrize("browser_locale", ["zh-CN"])
def test_the_counter_fits_a_360_pixel_phone_and_200_percent_zoom(
    page: Page, browser_problems: BrowserProblems, screenshot, rules, manager, store
):
    """A small phone, and a 720-pixel window at 200% zoom, both lay the pages out 360 CSS pixels wide."""
    member = MemberFactory(name="王芳", store=store)
    services.purchase_record(store=store, receipt_number="R-1", amount="42", member=member)
    page.set_viewport_size({"width": 360, "height": 740})
    staff_login(page, manager, next_url="/staff/")

    for path, name in [
        ("/staff/", "find"),
        (f"/staff/members/{member.member_number}/", "member"),
        (f"/staff/members/{member.member_number}/adjust/", "adjust"),
        ("/staff/summary/", "summary"),
    ]:
        page.goto(path)
        # Nothing wider than the screen: no sideways scrolling of the page itself.
        assert page.evaluate("document.documentElement.scrollWidth") <= 360, path
        screenshot(name)
    assert browser_problems.all() == []
