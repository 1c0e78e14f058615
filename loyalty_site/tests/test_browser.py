"""Staff sign in through the real login form in Debian's headless Chromium, using the keyboard alone."""

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect

from conftest_e2e import STAFF_PASSWORD, BrowserProblems, email_verify, focus_by_tab

pytestmark = pytest.mark.e2e


def test_cashier_signs_in_with_the_keyboard_and_reaches_the_counter(
    page: Page, browser_problems: BrowserProblems, cashier, store
):
    email_verify(cashier)

    page.goto("/accounts/login/")
    focus_by_tab(page, "input[name=login]")
    page.keyboard.type(cashier.email)
    page.keyboard.press("Tab")
    expect(page.locator("input[name=password]")).to_be_focused()
    page.keyboard.type(STAFF_PASSWORD)
    page.keyboard.press("Enter")

    # Staff land on the counter; the cashier has one store, so it opens on it without asking.
    page.wait_for_url(lambda url: urlsplit(url).path == "/staff/")
    expect(page.get_by_role("heading", name="Find a member")).to_be_visible()
    search = page.locator("#member-search")
    expect(search).to_be_visible()
    expect(search).to_be_focused()
    expect(page.locator(".shift")).to_contain_text(store.name)
    assert browser_problems.all() == []
