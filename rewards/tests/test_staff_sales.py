"""Sales at the counter: recording a purchase, a return against one, claiming a sale made without the card."""

import datetime as dt
import threading
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from members.tests.counter import counter_login as counter_client
from members.tests.factories import MemberFactory, StoreFactory, UserFactory
from rewards import services
from rewards.models import LedgerEntry, Purchase, Return
from rewards.selectors import account_for, ledger_drift

HTMX = {"HX-Request": "true"}


@pytest.fixture
def marketer_at_counter(client, roles, store):
    return counter_client(client, UserFactory(role="Marketer", stores=[store]), store)


@pytest.fixture
def wang(rules):
    return MemberFactory(name="Wang Fang")


@pytest.fixture
def elsewhere(db):
    return StoreFactory(code="hz01", name="Hangzhou")


def url(name, member, *args):
    return reverse(f"staff:{name}", args=[member.member_number, *args])


def sale(**overrides):
    data = {"amount": "42.00", "receipt_number": "R-1", "discount": ""}
    data.update(overrides)
    return data


def ledger_unchanged():
    return not LedgerEntry.objects.exists() and not Purchase.objects.exists()


# --- recording a purchase -----------------------------------------------------------------


@pytest.mark.django_db
def test_the_member_panel_offers_the_counter_actions_and_the_purchase_form(at_counter, wang):
    html = at_counter.get(url("member", wang)).content.decode()

    assert 'aria-labelledby="actions-title"' in html
    for name in ("purchase", "claim", "purchases"):
        assert f'href="{url(name, wang)}"' in html
    assert f'hx-post="{url("purchase", wang)}"' in html
    assert 'id="purchase-amount"' in html


@pytest.mark.django_db
def test_a_marketer_sees_no_purchase_form_on_the_panel(marketer_at_counter, wang):
    html = marketer_at_counter.get(url("member", wang)).content.decode()

    assert url("purchase", wang) not in html
    assert url("claim", wang) not in html


@pytest.mark.django_db
def test_a_purchase_from_the_panel_shows_the_points_with_their_explanation_and_refreshes_the_balance(
    at_counter, cashier, store, wang
):
    response = at_counter.post(url("purchase", wang), sale(), headers=HTMX)

    assert response.status_code == 200
    assert response["HX-Trigger"] == "pointsChanged"
    assert "HX-Request" in response["Vary"]
    html = response.content.decode()
    assert "<html" not in html
    assert "Receipt R-1: CN¥42.00 × 1 pt per CN¥1 = 42 pts" in html
    assert "Balance now: 42 pts available, 0 pts pending." in html
    assert 'id="status" hx-swap-oob="innerHTML"' in html
    assert "Receipt R-1 recorded: 42 pts earned." in html
    assert 'name="amount"' in html
    assert 'value="42.00"' not in html
    purchase = Purchase.objects.get()
    assert (purchase.store, purchase.member, purchase.recorded_by, purchase.gross) == (store, wang, cashier, Decimal("42.00"))
    assert account_for(wang).available == 42


@pytest.mark.django_db
def test_a_resubmitted_purchase_shows_the_original_and_never_counts_twice(at_counter, wang):
    at_counter.post(url("purchase", wang), sale(), headers=HTMX)

    again = at_counter.post(url("purchase", wang), sale(amount="42"), headers=HTMX)

    html = again.content.decode()
    assert again.status_code == 200
    assert "Receipt R-1 was already recorded (42 pts): nothing was added." in html
    assert "Receipt R-1: CN¥42.00 × 1 pt per CN¥1 = 42 pts" in html
    assert Purchase.objects.count() == 1
    assert LedgerEntry.objects.count() == 1
    assert account_for(wang).available == 42


@pytest.mark.django_db
def test_the_same_receipt_with_other_details_is_refused_on_the_receipt_field(at_counter, wang):
    at_counter.post(url("purchase", wang), sale())

    response = at_counter.post(url("purchase", wang), sale(amount="50.00"), headers=HTMX)

    assert response.status_code == 200
    assert "HX-Trigger" not in response
    assert "already recorded at this store with different details" in " ".join(response.context["form"].errors["receipt_number"])
    assert Purchase.objects.get().gross == Decimal("42.00")
    assert account_for(wang).available == 42


@pytest.mark.django_db
def test_without_javascript_a_purchase_goes_back_to_the_panel_with_a_message(at_counter, wang):
    response = at_counter.post(url("purchase", wang), sale())

    assert response.status_code == 302
    assert response["Location"] == url("member", wang)
    assert "Receipt R-1 recorded: 42 pts earned." in at_counter.get(response["Location"]).content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("headers", [{}, HTMX])
def test_the_purchase_page_shows_the_form(at_counter, wang, headers):
    response = at_counter.get(url("purchase", wang), headers=headers)

    html = response.content.decode()
    assert response.status_code == 200
    assert ("<html" in html) is not bool(headers)
    assert 'id="purchase"' in html
    assert 'id="purchase-line_5_amount"' in html


@pytest.mark.django_db
def test_lines_with_categories_and_a_discount_earn_as_the_rules_say(at_counter, rules, store, wang):
    rules.excluded_categories = ["gift-cards"]
    rules.save()
    tea = [services.LineInput(amount=10, category="tea")]
    services.purchase_record(store=store, receipt_number="OLD", amount="10", lines=tea)
    form = at_counter.get(url("purchase", wang)).context["form"]
    assert [value for value, _label in form.fields["line_1_category"].choices] == ["", "gift-cards", "tea"]

    data = sale(amount="100.00", discount="10.00", line_1_category="tea", line_1_amount="40.00", line_1_quantity="2")
    data.update(line_2_category="gift-cards", line_2_amount="60.00", line_2_quantity="1")
    response = at_counter.post(url("purchase", wang), data, headers=HTMX)

    assert response.status_code == 200
    purchase = Purchase.objects.get(receipt_number="R-1")
    assert [(ln.category, ln.quantity, ln.amount) for ln in purchase.lines.all()] == [
        ("tea", 2, Decimal("40.00")),
        ("gift-cards", 1, Decimal("60.00")),
    ]
    assert purchase.net == Decimal("90.00")
    assert "in categories that earn no points" in response.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        (sale(amount="100", line_1_amount="40", line_1_quantity="1"), "__all__", "The lines add up to"),
        (sale(line_3_category="tea", line_3_quantity="1"), "line_3_amount", "Enter the amount of this line"),
        (sale(amount="0"), "amount", "Ensure this value is greater than or equal to 0.01."),
        (sale(discount="50"), "discount", "The discount cannot be more than the amount."),
        (sale(receipt_number=""), "receipt_number", "This field is required."),
    ],
)
def test_a_wrong_sale_is_refused_on_its_field_and_nothing_is_written(at_counter, store, wang, data, field, message):
    tea = [services.LineInput(amount=10, category="tea")]
    services.purchase_record(store=store, receipt_number="OLD", amount="10", lines=tea)
    before = Purchase.objects.count()

    response = at_counter.post(url("purchase", wang), data, headers=HTMX)

    assert response.status_code == 200
    assert "HX-Trigger" not in response
    assert any(message in error for error in response.context["form"].errors[field])
    assert Purchase.objects.count() == before
    assert not LedgerEntry.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("headers", [{}, HTMX])
def test_a_marketer_cannot_record_a_purchase_even_by_crafting_the_form(marketer_at_counter, wang, headers):
    assert marketer_at_counter.get(url("purchase", wang), headers=headers).status_code == 403
    assert marketer_at_counter.post(url("purchase", wang), sale(), headers=headers).status_code == 403
    assert ledger_unchanged()


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["Store manager", "Programme admin"])
def test_managers_and_admins_record_purchases_too(client, roles, store, wang, role):
    counter_client(client, UserFactory(role=role, stores=[store]), store)
    assert client.post(url("purchase", wang), sale(), headers=HTMX)["HX-Trigger"] == "pointsChanged"


@pytest.mark.django_db
def test_an_unknown_member_is_not_found(at_counter, rules):
    assert at_counter.post(reverse("staff:purchase", args=["0000000000"]), sale()).status_code == 404
    assert ledger_unchanged()


@pytest.mark.django_db
def test_the_purchase_fragment_takes_a_fixed_number_of_queries(at_counter, store, wang):
    for n in range(5):
        services.purchase_record(store=store, receipt_number=f"OLD-{n}", amount="10", member=wang)
    at_counter.post(url("purchase", wang), sale(receipt_number="WARM"), headers=HTMX)

    with CaptureQueriesContext(connection) as one_line:
        at_counter.post(url("purchase", wang), sale(receipt_number="A", line_1_amount="42.00"), headers=HTMX)
    lines = {f"line_{n}_amount": "10.00" for n in range(1, 5)} | {"line_5_amount": "2.00"}
    with CaptureQueriesContext(connection) as five_lines:
        at_counter.post(url("purchase", wang), sale(receipt_number="B", **lines), headers=HTMX)

    assert Purchase.objects.filter(member=wang).count() == 8
    assert len(five_lines) == len(one_line)


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_double_click_records_the_purchase_once(roles, rules):
    store = StoreFactory(code="sh01")
    cashier = UserFactory(role="Cashier", stores=[store])
    wang = MemberFactory()
    clients = [counter_client(Client(), cashier, store) for _ in range(4)]
    barrier, statuses = threading.Barrier(len(clients)), []

    def click(client):
        try:
            barrier.wait(timeout=30)
            statuses.append(client.post(url("purchase", wang), sale(), headers=HTMX).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=click, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert statuses == [200] * len(clients)
    assert Purchase.objects.count() == 1
    assert account_for(wang).available == 42
    assert ledger_drift() == []


# --- returns ------------------------------------------------------------------------------


def bought(store, member, receipt="R-1", amount="100", **sale_fields):
    return services.purchase_record(store=store, receipt_number=receipt, amount=amount, member=member, **sale_fields).purchase


@pytest.mark.django_db
@pytest.mark.parametrize("headers", [{}, HTMX])
def test_the_purchase_list_shows_the_members_purchases_at_every_store(at_counter, store, elsewhere, wang, headers):
    here, there = bought(store, wang, "R-1"), bought(elsewhere, wang, "R-2")
    bought(store, MemberFactory(), "NOT-WANG")
    services.purchase_return(purchase=there, return_number="X", amount="100")

    response = at_counter.get(url("purchases", wang), headers=headers)

    html = response.content.decode()
    assert response.status_code == 200
    assert ("<html" in html) is not bool(headers)
    assert "R-1" in html
    assert "Hangzhou" in html
    assert "NOT-WANG" not in html
    assert url("return", wang, here.pk) in html
    assert url("return", wang, there.pk) not in html  # all of it came back already


@pytest.mark.django_db
def test_the_purchase_list_takes_a_fixed_number_of_queries(at_counter, store, elsewhere, wang):
    bought(store, wang, "R-0")
    at_counter.get(url("purchases", wang))
    with CaptureQueriesContext(connection) as one:
        at_counter.get(url("purchases", wang))
    for n in range(1, 6):
        services.purchase_return(purchase=bought(elsewhere, wang, f"R-{n}"), return_number="X", amount="10")
    with CaptureQueriesContext(connection) as six:
        at_counter.get(url("purchases", wang))
    assert len(six) == len(one)


@pytest.mark.django_db
def test_a_return_by_amount_takes_back_its_share_of_points(at_counter, cashier, store, wang):
    purchase = bought(store, wang)
    page = at_counter.get(url("return", wang, purchase.pk))
    token = page.context["form"]["return_number"].value()
    assert len(token) == 32

    response = at_counter.post(url("return", wang, purchase.pk), {"return_number": token, "amount": "25.00"}, headers=HTMX)

    html = response.content.decode()
    assert response.status_code == 200
    assert response["HX-Trigger"] == "pointsChanged"
    assert f"Return {token}: CN¥25.00 refunded, 25 pts taken back." in html
    assert "so 25 pts of the 100 pts earned are taken back" in html
    assert "Balance now: 75 pts available" in html
    record = Return.objects.get()
    assert (record.amount, record.points_clawed_back, record.recorded_by) == (Decimal("25.00"), 25, cashier)


@pytest.mark.django_db
def test_a_resubmitted_return_is_recorded_once(at_counter, store, wang):
    purchase = bought(store, wang)
    data = {"return_number": "T-1", "amount": "25.00"}
    at_counter.post(url("return", wang, purchase.pk), data)

    again = at_counter.post(url("return", wang, purchase.pk), data, headers=HTMX)

    assert "Return T-1 was already recorded: nothing changed." in again.content.decode()
    assert Return.objects.count() == 1
    assert account_for(wang).available == 75


@pytest.mark.django_db
def test_a_return_by_lines_and_points_already_spent_are_owed(at_counter, store, wang):
    lines = [services.LineInput(amount=Decimal(60), quantity=2, category="tea"), services.LineInput(amount=Decimal(40))]
    purchase = bought(store, wang, lines=lines)
    services.points_spend(member=wang, points=90, reason="Free latte")
    form = at_counter.get(url("return", wang, purchase.pk)).context["form"]
    assert [field.name for field in form.line_fields] == ["line_1", "line_2"]

    response = at_counter.post(url("return", wang, purchase.pk), {"return_number": "T-1", "line_1": "2"}, headers=HTMX)

    html = response.content.decode()
    assert "Return T-1: CN¥60.00 refunded, 60 pts taken back." in html
    assert "50 pts had already been spent: the member owes them" in html
    assert "Owed: 50 pts." in html
    account = account_for(wang)
    assert (account.available, account.owed) == (0, 50)
    assert ledger_drift() == []


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"return_number": "T-1"}, "amount", "Give either an amount or the lines returned."),
        ({"return_number": "T-1", "amount": "150"}, "amount", "is left to return"),
        ({"return_number": "T-1", "amount": "10", "line_1": "1"}, "amount", "Give either an amount or the lines returned."),
        ({"return_number": "T-1", "line_1": "3"}, "line_1", "Ensure this value is less than or equal to 2."),
        ({"return_number": "", "amount": "10"}, "return_number", "This field is required."),
    ],
)
def test_a_wrong_return_is_refused_on_its_field_and_changes_nothing(at_counter, store, wang, data, field, message):
    purchase = bought(store, wang, lines=[services.LineInput(amount=Decimal(100), quantity=2)])

    response = at_counter.post(url("return", wang, purchase.pk), data, headers=HTMX)

    assert response.status_code == 200
    assert "HX-Trigger" not in response
    assert any(message in error for error in response.context["form"].errors[field])
    assert not Return.objects.exists()
    assert account_for(wang).available == 100


@pytest.mark.django_db
def test_a_line_returned_in_full_cannot_be_returned_again_but_its_form_resubmitted_is_a_no_op(at_counter, store, wang):
    purchase = bought(store, wang, lines=[services.LineInput(amount=Decimal(100), quantity=2)])
    whole = {"return_number": "T-1", "line_1": "2"}
    at_counter.post(url("return", wang, purchase.pk), whole)
    assert at_counter.get(url("return", wang, purchase.pk)).context["form"]["line_1"].help_text == "0 of 2 can still be returned."

    again = at_counter.post(url("return", wang, purchase.pk), whole, headers=HTMX)
    more = at_counter.post(url("return", wang, purchase.pk), {"return_number": "T-2", "line_1": "1"}, headers=HTMX)

    assert "Return T-1 was already recorded: nothing changed." in again.content.decode()
    assert more.context["form"].errors["line_1"] == ["Only 0 of this line can still be returned."]
    assert Return.objects.count() == 1
    assert account_for(wang).available == 0


@pytest.mark.django_db
def test_another_members_purchase_is_not_found_through_this_member(at_counter, store, wang):
    theirs = bought(store, MemberFactory(), "THEIRS")

    assert at_counter.get(url("return", wang, theirs.pk)).status_code == 404
    assert at_counter.post(url("return", wang, theirs.pk), {"return_number": "T-1", "amount": "10"}).status_code == 404
    assert not Return.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("headers", [{}, HTMX])
def test_a_marketer_sees_purchases_but_cannot_return_even_by_crafting_the_form(marketer_at_counter, store, wang, headers):
    purchase = bought(store, wang)

    assert url("return", wang, purchase.pk) not in marketer_at_counter.get(url("purchases", wang)).content.decode()
    assert marketer_at_counter.get(url("return", wang, purchase.pk), headers=headers).status_code == 403
    response = marketer_at_counter.post(url("return", wang, purchase.pk), {"return_number": "T", "amount": "10"}, headers=headers)
    assert response.status_code == 403
    assert not Return.objects.exists()


@pytest.mark.django_db
def test_staff_without_a_role_see_no_purchases(client, roles, store, wang):
    counter_client(client, UserFactory(stores=[store]), store)
    assert client.get(url("purchases", wang)).status_code == 403


@pytest.mark.django_db
def test_without_javascript_a_return_goes_back_to_the_panel_with_a_message(at_counter, store, wang):
    purchase = bought(store, wang)

    response = at_counter.post(url("return", wang, purchase.pk), {"return_number": "T-1", "amount": "100"})

    assert response["Location"] == url("member", wang)
    assert "Return T-1 of receipt R-1 recorded: 100 pts taken back." in at_counter.get(response["Location"]).content.decode()


# --- claiming a sale made without the card --------------------------------------------------


@pytest.mark.django_db
def test_a_sale_without_a_card_at_this_store_is_claimed_for_the_member(at_counter, cashier, store, wang):
    services.purchase_record(store=store, receipt_number="ANON-1", amount="30")

    response = at_counter.post(url("claim", wang), {"receipt_number": "ANON-1"}, headers=HTMX)

    html = response.content.decode()
    assert response.status_code == 200
    assert response["HX-Trigger"] == "pointsChanged"
    assert "Receipt ANON-1 claimed: 30 pts earned." in html
    assert "Receipt ANON-1: CN¥30.00 × 1 pt per CN¥1 = 30 pts" in html
    purchase = Purchase.objects.get()
    assert purchase.member == wang
    assert purchase.claimed_at is not None
    assert LedgerEntry.objects.get().actor == cashier

    again = at_counter.post(url("claim", wang), {"receipt_number": "ANON-1"}, headers=HTMX)
    assert "already claimed for this member" in again.content.decode()
    assert account_for(wang).available == 30


@pytest.mark.django_db
@pytest.mark.parametrize("headers", [{}, HTMX])
def test_the_claim_page_works_with_and_without_javascript(at_counter, store, wang, headers):
    services.purchase_record(store=store, receipt_number="ANON-1", amount="30")
    page = at_counter.get(url("claim", wang), headers=headers)
    assert ("<html" in page.content.decode()) is not bool(headers)

    response = at_counter.post(url("claim", wang), {"receipt_number": "ANON-1"}, headers=headers)

    assert response.status_code == (200 if headers else 302)
    assert account_for(wang).available == 30


def claim_error(client, member, receipt):
    response = client.post(url("claim", member), {"receipt_number": receipt}, headers=HTMX)
    assert response.status_code == 200
    assert "HX-Trigger" not in response
    return " ".join(response.context["form"].errors["receipt_number"])


@pytest.mark.django_db
def test_a_claim_that_the_rules_refuse_says_why_and_changes_nothing(at_counter, store, elsewhere, wang):
    services.purchase_record(store=elsewhere, receipt_number="THERE", amount="30")
    services.purchase_record(store=store, receipt_number="OLD", amount="30", occurred_at=timezone.now() - dt.timedelta(days=40))
    services.purchase_record(store=store, receipt_number="THEIRS", amount="30", member=MemberFactory())
    returned = services.purchase_record(store=store, receipt_number="BACK", amount="30").purchase
    services.purchase_return(purchase=returned, return_number="X", amount="5")

    assert claim_error(at_counter, wang, "THERE") == "No sale with receipt THERE at Jing'an."
    assert claim_error(at_counter, wang, "OLD") == "Sales can only be claimed within 30 days."
    assert claim_error(at_counter, wang, "THEIRS") == "This purchase already belongs to another member."
    assert claim_error(at_counter, wang, "BACK") == "A purchase with a return cannot be claimed."
    assert not Purchase.objects.filter(member=wang).exists()
    assert account_for(wang).available == 0


@pytest.mark.django_db
@pytest.mark.parametrize("headers", [{}, HTMX])
def test_a_marketer_cannot_claim_a_sale(marketer_at_counter, store, wang, headers):
    services.purchase_record(store=store, receipt_number="ANON-1", amount="30")

    assert marketer_at_counter.get(url("claim", wang), headers=headers).status_code == 403
    assert marketer_at_counter.post(url("claim", wang), {"receipt_number": "ANON-1"}, headers=headers).status_code == 403
    assert Purchase.objects.get().member is None
