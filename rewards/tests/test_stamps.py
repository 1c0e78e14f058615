"""Stamp cards: stamps from purchases, full cards issuing vouchers, returns taking stamps back."""

from collections import Counter
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db.models import Sum
from django.urls import reverse
from django.utils import translation
from rest_framework.test import APIClient

from members import services as member_services
from members.models import Notification
from members.tests.factories import MemberFactory, UserFactory
from rewards import hooks, services, stamps
from rewards.models import Purchase, Redemption, Reward, StampCard, StampEvent, StampProgramme, Voucher
from rewards.selectors import account_for, ledger_drift
from rewards.services import LineInput
from rewards.tests.factories import settings_change
from rewards.tests.test_concurrency import run_at_once

pytestmark = pytest.mark.django_db


@pytest.fixture
def reward(rules):
    return Reward.objects.create(
        programme=rules.programme,
        kind=Reward.Kind.FREE_ITEM,
        title_en="Free coffee",
        title_zh_hans="免费咖啡",
        points_cost=100,
    )


@pytest.fixture
def make_programme(rules, reward):
    def make(**fields: object) -> StampProgramme:
        fields = {"name_en": "Coffee card", "name_zh_hans": "咖啡卡", "stamps_needed": 8, "reward": reward, **fields}
        return StampProgramme.objects.create(programme=rules.programme, **fields)

    return make


@pytest.fixture
def coffee_card(make_programme):
    return make_programme(rule=StampProgramme.Rule.CATEGORY_ITEM, category="coffee", stamps_needed=4)


def buy(store, member, receipt: str, *, coffees: int = 0, pastries: int = 0, amount: str | None = None, **sale: object):
    """Record a sale of coffees at ¥10 and pastries at ¥5, or of a plain amount."""
    lines = []
    if coffees:
        lines.append(LineInput(amount=Decimal(10 * coffees), quantity=coffees, sku="latte", name="Latte", category="Coffee"))
    if pastries:
        lines.append(LineInput(amount=Decimal(5 * pastries), quantity=pastries, sku="croissant", category="pastry"))
    total = amount or str(sum(line.amount for line in lines))
    return services.purchase_record(store=store, receipt_number=receipt, amount=total, member=member, lines=lines, **sale)


def open_card(member, programme) -> StampCard | None:
    return StampCard.objects.filter(member=member, programme=programme, completed_at__isnull=True).first()


def stamps_on_open_card(member, programme) -> int:
    card = open_card(member, programme)
    return card.stamps if card else 0


def assert_cards_match_their_events() -> None:
    """Every card holds exactly the stamps its events add up to, and no member has two open cards."""
    for card in StampCard.objects.all():
        assert card.stamps == (card.events.aggregate(s=Sum("stamps"))["s"] or 0), card
    opened = Counter(StampCard.objects.filter(completed_at__isnull=True).values_list("member", "programme"))
    assert all(count == 1 for count in opened.values())


def explanations(member) -> list[str]:
    return [line.explanation for line in reversed(stamps.stamp_history(member))]


# --- earning -----------------------------------------------------------------------------


def test_a_purchase_over_the_minimum_earns_one_stamp(store, member, make_programme):
    programme = make_programme(rule=StampProgramme.Rule.PURCHASE_OVER, min_amount=Decimal(30))

    buy(store, member, "R-1", amount="29.99")
    buy(store, member, "R-2", amount="40", discount="15")  # ¥25 paid: the discount counts
    buy(store, member, "R-3", amount="30")
    buy(store, member, "R-4", amount="45")
    buy(store, member, "R-5", amount="500")  # a big purchase is still one stamp

    assert stamps_on_open_card(member, programme) == 3
    assert list(StampEvent.objects.order_by("pk").values_list("purchase__receipt_number", "stamps")) == [
        ("R-3", 1),
        ("R-4", 1),
        ("R-5", 1),
    ]
    assert explanations(member)[1] == "1 stamp for receipt R-4 (purchase of CN¥45.00 over CN¥30.00)"


def test_each_item_of_the_category_earns_a_stamp(store, member, coffee_card):
    # Categories match as merchants type them, whatever the case.
    buy(store, member, "R-1", coffees=3, pastries=2)
    buy(store, member, "R-2", pastries=4)

    assert stamps_on_open_card(member, coffee_card) == 3
    assert StampEvent.objects.get().detail["lines"] == [[1, 3]]
    assert explanations(member) == ["3 stamps for receipt R-1 (coffee × 3)"]


def test_each_item_of_the_sku_earns_a_stamp(store, member, make_programme):
    programme = make_programme(rule=StampProgramme.Rule.SKU_ITEM, sku="croissant")

    buy(store, member, "R-1", coffees=3, pastries=2)

    assert stamps_on_open_card(member, programme) == 2
    assert explanations(member) == ["2 stamps for receipt R-1 (croissant × 2)"]


def test_inactive_programmes_and_sales_without_a_card_earn_nothing(store, member, make_programme, coffee_card):
    make_programme(rule=StampProgramme.Rule.PURCHASE_OVER, active=False)

    buy(store, None, "R-1", coffees=2)
    buy(store, member, "R-2", coffees=1)

    assert list(StampEvent.objects.values_list("card__programme", "stamps")) == [(coffee_card.pk, 1)]


def test_a_purchase_earns_on_every_active_programme(store, member, make_programme, coffee_card):
    any_visit = make_programme(rule=StampProgramme.Rule.PURCHASE_OVER, stamps_needed=10)

    buy(store, member, "R-1", coffees=2)

    assert [c.stamps for c in stamps.stamp_cards_for(member)] == [2, 1]
    assert stamps_on_open_card(member, any_visit) == 1


# --- full cards ---------------------------------------------------------------------------


def test_a_full_card_issues_its_voucher_and_the_surplus_starts_the_next_card(store, member, coffee_card, reward):
    # Given a card of 4 with 3 stamps
    buy(store, member, "R-1", coffees=3)
    assert not Voucher.objects.exists()

    # When a purchase of 3 coffees fills it with the first
    buy(store, member, "R-2", coffees=3)

    # Then the card is complete with its voucher, and the 2 others are on a new card
    full = StampCard.objects.get(completed_at__isnull=False)
    voucher = Voucher.objects.get()
    assert (full.stamps, full.voucher, voucher.member, voucher.reward) == (4, voucher, member, reward)
    assert voucher.status == Voucher.Status.ISSUED
    assert Notification.objects.filter(member=member, kind="voucher_issued", key=f"voucher:{voucher.code}").count() == 1
    assert stamps_on_open_card(member, coffee_card) == 2
    assert list(StampEvent.objects.filter(purchase__receipt_number="R-2").values_list("card", "stamps").order_by("pk")) == [
        (full.pk, 1),
        (open_card(member, coffee_card).pk, 2),
    ]
    assert explanations(member)[1:] == [
        "1 stamp for receipt R-2 (coffee × 3): card complete, your reward “Free coffee” is ready",
        "2 stamps for receipt R-2 (coffee × 3), carried over to your new card",
    ]
    assert_cards_match_their_events()
    # The reward of a full card costs no points and is no redemption.
    assert not Redemption.objects.exists()
    assert account_for(member).available == 60
    assert ledger_drift() == []


def test_one_purchase_can_fill_several_cards(store, member, coffee_card):
    buy(store, member, "R-1", coffees=9)

    assert StampCard.objects.filter(completed_at__isnull=False, voucher__isnull=False).count() == 2
    assert Voucher.objects.filter(member=member).count() == 2
    assert stamps_on_open_card(member, coffee_card) == 1
    assert_cards_match_their_events()


def test_a_card_filled_exactly_leaves_an_empty_new_card(store, member, coffee_card):
    buy(store, member, "R-1", coffees=4)

    card = open_card(member, coffee_card)
    assert card is not None
    assert card.stamps == 0
    assert [(c.stamps, c.needed) for c in stamps.stamp_cards_for(member)] == [(0, 4)]


def test_a_card_over_a_lowered_target_completes_on_its_next_stamp(store, member, coffee_card):
    buy(store, member, "R-1", coffees=3)
    settings_change(coffee_card, stamps_needed=2)
    coffee_card.refresh_from_db()

    buy(store, member, "R-2", coffees=1)

    assert StampCard.objects.get(completed_at__isnull=False).stamps == 4
    assert Voucher.objects.count() == 1
    assert stamps_on_open_card(member, coffee_card) == 0


# --- idempotency and the other ways purchases arrive ----------------------------------------


def test_a_replayed_purchase_stamps_once(store, member, coffee_card):
    first = buy(store, member, "R-1", coffees=2)
    again = buy(store, member, "R-1", coffees=2)

    assert (first.created, again.created) == (True, False)
    assert StampEvent.objects.count() == 1
    assert stamps_on_open_card(member, coffee_card) == 2


def test_the_hook_running_twice_stamps_once(store, member, coffee_card):
    result = buy(store, member, "R-1", coffees=4)

    stamps.on_purchases([hooks.PurchaseRecorded(purchase=result.purchase, entry=result.entry)])

    assert StampEvent.objects.count() == 1
    assert Voucher.objects.count() == 1
    assert stamps_on_open_card(member, coffee_card) == 0


def test_claiming_a_sale_made_without_a_card_stamps_it(store, member, coffee_card):
    sale = buy(store, None, "R-1", coffees=2).purchase
    assert not StampEvent.objects.exists()

    services.purchase_claim(purchase=sale, member=member)
    services.purchase_claim(purchase=sale, member=member)  # claimed again: a no-op

    assert stamps_on_open_card(member, coffee_card) == 2
    assert StampEvent.objects.get().purchase == sale


def test_the_batch_endpoint_stamps_each_new_sale_once(store, member, coffee_card):
    cache.clear()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {member_services.api_key_create(store=store, name='Till 1')[1]}")
    coffee = {"sku": "latte", "category": "coffee", "quantity": 3, "amount": "30"}
    items = [
        {"receipt_number": "B-1", "amount": "30", "member_number": member.member_number, "lines": [coffee]},
        {"receipt_number": "B-2", "amount": "30", "member_number": member.member_number, "lines": [coffee]},
        {"receipt_number": "B-3", "amount": "30", "lines": [coffee]},
    ]

    for _attempt in range(2):
        response = client.post("/api/v1/purchases/batch", {"purchases": items}, format="json")
        assert response.status_code == 200, response.content

    assert StampEvent.objects.filter(stamps__gt=0).aggregate(s=Sum("stamps"))["s"] == 6
    assert Voucher.objects.filter(member=member).count() == 1
    assert stamps_on_open_card(member, coffee_card) == 2
    assert_cards_match_their_events()


# --- returns ------------------------------------------------------------------------------


def test_a_return_by_lines_takes_back_the_stamps_of_its_items(store, member, coffee_card):
    sale = buy(store, member, "R-1", coffees=3, pastries=1).purchase

    services.purchase_return(purchase=sale, return_number="X-1", lines=[(2, 1)])  # the pastry earned nothing
    assert stamps_on_open_card(member, coffee_card) == 3
    services.purchase_return(purchase=sale, return_number="X-2", lines=[(1, 2)])

    assert stamps_on_open_card(member, coffee_card) == 1
    event = StampEvent.objects.get(stamps__lt=0)
    assert event.return_record.return_number == "X-2"
    assert explanations(member)[-1] == "−2 stamps: return of receipt R-1"
    assert_cards_match_their_events()


def test_a_return_by_amount_takes_back_stamps_in_proportion(store, member, coffee_card):
    sale = buy(store, member, "R-1", coffees=3, pastries=2).purchase  # ¥30 of coffee, ¥10 of pastry

    services.purchase_return(purchase=sale, return_number="X-1", amount="20")
    assert stamps_on_open_card(member, coffee_card) == 1  # half the purchase: 1.5 stamps, rounded to 2
    services.purchase_return(purchase=sale, return_number="X-2", amount="20")

    assert stamps_on_open_card(member, coffee_card) == 0
    assert list(StampEvent.objects.filter(stamps__lt=0).values_list("stamps", flat=True).order_by("pk")) == [-2, -1]


def test_a_return_takes_the_purchase_stamp_only_when_what_is_left_falls_below_the_minimum(store, member, make_programme):
    programme = make_programme(rule=StampProgramme.Rule.PURCHASE_OVER, min_amount=Decimal(30))
    sale = buy(store, member, "R-1", amount="45").purchase

    services.purchase_return(purchase=sale, return_number="X-1", amount="10")  # ¥35 left
    assert stamps_on_open_card(member, programme) == 1
    services.purchase_return(purchase=sale, return_number="X-2", amount="10")  # ¥25 left
    assert stamps_on_open_card(member, programme) == 0
    services.purchase_return(purchase=sale, return_number="X-3", amount="25")

    assert list(StampEvent.objects.values_list("stamps", flat=True).order_by("pk")) == [1, -1]


def test_a_full_return_takes_the_stamp_even_without_a_minimum(store, member, make_programme):
    programme = make_programme(rule=StampProgramme.Rule.PURCHASE_OVER)
    sale = buy(store, member, "R-1", amount="5").purchase

    services.purchase_return(purchase=sale, return_number="X-1", amount="4")
    assert stamps_on_open_card(member, programme) == 1
    services.purchase_return(purchase=sale, return_number="X-2", amount="1")

    assert stamps_on_open_card(member, programme) == 0


def test_stamps_of_a_completed_card_come_off_the_open_card_and_the_voucher_stays(store, member, coffee_card):
    # Given a card completed by one purchase, its voucher unused, and 1 stamp on the next card
    filled = buy(store, member, "R-1", coffees=4).purchase
    buy(store, member, "R-2", coffees=1)
    voucher = Voucher.objects.get()

    # When the purchase that filled the card is returned in full
    services.purchase_return(purchase=filled, return_number="X-1", lines=[(1, 4)])

    # Then the open card gives what it has and never goes below zero; the voucher is untouched
    assert stamps_on_open_card(member, coffee_card) == 0
    event = StampEvent.objects.get(stamps__lt=0)
    assert event.stamps == -1
    assert event.detail == {
        "receipt": "R-1",
        "return": "X-1",
        "rule": "category_item",
        "due": 4,
        "short": 3,
        "completed_card": voucher.stamp_card.pk,
        "voucher": voucher.code,
        "voucher_status": "issued",
    }
    voucher.refresh_from_db()
    assert voucher.status == Voucher.Status.ISSUED
    assert explanations(member)[-1] == (
        "−1 stamp: return of receipt R-1 (3 stamps are not taken back: they were on a card already complete)"
    )
    assert_cards_match_their_events()


def test_a_return_with_nothing_on_the_open_card_leaves_it_at_zero(store, member, coffee_card):
    filled = buy(store, member, "R-1", coffees=4).purchase

    services.purchase_return(purchase=filled, return_number="X-1", amount="40")

    assert stamps_on_open_card(member, coffee_card) == 0
    assert not StampEvent.objects.filter(stamps__lt=0).exists()
    assert Voucher.objects.get().status == Voucher.Status.ISSUED


def test_a_replayed_return_and_a_hook_run_twice_take_stamps_back_once(store, member, coffee_card):
    sale = buy(store, member, "R-1", coffees=3).purchase

    result = services.purchase_return(purchase=sale, return_number="X-1", lines=[(1, 1)])
    services.purchase_return(purchase=sale, return_number="X-1", lines=[(1, 1)])
    stamps.on_return(hooks.ReturnRecorded(return_record=result.return_record, entry=result.entry))

    assert stamps_on_open_card(member, coffee_card) == 2
    assert StampEvent.objects.filter(stamps__lt=0).count() == 1


def test_a_return_takes_back_stamps_of_a_programme_ended_since(store, member, coffee_card):
    sale = buy(store, member, "R-1", coffees=3).purchase
    settings_change(coffee_card, active=False)

    services.purchase_return(purchase=sale, return_number="X-1", lines=[(1, 3)])

    assert stamps_on_open_card(member, coffee_card) == 0


def test_a_sale_whose_return_fails_keeps_its_stamps(store, member, coffee_card):
    sale = buy(store, member, "R-1", coffees=3).purchase

    with pytest.raises(ValidationError):
        services.purchase_return(purchase=sale, return_number="X-1", lines=[(1, 4)])

    assert stamps_on_open_card(member, coffee_card) == 3
    assert not StampEvent.objects.filter(stamps__lt=0).exists()


# --- what the member sees -------------------------------------------------------------------


def test_cards_and_history_are_shown_in_the_members_language(store, member, make_programme, coffee_card):
    make_programme(name_en="Visits", name_zh_hans="到店卡", rule=StampProgramme.Rule.PURCHASE_OVER, min_amount=Decimal(30))
    buy(store, member, "R-1", coffees=5)

    with translation.override("zh-hans"):
        cards = [(c.name, c.stamps, c.needed, c.reward.title) for c in stamps.stamp_cards_for(member)]
        history = [(line.programme, line.explanation) for line in stamps.stamp_history(member)]
    with translation.override("en"):
        english = [line.explanation for line in stamps.stamp_history(member)]

    assert cards == [("咖啡卡", 1, 4, "免费咖啡"), ("到店卡", 1, 8, "免费咖啡")]
    assert [programme for programme, _text in history] == ["到店卡", "咖啡卡", "咖啡卡"]
    # The figures are stored once; the sentence is written in the language being shown.
    assert "¥50.00" in history[0][1]
    assert "CN¥" not in history[0][1]
    assert "免费咖啡" in history[2][1]
    assert "CN¥50.00" in english[0]
    assert "Free coffee" in english[2]


def test_the_history_explains_a_purchase_and_its_return(store, member, make_programme):
    make_programme(rule=StampProgramme.Rule.PURCHASE_OVER, min_amount=Decimal(30))
    sale = buy(store, member, "R-123", amount="45").purchase
    services.purchase_return(purchase=sale, return_number="X-1", amount="45")

    assert explanations(member) == [
        "1 stamp for receipt R-123 (purchase of CN¥45.00 over CN¥30.00)",
        "−1 stamp: return of receipt R-123",
    ]


# --- the admin ------------------------------------------------------------------------------


@pytest.fixture
def admin_client(client, roles, rules):
    client.force_login(UserFactory(role="Programme admin"))
    return client


def test_the_admin_creates_a_programme_per_language_and_names_a_missing_category(admin_client, reward):
    url = reverse("admin:rewards_stampprogramme_add")
    assert admin_client.get(url).status_code == 200
    form = {"name_en": "Coffee card", "name_zh_hans": "咖啡卡", "stamps_needed": 8, "rule": "category_item", "reward": reward.pk}

    refused = admin_client.post(url, {**form, "min_amount": "0", "category": ""})
    created = admin_client.post(url, {**form, "min_amount": "0", "category": "coffee", "active": "on"})

    assert refused.status_code == 200
    assert "category" in refused.context["adminform"].form.errors
    assert created.status_code == 302, created.context["adminform"].form.errors if created.context else created
    programme = StampProgramme.objects.get()
    assert (programme.name_zh_hans, programme.category, programme.active) == ("咖啡卡", "coffee", True)


def test_the_admin_shows_a_card_with_its_explained_stamps(admin_client, store, member, coffee_card):
    buy(store, member, "R-1", coffees=5)
    card = StampCard.objects.get(completed_at__isnull=False)

    assert admin_client.get(reverse("admin:rewards_stampcard_changelist"), {"q": member.member_number}).status_code == 200
    page = admin_client.get(reverse("admin:rewards_stampcard_change", args=[card.pk]))

    assert page.status_code == 200
    assert "card complete" in page.text
    assert admin_client.post(reverse("admin:rewards_stampcard_delete", args=[card.pk])).status_code == 403


# --- races ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_sixteen_purchases_at_once_give_exactly_the_right_stamps_and_vouchers(store, make_programme):
    # Given a new member, a card of 5 for any purchase and one of 4 coffees
    member = MemberFactory()
    visits = make_programme(rule=StampProgramme.Rule.PURCHASE_OVER, stamps_needed=5)
    coffee = make_programme(rule=StampProgramme.Rule.CATEGORY_ITEM, category="coffee", stamps_needed=4)

    # When 16 tills record a purchase of one coffee each at the same moment (half of them too small to earn points)
    def sale(i: int) -> object:
        amount = "0.50" if i % 2 else "10"
        line = LineInput(amount=Decimal(amount), category="coffee")
        return services.purchase_record(store=store, receipt_number=f"R-{i}", amount=amount, member=member, lines=[line])

    outcomes = run_at_once(16, sale)

    # Then each purchase stamped each card once: 3 full cards of 5 and 4 of 4, with one voucher each
    assert [o.error for o in outcomes if o.error is not None] == []
    assert Purchase.objects.count() == 16
    assert StampEvent.objects.filter(card__programme=visits).aggregate(s=Sum("stamps"))["s"] == 16
    assert StampEvent.objects.filter(card__programme=coffee).aggregate(s=Sum("stamps"))["s"] == 16
    assert StampCard.objects.filter(programme=visits, completed_at__isnull=False).count() == 3
    assert StampCard.objects.filter(programme=coffee, completed_at__isnull=False).count() == 4
    assert Voucher.objects.filter(member=member).count() == 7
    assert (stamps_on_open_card(member, visits), stamps_on_open_card(member, coffee)) == (1, 0)
    assert_cards_match_their_events()
    assert ledger_drift() == []
