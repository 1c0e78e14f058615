"""Every page of the member portal in Debian's headless Chromium, on a 360-pixel phone and at 200% zoom, in English and Korean.

Nothing scrolls sideways, every form control has a name a screen reader speaks, the keyboard's focus
is visible, and the browser reports no problem (console errors, Content-Security-Policy violations).
"""

import re

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import Page, expect

from conftest_e2e import BrowserProblems
from loyalty_site.tests.test_portal_languages import Walk, member_with_everything
from members.tests.factories import UserFactory

pytestmark = pytest.mark.e2e

SOMETHING = re.compile(r"\S")
# A small phone, and a 1280 x 720 window at 200% zoom: both lay the page out in CSS pixels this size.
VIEWPORTS = {"phone": {"width": 360, "height": 740}, "zoom-200": {"width": 640, "height": 360}}

# The outline Chromium draws round the focused element, and whether the element is on the screen.
FOCUS_RING = """
() => {
  const element = document.activeElement;
  const style = getComputedStyle(element);
  const box = element.getBoundingClientRect();
  return {
    tag: element.tagName.toLowerCase(),
    text: element.textContent.trim(),
    outline: style.outlineStyle === "none" ? 0 : parseFloat(style.outlineWidth),
    onScreen: box.width > 0 && box.height > 0 && box.right > 0 && box.bottom > 0
      && box.left < innerWidth && box.top < innerHeight,
  };
}
"""


def member_pages(walk: Walk) -> list[tuple[str, str]]:
    """Return (name, path) for every portal page a member opens, and a few states that add sections to them."""
    rewards = reverse("portal:rewards")
    return [
        ("home", reverse("portal:home")),
        ("card", reverse("portal:card")),
        ("history", reverse("portal:history")),
        ("history-earned", f"{reverse('portal:history')}?kind=earn"),
        ("rewards", rewards),
        ("redeem-confirm", f"{rewards}?reward={walk.rewards['latte'].pk}"),
        ("redeem-locked", f"{rewards}?reward={walk.rewards['lounge'].pk}"),
        ("voucher", reverse("portal:voucher", args=[walk.voucher.code])),
        ("how", reverse("portal:how")),
        ("profile", reverse("portal:profile")),
        ("inbox", reverse("portal:inbox")),
        ("message", reverse("portal:inbox_open", args=[walk.notification.pk])),
        ("privacy", reverse("portal:privacy")),
        ("terms", reverse("portal:terms")),
        ("invite", reverse("portal:invite")),
    ]


def session_of(page: Page, live_server, client: Client | None, language: str) -> None:
    """Give the browser the test client's session (none for a visitor) and the language the site's switcher sets."""
    page.context.clear_cookies()
    cookies = {settings.LANGUAGE_COOKIE_NAME: language}
    if client is not None:
        cookies[settings.SESSION_COOKIE_NAME] = client.cookies[settings.SESSION_COOKIE_NAME].value
    page.context.add_cookies([{"name": name, "value": value, "url": live_server.url} for name, value in cookies.items()])


def check_page(page: Page, path: str, *, width: int) -> None:
    """Open the page and check its layout, its controls' names and the first focus ring."""
    response = page.goto(path)
    assert response is not None
    assert response.status == 200, path
    assert page.url.endswith(path), f"{path} went to {page.url}"
    # Nothing wider than the screen: the page itself never scrolls sideways.
    widths = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
    assert widths[0] <= widths[1] <= width, (path, widths)
    # Every control has a name a screen reader speaks, as Chromium computes it (label, aria-label, text, title).
    controls = page.locator("input:not([type=hidden]), select, textarea, button")
    for index in range(controls.count()):
        expect(controls.nth(index)).to_have_accessible_name(SOMETHING)
    # The first link a keyboard reaches shows where the focus is, on the screen.
    page.keyboard.press("Tab")
    ring = page.evaluate(FOCUS_RING)
    assert ring["tag"] == "a", (path, ring)
    assert ring["outline"] >= 2, (path, ring)
    assert ring["onScreen"], (path, ring)


def codes_scannable(page: Page) -> None:
    """Check the QR code is drawn square and large, and a barcode (the card's) tall and as wide as the phone allows."""
    qr = page.locator(".qr svg.segno").bounding_box()
    assert qr is not None
    assert qr["width"] == qr["height"] >= 200, qr
    if page.locator(".barcode svg").count():
        bars = page.locator(".barcode svg").bounding_box()
        assert bars is not None
        assert bars["height"] >= 64, bars
        assert bars["width"] >= 250, bars


@pytest.mark.parametrize("browser_locale", ["en-GB", "ko-KR"])
@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_the_portal_fits_a_phone_and_200_percent_zoom(
    page: Page, browser_problems: BrowserProblems, screenshot, live_server, roles, browser_locale, viewport
):
    language = browser_locale.split("-")[0]
    width = VIEWPORTS[viewport]["width"]
    walk = member_with_everything(Client(), language, now=timezone.now())
    page.set_viewport_size(VIEWPORTS[viewport])

    session_of(page, live_server, walk.client, language)
    for name, path in member_pages(walk):
        check_page(page, path, width=width)
        if name in ("card", "voucher"):
            codes_scannable(page)
        screenshot(name)
    expect(page.locator("html")).to_have_attribute("lang", language)

    # A login without a membership yet: joining, or claiming one made at the counter.
    newcomer = Client()
    newcomer.force_login(UserFactory(is_staff=False, email="new@example.com"))
    session_of(page, live_server, newcomer, language)
    for name in ["join", "claim"]:
        check_page(page, reverse(f"portal:{name}"), width=width)
        screenshot(name)

    # Visitors: logging in and signing up.
    session_of(page, live_server, None, language)
    for name, path in [
        ("login", reverse("account_login")),
        ("signup", reverse("account_signup")),
        ("invitation", reverse("referral_join", args=[walk.referral_code])),
    ]:
        check_page(page, path, width=width)
        screenshot(name)

    assert browser_problems.all() == []
