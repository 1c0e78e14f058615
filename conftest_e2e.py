"""Fixtures for browser tests: Debian's headless Chromium driven by Playwright against pytest-django's live server."""

import itertools
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from allauth.account.models import EmailAddress
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, sync_playwright

from members.models import User

# Installed by `make test` from Debian's packages; Playwright's own browser download is never used.
CHROMIUM = "/usr/bin/chromium"
# The password members.tests.factories.UserFactory gives every staff user.
STAFF_PASSWORD = "correct-horse-battery"  # noqa: S105 (a test fixture's password)
# Generous for a page served from this machine; a step that waits this long has failed.
TIMEOUT_MS = 10_000
# Screenshots of each step, kept after the run as the tests' artefacts (git-ignored).
ARTIFACTS = Path(__file__).resolve().parent / ".artifacts" / "e2e"


@dataclass
class BrowserProblems:
    """What went wrong in the page while a test ran: console errors, uncaught exceptions, CSP violations."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    csp_violations: list[str] = field(default_factory=list)

    def all(self) -> list[str]:
        """Return every problem, one line each."""
        return [*self.console_errors, *self.page_errors, *self.csp_violations]


# The browser reports each Content-Security-Policy violation to the test through an exposed function.
_REPORT_CSP_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.__reportCspViolation(`${event.effectiveDirective} blocked ${event.blockedURI || "inline"} on ${event.documentURI}`);
});
"""


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the browser tests after every other test, keeping the shuffled and pytest-django's order otherwise."""
    # Playwright's sync API marks its event loop as running in this thread from its start to the session's end, and
    # Django refuses the ORM in a thread with a running loop (SynchronousOnlyOperation) unless
    # DJANGO_ALLOW_ASYNC_UNSAFE is set. Last, no other test (nor a subprocess one starts: `check --deploy` fails on
    # that variable) runs with it set. They come after the non-database tests too: each flushes its own data.
    items.sort(key=lambda item: "browser" in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session")
def playwright_session() -> Iterator[Playwright]:
    # The project has no async code for Django's check to guard; see pytest_collection_modifyitems above.
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield playwright


@pytest.fixture(scope="session")
def browser(playwright_session: Playwright) -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        # `make test` installs it; only a machine where it cannot be installed gets here.
        pytest.skip(f"Browser tests skipped: Debian's chromium is not at {CHROMIUM} and could not be installed")
    # Chromium refuses to start its sandbox as root (CI and these machines run as root).
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    browser = playwright_session.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
    yield browser
    browser.close()


@pytest.fixture
def browser_locale() -> str:
    """Return the browser's language; override with @pytest.mark.parametrize("browser_locale", [...])."""
    return "en"


@pytest.fixture
def browser_problems() -> BrowserProblems:
    return BrowserProblems()


@pytest.fixture
def page(browser: Browser, live_server, browser_locale: str, browser_problems: BrowserProblems) -> Iterator[Page]:
    """Return a page in a fresh browser context (no cookies) whose relative URLs go to the live server."""
    context = browser.new_context(base_url=live_server.url, locale=browser_locale)
    context.set_default_timeout(TIMEOUT_MS)
    context.expose_function("__reportCspViolation", lambda violation: browser_problems.csp_violations.append(violation))
    context.add_init_script(_REPORT_CSP_VIOLATIONS)
    page = context.new_page()

    def on_console(message: ConsoleMessage) -> None:
        url = message.location.get("url", "")
        # Chromium asks every site for /favicon.ico by itself; the pages link no icon, so that 404 is not theirs.
        if message.type == "error" and not url.endswith("/favicon.ico"):
            browser_problems.console_errors.append(f"{message.text} ({url})")

    # On the context, so a second tab a test opens is watched too.
    context.on("console", on_console)
    context.on("weberror", lambda web_error: browser_problems.page_errors.append(str(web_error.error)))
    yield page
    context.close()


@pytest.fixture
def screenshot(page: Page, request: pytest.FixtureRequest) -> Callable[..., Path]:
    """Return a function saving a page as .artifacts/e2e/<test>/<nn>-<step>.png, numbered in the order taken."""
    folder = ARTIFACTS / re.sub(r"[^\w.-]+", "_", request.node.name)
    shutil.rmtree(folder, ignore_errors=True)  # a step renamed since the last run leaves no stale picture
    folder.mkdir(parents=True)
    steps = itertools.count(1)

    def take(step: str, *, of: Page | None = None) -> Path:
        path = folder / f"{next(steps):02d}-{step}.png"
        # Playwright hides the caret by styling each input, leaving style="" that htmx then copies into swapped
        # content, which the CSP reports: "initial" leaves the page as it is.
        (of or page).screenshot(path=path, full_page=True, caret="initial")
        return path

    return take


def email_verify(user: User) -> None:
    """Mark the user's e-mail address verified, as allauth requires before it lets anyone sign in."""
    EmailAddress.objects.update_or_create(user=user, email=user.email, defaults={"verified": True, "primary": True})


def staff_login(page: Page, user: User, *, password: str = STAFF_PASSWORD, next_url: str = "/") -> None:
    """Log the user in through allauth's login form at /accounts/login/ and wait to land on next_url."""
    email_verify(user)
    page.goto(f"/accounts/login/?next={next_url}")
    page.locator("input[name=login]").fill(user.email)
    page.locator("input[name=password]").fill(password)
    page.locator("form[action='/accounts/login/'] [type=submit]").click()
    page.wait_for_url(lambda url: urlsplit(url).path == next_url)


def focus_by_tab(page: Page, selector: str, *, most: int = 40) -> None:
    """Press Tab until the element matching selector has the focus, as a keyboard user reaches it."""
    for _ in range(most):
        page.keyboard.press("Tab")
        if page.locator(selector).evaluate("element => element === document.activeElement"):
            return
    pytest.fail(f"{selector} was not reached with {most} presses of Tab")
