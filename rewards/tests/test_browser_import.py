"""A programme admin imports history from the admin in Debian's headless Chromium: check, read the report, import."""

import pytest
from playwright.sync_api import Page, expect

from conftest_e2e import BrowserProblems, staff_login
from members.tests.factories import UserFactory
from rewards.models import HistoryImport, Purchase

pytestmark = pytest.mark.e2e


def test_a_programme_admin_checks_a_file_then_imports_it_from_its_report(
    page: Page, browser_problems: BrowserProblems, screenshot, live_server, rules, roles, store, member, tmp_path
):
    admin = UserFactory(role="Programme admin")
    staff_login(page, admin, next_url="/admin/")
    bad = tmp_path / "history.csv"
    bad.write_text(f"member_ref,occurred_at,amount\n{member.member_number},20260301,25.00\nnobody,20260301,10\n")

    page.goto("/admin/rewards/purchase/")
    page.get_by_role("link", name="Import history").click()
    page.get_by_label("Store").select_option(str(store.pk))
    page.get_by_label("CSV or XLSX file").set_input_files(bad)
    expect(page.get_by_label("Only check the file")).to_be_checked()
    page.get_by_role("button", name="Check or import").click()

    # The worker (run at once in tests) has checked it: the report names the bad line, and offers no import.
    expect(page.get_by_text("Checked only: nothing was written.")).to_be_visible()
    expect(page.get_by_text("line 3: No member matches “nobody”.")).to_be_visible()
    expect(page.get_by_role("button", name="Import this file now")).to_have_count(0)
    screenshot("bad-row-reported")

    good = tmp_path / "fixed.csv"
    good.write_text(f"member_ref,occurred_at,amount\n{member.member_number},20260301,25.00\n")
    page.goto("/admin/rewards/purchase/import/")
    page.get_by_label("Store").select_option(str(store.pk))
    page.get_by_label("CSV or XLSX file").set_input_files(good)
    page.get_by_role("button", name="Check or import").click()
    expect(page.get_by_text("1 rows read")).to_be_visible()
    screenshot("clean-dry-run")
    assert not Purchase.objects.exists()

    page.get_by_role("button", name="Import this file now").click()
    expect(page.get_by_text("The file was imported.")).to_be_visible()
    expect(page.get_by_text("1 purchases recorded")).to_be_visible()
    screenshot("imported")
    assert Purchase.objects.get().member == member
    assert HistoryImport.objects.filter(status=HistoryImport.Status.DONE).count() == 3

    page.get_by_role("link", name="History imports").first.click()
    expect(page.locator("#result_list tbody tr")).to_have_count(3)
    screenshot("earlier-imports")
    assert browser_problems.all() == []
