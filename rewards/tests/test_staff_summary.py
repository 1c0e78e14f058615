"""The shift summary: what each staff member did at the shift's store on a day, for that store only."""

import datetime as dt
import itertools
import zoneinfo
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from members import services as member_services
from members.access import SHIFT_STORE
from members.models import Member
from members.tests.counter import counter_login as at_counter
from members.tests.factories import StoreFactory, UserFactory
from rewards import catalog, services
from rewards.models import Reward
from rewards.selectors import ShiftFigures, shift_summary

pytestmark = pytest.mark.django_db

SUMMARY = reverse("staff:summary")
HTMX = {"HX-Request": "true"}
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
PHONES = itertools.count(1)


@pytest.fixture
def latte(rules):
    return Reward.objects.create(programme=rules.programme, kind=Reward.Kind.FREE_ITEM, title="Free latte", points_cost=50)


@pytest.fixture
def team(roles, store):
    """Two cashiers and a store manager of the shift's store."""
    return {
        "ann": UserFactory(name="Ann", role="Cashier", stores=[store]),
        "bo": UserFactory(name="Bo", role="Cashier", stores=[store]),
        "cy": UserFactory(name="Cy", role="Store manager", stores=[store]),
    }


def enrol(store, by, **fields):
    return member_services.member_enrol(channel=Member.Channel.COUNTER, phone=fields.pop("phone"), store=store, by=by, **fields)


def a_bit_of_everything(store, staff, reward, tag: str):
    """One of each of the six kinds at a store, all by one staff member (the adjustment only if allowed)."""
    member = enrol(store, staff, phone=f"+86139{next(PHONES):08d}")
    sale = services.purchase_record(store=store, receipt_number=f"{tag}-1", amount="100", member=member, by=staff).purchase
    redemption = catalog.redemption_create(member=member, reward=reward, by=staff, store=store)
    catalog.voucher_use(code=redemption.voucher.code, by=staff, store=store)
    services.purchase_return(purchase=sale, return_number=f"{tag}-X", amount="10", by=staff)
    if staff.has_perm("rewards.adjust_points"):
        services.points_adjust(member=member, points=7, reason="Kind gesture", by=staff)
    return member


def test_figures_per_staff_member_across_all_six_kinds_with_a_total_row(rules, store, team, latte):
    ann, bo, cy = team["ann"], team["bo"], team["cy"]
    # Given Ann enrols a member, records two sales (one without a card) and redeems a reward for him
    wang = enrol(store, ann, phone="+8613800000001", name="Wang")
    sale = services.purchase_record(store=store, receipt_number="R-1", amount="100", member=wang, by=ann).purchase
    services.purchase_record(store=store, receipt_number="R-2", amount="50", by=ann)
    redemption = catalog.redemption_create(member=wang, reward=latte, by=ann, store=store, via="counter")
    # and Bo enrols another member, takes the voucher and refunds part of Ann's sale
    li = enrol(store, bo, phone="+8613800000002", name="Li")
    catalog.voucher_use(code=redemption.voucher.code, by=bo, store=store, via="counter")
    services.purchase_return(purchase=sale, return_number="X-1", amount="20", by=bo)
    # and Cy, the manager, records a sale and adjusts both ways
    services.purchase_record(store=store, receipt_number="R-3", amount="30", member=li, by=cy)
    services.points_adjust(member=wang, points=15, reason="Coffee was cold", by=cy)
    services.points_adjust(member=li, points=-5, reason="Entered twice", by=cy)
    # and the till and the website, with no staff member, add a sale and a member
    services.purchase_record(store=store, receipt_number="R-4", amount="10", member=li, via="Till 2")
    member_services.member_enrol(channel=Member.Channel.ONLINE, email="web@example.com", store=store)

    summary = shift_summary(store=store, day=timezone.localdate(timezone=zoneinfo.ZoneInfo(store.timezone)))

    assert summary.staff == [
        ShiftFigures(
            staff_id=ann.pk,
            name="Ann",
            purchases=2,
            purchase_amount=Decimal("150.00"),
            points_awarded=100,  # the sale without a card awards nothing until claimed
            enrolments=1,
            redemptions=1,
            redemption_points=50,
        ),
        ShiftFigures(
            staff_id=bo.pk,
            name="Bo",
            enrolments=1,
            vouchers_used=1,
            returns=1,
            refunded=Decimal("20.00"),
            points_clawed_back=20,
        ),
        ShiftFigures(
            staff_id=cy.pk,
            name="Cy",
            purchases=1,
            purchase_amount=Decimal("30.00"),
            points_awarded=30,
            adjustments=2,
            points_added=15,
            points_removed=5,
        ),
        ShiftFigures(staff_id=None, name="", purchases=1, purchase_amount=Decimal("10.00"), points_awarded=10, enrolments=1),
    ]
    assert summary.total == ShiftFigures(
        staff_id=None,
        name="",
        purchases=4,
        purchase_amount=Decimal("190.00"),
        points_awarded=140,
        enrolments=3,
        redemptions=1,
        redemption_points=50,
        vouchers_used=1,
        returns=1,
        refunded=Decimal("20.00"),
        points_clawed_back=20,
        adjustments=2,
        points_added=15,
        points_removed=5,
    )


def test_the_page_shows_the_table_with_money_in_the_programme_currency(client, rules, store, team, latte):
    a_bit_of_everything(store, team["cy"], latte, "A")
    page = at_counter(client, team["ann"], store).get(SUMMARY)

    html = page.content.decode()
    assert page.status_code == 200
    assert "<html" in html
    assert '<caption id="summary-caption">' in html
    assert 'role="region" tabindex="0" aria-labelledby="summary-caption"' in html
    assert '<th scope="row">Cy</th>' in html
    assert '<th scope="row">Total</th>' in html
    totals = html.split("<tfoot>")[1].split("</tfoot>")[0]
    assert totals.count("<td>") == 13
    assert "¥100.00" in totals
    assert '<th scope="colgroup" colspan="3">Purchases</th>' in html
    assert "¥100.00" in html  # the sale
    assert "¥10.00" in html  # the refund
    assert f'href="{SUMMARY}" aria-current="page"' in html  # the counter's nav
    assert "HX-Request" in page["Vary"]


def test_a_cancelled_redemption_is_not_counted(rules, store, team, latte):
    member = a_bit_of_everything(store, team["ann"], latte, "A")
    services.points_adjust(member=member, points=100, reason="Welcome", by=team["cy"])
    cancelled = catalog.redemption_create(member=member, reward=latte, by=team["ann"], store=store)
    catalog.redemption_cancel(redemption=cancelled, by=team["cy"])

    summary = shift_summary(store=store, day=timezone.localdate(timezone=zoneinfo.ZoneInfo(store.timezone)))

    assert (summary.total.redemptions, summary.total.redemption_points) == (1, 50)


def test_other_stores_and_other_days_are_left_out(rules, store, team, latte):
    ann, cy = team["ann"], team["cy"]
    elsewhere = StoreFactory(code="hz01", name="West Lake")
    ann.stores.add(elsewhere)  # Ann works in both stores
    their_manager = UserFactory(name="Dee", role="Store manager", stores=[elsewhere])
    today = timezone.localdate(timezone=zoneinfo.ZoneInfo(store.timezone))
    # Given yesterday's work at this store, with a sale that is returned today
    with time_machine.travel(timezone.now() - dt.timedelta(days=1), tick=False):
        a_bit_of_everything(store, cy, latte, "Y")
        old_sale = services.purchase_record(store=store, receipt_number="Y-2", amount="40", member=None, by=cy).purchase
    # and today's work at the other store, by Ann and by its own manager
    other_member = a_bit_of_everything(elsewhere, ann, latte, "E")
    services.points_adjust(member=other_member, points=9, reason="Sorry", by=their_manager)
    # and one thing today at this store
    services.purchase_return(purchase=old_sale, return_number="Y-2-X", amount="40", by=ann)

    summary = shift_summary(store=store, day=today)

    assert summary.staff == [ShiftFigures(staff_id=ann.pk, name="Ann", returns=1, refunded=Decimal("40.00"))]
    yesterday = shift_summary(store=store, day=today - dt.timedelta(days=1))
    assert yesterday.staff == [
        ShiftFigures(
            staff_id=cy.pk,
            name="Cy",
            purchases=2,
            purchase_amount=Decimal("140.00"),
            points_awarded=100,
            enrolments=1,
            redemptions=1,
            redemption_points=50,
            vouchers_used=1,
            returns=1,
            refunded=Decimal("10.00"),
            points_clawed_back=10,
            adjustments=1,
            points_added=7,
        )
    ]
    there = shift_summary(store=elsewhere, day=today)
    assert [(p.name, p.purchases, p.enrolments, p.vouchers_used, p.returns, p.adjustments) for p in there.staff] == [
        ("Ann", 1, 1, 1, 1, 0),
        ("Dee", 0, 0, 0, 0, 1),
    ]


def test_days_begin_and_end_at_midnight_in_the_store_time_zone_even_when_the_clocks_change(rules, roles, latte):
    # New York moves its clocks forward on 9 March 2025: that day has 23 hours.
    store = StoreFactory(code="ny01", name="Broadway", timezone="America/New_York")
    manager = UserFactory(name="Eve", role="Store manager", stores=[store])
    moments = {
        "last-of-8th": dt.datetime(2025, 3, 8, 23, 59, 30, tzinfo=NEW_YORK),
        "first-of-9th": dt.datetime(2025, 3, 9, 0, 0, 30, tzinfo=NEW_YORK),
        "last-of-9th": dt.datetime(2025, 3, 9, 23, 59, 30, tzinfo=NEW_YORK),
        "first-of-10th": dt.datetime(2025, 3, 10, 0, 0, 30, tzinfo=NEW_YORK),
    }
    for tag, moment in moments.items():
        with time_machine.travel(moment, tick=False):
            a_bit_of_everything(store, manager, latte, tag)

    def counts(day: int) -> tuple[int, ...]:
        total = shift_summary(store=store, day=dt.date(2025, 3, day)).total
        return total.purchases, total.enrolments, total.redemptions, total.vouchers_used, total.returns, total.adjustments

    assert counts(8) == (1,) * 6
    assert counts(9) == (2,) * 6
    assert counts(10) == (1,) * 6


def test_the_default_day_is_today_in_the_store_time_zone(client, rules, roles, latte):
    # 03:00 UTC on 10 March is still the evening of the 9th in Los Angeles, and the 10th in the programme's Shanghai.
    store = StoreFactory(code="la01", name="Venice", timezone="America/Los_Angeles")
    cashier = UserFactory(name="Flo", role="Cashier", stores=[store])
    with time_machine.travel(dt.datetime(2025, 3, 10, 3, tzinfo=dt.UTC), tick=False):
        services.purchase_record(store=store, receipt_number="LA-1", amount="12", by=cashier)
        page = at_counter(client, cashier, store).get(SUMMARY)
        empty = client.get(SUMMARY, {"day": ""})

    assert page.context_data["summary"].day == dt.date(2025, 3, 9)
    assert page.context_data["summary"].total.purchases == 1
    assert page.context_data["form"]["day"].value() == "2025-03-09"
    assert 'max="2025-03-09"' in page.content.decode()
    assert empty.context_data["summary"].day == dt.date(2025, 3, 9)


def test_the_htmx_request_gets_the_summary_fragment_and_history_restore_the_page(client, rules, store, team, latte):
    a_bit_of_everything(store, team["ann"], latte, "A")
    counter = at_counter(client, team["ann"], store)
    yesterday = timezone.localdate(timezone=zoneinfo.ZoneInfo(store.timezone)) - dt.timedelta(days=1)

    fragment = counter.get(SUMMARY, headers=HTMX)
    other_day = counter.get(SUMMARY, {"day": yesterday.isoformat()}, headers=HTMX)
    restored = counter.get(SUMMARY, headers={**HTMX, "HX-History-Restore-Request": "true"})

    html = fragment.content.decode()
    assert fragment.status_code == 200
    assert html.lstrip().startswith('<div id="summary"')
    assert "<html" not in html
    assert "<table" in html
    assert "HX-Request" in fragment["Vary"]
    assert other_day.context_data["summary"].total == ShiftFigures(staff_id=None, name="")
    assert "Nothing was recorded" in other_day.content.decode()
    assert "<html" in restored.content.decode()


@pytest.mark.parametrize("role", ["Cashier", "Store manager", "Marketer", "Programme admin"])
def test_every_staff_role_sees_their_shift_store_summary(client, rules, roles, store, role):
    user = UserFactory(role=role, stores=[store])
    for headers in ({}, HTMX):
        response = at_counter(client, user, store).get(SUMMARY, headers=headers)
        assert response.status_code == 200
        assert response.context_data["summary"].store == store


def test_a_staff_account_without_a_role_and_others_are_refused(client, rules, store):
    assert client.get(SUMMARY)["Location"].startswith(reverse("account_login"))
    for headers in ({}, HTMX):
        assert at_counter(client, UserFactory(stores=[store]), store).get(SUMMARY, headers=headers).status_code == 403
        assert at_counter(client, UserFactory(is_staff=False, stores=[store]), store).get(SUMMARY).status_code == 403


def test_without_a_shift_the_summary_asks_for_the_store_first(client, rules, roles, store):
    client.force_login(UserFactory(role="Store manager", stores=[store, StoreFactory(code="hz01")]))
    response = client.get(SUMMARY)
    assert response["Location"] == f"{reverse('staff:shift')}?next=%2Fstaff%2Fsummary%2F"


def test_a_crafted_store_parameter_is_ignored(client, rules, store, team, latte):
    elsewhere = StoreFactory(code="hz01", name="West Lake")
    outsider = UserFactory(name="Gus", role="Store manager", stores=[elsewhere])
    a_bit_of_everything(elsewhere, outsider, latte, "E")
    counter = at_counter(client, team["ann"], store)

    for query in ({"store": elsewhere.pk}, {"store": elsewhere.code, "store_id": elsewhere.pk}):
        for headers in ({}, HTMX):
            response = counter.get(SUMMARY, query, headers=headers)
            assert response.context_data["summary"].store == store
            assert response.context_data["summary"].staff == []
            assert "Gus" not in response.content.decode()


def test_a_cashier_cannot_start_a_shift_at_a_store_they_do_not_work_in(client, rules, store, team):
    elsewhere = StoreFactory(code="hz01", name="West Lake")
    counter = at_counter(client, team["ann"], store)

    refused = counter.post(reverse("staff:shift"), {"store": elsewhere.pk, "next": SUMMARY})

    assert refused.status_code == 403
    assert counter.session[SHIFT_STORE] == store.pk
    assert counter.get(SUMMARY).context_data["summary"].store == store
    # A shift store that is no longer theirs (removed from it) is not honoured either.
    session = counter.session
    session[SHIFT_STORE] = elsewhere.pk
    session.save()
    assert counter.get(SUMMARY)["Location"].startswith(reverse("staff:shift"))


@pytest.mark.parametrize("role", ["Store manager", "Programme admin"])
def test_managers_and_admins_choose_among_their_stores(client, rules, roles, store, latte, role):
    elsewhere = StoreFactory(code="hz01", name="West Lake")
    not_theirs = StoreFactory(code="bj01", name="Sanlitun")
    user = UserFactory(name="Hal", role=role, stores=[store, elsewhere])
    a_bit_of_everything(elsewhere, user, latte, "E")
    counter = at_counter(client, user, store)
    here = counter.get(SUMMARY).context_data["summary"]
    # An adjustment names no store: it shows in every store of its author, the rest only where it was done.
    assert (here.total.purchases, here.total.vouchers_used, here.total.adjustments) == (0, 0, 1)

    switched = counter.post(reverse("staff:shift"), {"store": elsewhere.pk, "next": SUMMARY})
    there = counter.get(SUMMARY)

    assert switched["Location"] == SUMMARY
    assert there.context_data["summary"].store == elsewhere
    assert there.context_data["summary"].total.purchases == 1
    assert counter.post(reverse("staff:shift"), {"store": not_theirs.pk, "next": SUMMARY}).status_code == 403
    assert counter.session[SHIFT_STORE] == elsewhere.pk


@pytest.mark.parametrize("typed", ["2025-02-30", "yesterday", "2025-3-1x", "31/12/2024", "99999-01-01", "tomorrow", "9999-12-31"])
def test_a_bad_day_is_a_form_error_not_a_500(client, rules, store, team, typed):
    tomorrow = timezone.localdate(timezone=zoneinfo.ZoneInfo(store.timezone)) + dt.timedelta(days=1)
    typed = tomorrow.isoformat() if typed == "tomorrow" else typed
    counter = at_counter(client, team["ann"], store)
    for headers in ({}, HTMX):
        response = counter.get(SUMMARY, {"day": typed}, headers=headers)
        html = response.content.decode()
        assert response.status_code == 200
        assert response.context_data["summary"] is None
        assert "day" in response.context_data["form"].errors
        assert 'aria-invalid="true"' in html
        assert 'id="id_day_error"' in html
        assert "<table" not in html


def test_the_first_day_of_the_calendar_is_harmless(client, rules, store, team):
    response = at_counter(client, team["ann"], store).get(SUMMARY, {"day": "0001-01-01"})
    assert response.status_code == 200
    assert response.context_data["summary"].staff == []
    assert 'rel="prev"' not in response.content.decode()


def test_the_summary_takes_six_queries_however_many_staff_and_rows(client, rules, store, team, latte):
    today = timezone.localdate(timezone=zoneinfo.ZoneInfo(store.timezone))
    a_bit_of_everything(store, team["cy"], latte, "A")
    with CaptureQueriesContext(connection) as one_person:
        shift_summary(store=store, day=today)
    a_bit_of_everything(store, team["ann"], latte, "B")
    a_bit_of_everything(store, team["bo"], latte, "C")
    for n in range(5):
        services.purchase_record(store=store, receipt_number=f"D-{n}", amount="5", by=team["bo"])
    with CaptureQueriesContext(connection) as three_people:
        summary = shift_summary(store=store, day=today)

    assert len(summary.staff) == 3
    assert len(one_person) == len(three_people) == 6
    counter = at_counter(client, team["ann"], store)
    counter.get(SUMMARY)  # warm the session
    with CaptureQueriesContext(connection) as page:
        counter.get(SUMMARY)
    # The session, the user, the shift store, the permission check and the six sums; the programme's
    # currency comes from the snapshot of the programme's settings each process keeps (rewards.config).
    assert len(page) == 5 + 6


@pytest.mark.django_db
def test_a_return_counts_for_the_store_it_came_back_to_not_the_store_of_the_sale(rules, store, team, latte):
    elsewhere = StoreFactory(code="hz01", name="West Lake")
    ann = team["ann"]
    sale = services.purchase_record(store=elsewhere, receipt_number="W-1", amount="50").purchase
    today = timezone.localdate(timezone=zoneinfo.ZoneInfo(store.timezone))

    services.purchase_return(purchase=sale, return_number="W-1-X", amount="20", by=ann, store=store)

    assert shift_summary(store=store, day=today).total.returns == 1
    assert shift_summary(store=elsewhere, day=today).total.returns == 0
