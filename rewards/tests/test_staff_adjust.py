"""Adjusting points at the counter: managers only, a reason the member reads, a daily limit per staff member, an audit list."""

import datetime as dt
import uuid
import zoneinfo

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from members.tests.counter import counter_login as counter
from members.tests.factories import MemberFactory, StoreFactory, UserFactory
from rewards import services
from rewards.models import LedgerEntry, ProgrammeRules
from rewards.selectors import account_for, ledger_drift
from rewards.tests.factories import settings_change
from rewards.tests.test_catalog import earn
from rewards.tests.test_concurrency import errors_by_type, run_at_once, unexpected
from rewards.tests.test_staff_rewards import HTMX

ADJUSTMENTS = reverse("staff:adjustments")
SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")


def adjust_url(member) -> str:
    return reverse("staff:member_adjust", args=[member.member_number])


def adjust(client, member, points, reason="Coffee was cold", *, token: str | None = None, htmx: bool = True):
    data = {"points": points, "reason": reason, "token": token or str(uuid.uuid4())}
    return client.post(adjust_url(member), data, headers=HTMX if htmx else {})


def adjustments() -> list[int]:
    return list(LedgerEntry.objects.filter(kind=LedgerEntry.Kind.ADJUSTMENT).values_list("points", flat=True))


def limit_set(rules: ProgrammeRules, limit: int) -> None:
    settings_change(rules, adjust_daily_limit=limit)


@pytest.fixture
def wang(rules, store):
    member = MemberFactory(name="Wang Fang")
    earn(store, member, "60")
    return member


@pytest.fixture
def at_counter(client, manager, store):
    return counter(client, manager, store)


@pytest.fixture
def admin_user(roles, store):
    return UserFactory(role="Programme admin", stores=[store])


# --- the page -----------------------------------------------------------------------------


@pytest.mark.parametrize("htmx", [True, False])
def test_a_manager_sees_the_form_with_the_balance_and_what_is_left_today(at_counter, wang, htmx):
    response = at_counter.get(adjust_url(wang), headers=HTMX if htmx else {})

    assert response.status_code == 200
    html = response.content.decode()
    assert "Available now: 60 pts." in html
    assert "You may adjust 1,000 pts more today" in html
    assert 'name="reason"' in html
    assert 'name="token"' in html
    assert ("<html" in html) is not htmx
    assert "HX-Request" in response["Vary"]


def test_an_adjustment_with_htmx_shows_what_the_member_reads_and_refreshes_the_balance(at_counter, manager, wang):
    token = str(uuid.uuid4())

    response = adjust(at_counter, wang, "15", token=token)

    assert response.status_code == 200
    assert response["HX-Trigger"] == "pointsChanged"
    entry = LedgerEntry.objects.get(kind=LedgerEntry.Kind.ADJUSTMENT)
    assert (entry.points, entry.reason, entry.actor) == (15, "Coffee was cold", manager)
    assert entry.idempotency_key == f"counter-adjust:{token}"
    assert account_for(wang).available == 75
    html = response.content.decode()
    assert "Adjusted by our staff: Coffee was cold" in html
    assert "Available now: 75 pts." in html
    assert "You may adjust 985 pts more today" in html
    assert f'value="{token}"' not in html  # the next adjustment gets a new token
    assert "Adjusted Wang Fang" in html  # the message, announced in the live region
    assert ledger_drift() == []


def test_without_javascript_an_adjustment_goes_back_to_the_member_panel_with_a_message(at_counter, wang):
    response = adjust(at_counter, wang, "-20", "Entered twice", htmx=False)

    assert response.status_code == 302
    assert response["Location"] == reverse("staff:member", args=[wang.member_number])
    panel = at_counter.get(response["Location"]).content.decode()
    assert "Adjusted Wang Fang" in panel
    assert "-20 pts: Entered twice" in panel
    assert account_for(wang).available == 40


def test_a_double_click_or_a_resent_form_adjusts_once(at_counter, wang):
    token = str(uuid.uuid4())
    adjust(at_counter, wang, "15", token=token)
    adjust(at_counter, wang, "15", token=token)
    adjust(at_counter, wang, "15", token=token, htmx=False)

    assert adjustments() == [15]
    assert account_for(wang).available == 75


@pytest.mark.parametrize(
    ("points", "reason", "message"),
    [
        ("0", "Typo", "Enter a whole number of points other than zero."),
        ("12", "   ", "This field is required."),
        ("1.5", "Half", "Enter a whole number."),
        ("99999999999", "Huge", "Ensure this value is less than or equal to"),
        ("-61", "Too much", "Only 60 points are available to take away."),
    ],
)
def test_bad_input_is_shown_on_its_field_and_nothing_is_written(at_counter, wang, points, reason, message):
    response = adjust(at_counter, wang, points, reason)

    assert response.status_code == 200
    assert "HX-Trigger" not in response
    html = response.content.decode()
    assert message in html
    assert 'aria-invalid="true"' in html
    assert adjustments() == []
    assert account_for(wang).available == 60


# --- who may adjust -----------------------------------------------------------------------


@pytest.mark.parametrize("htmx", [True, False])
def test_a_cashier_cannot_adjust_points_even_by_crafting_the_request(client, cashier, store, wang, htmx):
    client = counter(client, cashier, store)

    page = client.get(adjust_url(wang), headers=HTMX if htmx else {})
    crafted = adjust(client, wang, "500", "friend", htmx=htmx)
    audit = client.get(ADJUSTMENTS, headers=HTMX if htmx else {})

    assert (page.status_code, crafted.status_code, audit.status_code) == (403, 403, 403)
    assert adjustments() == []
    assert account_for(wang).available == 60
    panel = client.get(reverse("staff:member", args=[wang.member_number])).content.decode()
    assert adjust_url(wang) not in panel
    assert ADJUSTMENTS not in panel


def test_the_adjust_page_needs_a_staff_login(client, wang):
    assert client.get(adjust_url(wang))["Location"].startswith(reverse("account_login"))
    client.force_login(UserFactory(is_staff=False))
    assert adjust(client, wang, "5").status_code == 403
    assert adjustments() == []


# --- the daily limit ----------------------------------------------------------------------


def test_the_daily_limit_counts_points_added_and_taken_away_and_says_what_is_left(at_counter, rules, store, manager, wang):
    # Given a limit of 100 points a day and 60 already added
    limit_set(rules, 100)
    li = MemberFactory(name="Li Na")
    earn(store, li, "80")
    adjust(at_counter, wang, "60")

    # When the same manager takes away 50 from another member
    refused = adjust(at_counter, li, "-50")

    # Then it is refused on the points field, saying what is left, and nothing is written
    assert refused.status_code == 200
    html = refused.content.decode()
    assert "This is more than you may adjust today: 100 points a day, 40 left." in html
    assert 'aria-invalid="true"' in html
    assert adjustments() == [60]
    assert account_for(li).available == 80
    # And what is left still goes through, after which nothing is left
    adjust(at_counter, li, "-40")
    assert sorted(adjustments()) == [-40, 60]
    assert services.adjust_allowance_left(by=manager) == 0


def test_the_limit_is_per_staff_member_and_per_day_of_the_programme_time_zone(rules, store, manager, roles):
    limit_set(rules, 100)
    wang = MemberFactory()
    other_manager = UserFactory(role="Store manager", stores=[store])
    # 23:30 in Shanghai, then 00:30 the next day there: the same day in UTC, another in the programme's calendar.
    late = dt.datetime(2026, 3, 1, 23, 30, tzinfo=SHANGHAI)
    with time_machine.travel(late, tick=False):
        services.points_adjust(member=wang, points=100, reason="Goodwill", by=manager)
        services.points_adjust(member=wang, points=100, reason="Goodwill", by=other_manager)
        with pytest.raises(services.AdjustLimitExceeded) as error:
            services.points_adjust(member=wang, points=1, reason="One more", by=manager)
    with time_machine.travel(late + dt.timedelta(hours=1), tick=False):
        services.points_adjust(member=wang, points=100, reason="Next day", by=manager)

    assert (error.value.field, error.value.facts) == ("points", {"limit": 100, "left": 0})
    assert sorted(adjustments()) == [100, 100, 100]


def test_the_limit_binds_every_path_to_points_adjust_not_only_the_counter(rules, wang, manager):
    limit_set(rules, 10)
    with pytest.raises(services.AdjustLimitExceeded):
        services.points_adjust(member=wang, points=-11, reason="Too much", by=manager, idempotency_key="admin-adjust:1")
    assert adjustments() == []


def test_a_retry_of_an_adjustment_made_is_not_counted_again(rules, wang, manager):
    limit_set(rules, 10)
    first = services.points_adjust(member=wang, points=10, reason="Goodwill", by=manager, idempotency_key="k")
    again = services.points_adjust(member=wang, points=10, reason="Goodwill", by=manager, idempotency_key="k")
    assert again == first
    assert adjustments() == [10]


def test_no_limit_when_the_rules_say_zero(rules, wang, manager):
    limit_set(rules, 0)
    services.points_adjust(member=wang, points=5000, reason="Lost card", by=manager)
    assert services.adjust_allowance_left(by=manager) is None


def test_programme_admins_have_no_limit(client, rules, store, wang, admin_user):
    limit_set(rules, 10)
    client = counter(client, admin_user, store)
    page = client.get(adjust_url(wang)).content.decode()

    response = adjust(client, wang, "500", "Migration fix")

    assert "more today" not in page
    assert response["HX-Trigger"] == "pointsChanged"
    assert adjustments() == [500]


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_one_staff_members_racing_adjustments_of_different_members_never_pass_the_limit(rules, manager):
    # Given a limit of 100 a day and 8 members, each adjusted by +30 by the same manager at the same moment
    limit_set(rules, 100)
    members = [MemberFactory() for _ in range(8)]

    def goodwill(i: int) -> LedgerEntry:
        return services.points_adjust(member=members[i], points=30, reason="Goodwill", by=manager, idempotency_key=f"race-{i}")

    outcomes = run_at_once(len(members), goodwill)

    # Then exactly three pass; the others are refused, whoever wins the race
    assert unexpected(outcomes, services.AdjustLimitExceeded) == []
    assert errors_by_type(outcomes) == {services.AdjustLimitExceeded: 5}
    assert adjustments() == [30, 30, 30]
    assert ledger_drift() == []


# --- the audit list -----------------------------------------------------------------------


@pytest.fixture
def three_stores_of_adjustments(rules, store, manager, admin_user):
    """Adjustments today by this store's manager, another store's manager and a programme admin, and one yesterday."""
    elsewhere = UserFactory(role="Store manager", stores=[StoreFactory(code="hz01", name="West Lake")])
    wang, li = MemberFactory(name="Wang Fang"), MemberFactory(name="Li Na")
    yesterday = timezone.now() - dt.timedelta(days=1)
    with time_machine.travel(yesterday, tick=False):
        services.points_adjust(member=wang, points=7, reason="Yesterday's fix", by=manager)
    services.points_adjust(member=wang, points=15, reason="Coffee was cold", by=manager)
    services.points_adjust(member=li, points=25, reason="Wrong store", by=elsewhere)
    return {"yesterday": yesterday.astimezone(rules.programme.tz).date()}


@pytest.mark.parametrize("htmx", [True, False])
def test_a_manager_sees_the_adjustments_of_their_stores_staff_today(at_counter, three_stores_of_adjustments, htmx):
    response = at_counter.get(ADJUSTMENTS, headers=HTMX if htmx else {})

    assert response.status_code == 200
    html = response.content.decode()
    assert "Coffee was cold" in html
    assert "Wang Fang" in html
    assert "+15 pts" in html
    assert "Wrong store" not in html  # another store's manager
    assert "Yesterday's fix" not in html
    assert ("<html" in html) is not htmx


def test_the_audit_list_filters_by_day(at_counter, three_stores_of_adjustments):
    day = three_stores_of_adjustments["yesterday"]

    html = at_counter.get(ADJUSTMENTS, {"day": day.isoformat()}, headers=HTMX).content.decode()

    assert "Yesterday&#x27;s fix" in html
    assert "Coffee was cold" not in html


@pytest.mark.parametrize(
    ("day", "message"), [("2026-13-40", "Enter a valid date."), ("9999-12-31", "Choose today or an earlier day.")]
)
def test_a_bad_day_is_shown_on_its_field_with_todays_list(at_counter, three_stores_of_adjustments, day, message):
    response = at_counter.get(ADJUSTMENTS, {"day": day})
    assert response.status_code == 200
    html = response.content.decode()
    assert message in html
    assert "Coffee was cold" in html


def test_the_first_day_of_the_calendar_is_harmless(at_counter, three_stores_of_adjustments):
    response = at_counter.get(ADJUSTMENTS, {"day": "0001-01-01"})
    assert response.status_code == 200
    assert "No adjustments on this day." in response.content.decode()


def test_a_programme_admin_sees_every_stores_adjustments(client, store, admin_user, three_stores_of_adjustments):
    html = counter(client, admin_user, store).get(ADJUSTMENTS).content.decode()
    assert "Coffee was cold" in html
    assert "Wrong store" in html


def test_the_audit_list_reads_in_a_fixed_number_of_queries(at_counter, rules, manager):
    members = [MemberFactory() for _ in range(5)]
    services.points_adjust(member=members[0], points=5, reason="One", by=manager)
    at_counter.get(ADJUSTMENTS)  # warm the session and the programme

    with CaptureQueriesContext(connection) as one:
        at_counter.get(ADJUSTMENTS)
    for member in members[1:]:
        services.points_adjust(member=member, points=5, reason="More", by=manager)
    with CaptureQueriesContext(connection) as five:
        page = at_counter.get(ADJUSTMENTS)

    assert page.content.decode().count("<tr>") == 6  # the header and five rows
    assert len(five) == len(one)
