"""The member portal's points pages: the digital card, the history, rewards and vouchers, and how the programme works."""

import datetime as dt
import re
import uuid

import barcode
import pytest
import time_machine
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from members.models import Member
from members.tests.factories import MemberFactory, UserFactory
from rewards import catalog, services
from rewards.models import LedgerEntry, Redemption, StampProgramme, TermsText, TermsVersion, Tier, Voucher
from rewards.selectors import account_for
from rewards.tests.factories import settings_change
from rewards.tests.test_catalog import earn, reward_create, tier_create

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
CARD = reverse("portal:card")
HISTORY = reverse("portal:history")
REWARDS = reverse("portal:rewards")
HOW = reverse("portal:how")


def logged_in(client, member: Member):
    """Log the client in as the member's own login, as a member who claimed their card online."""
    user = UserFactory(is_staff=False)
    Member.objects.filter(pk=member.pk).update(user=user)
    client.force_login(user)
    return client


@pytest.fixture
def mei(rules):
    return MemberFactory(name="Mei")


@pytest.fixture
def me(client, mei):
    return logged_in(client, mei)


@pytest.fixture
def someone_else(rules):
    return MemberFactory(name="Someone Else")


def nothing_redeemed() -> None:
    assert not Redemption.objects.exists()
    assert not Voucher.objects.exists()
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.SPEND).exists()


def svgs(html: str) -> list[str]:
    return re.findall(r"<svg.*?</svg>", html, re.S)


@pytest.mark.parametrize("url", [CARD, HISTORY, REWARDS, reverse("portal:voucher", args=["7KQ2-M9XD-4HTA"])])
def test_the_members_pages_need_a_login_and_a_membership(client, rules, url):
    assert client.get(url)["Location"].startswith(reverse("account_login"))
    client.force_login(UserFactory(is_staff=False))
    assert client.get(url)["Location"].startswith(reverse("portal:join"))


# --- the digital card ----------------------------------------------------------------------


def test_the_card_shows_the_members_code_as_qr_and_code_128_with_the_member_number(me, mei, someone_else):
    page = me.get(CARD)

    assert page.status_code == 200
    html = page.content.decode()
    code = mei.card_code
    assert " ".join(code[i : i + 4] for i in range(0, 16, 4)) in html
    assert mei.member_number in html
    assert someone_else.card_code not in html
    qr, bars = svgs(html)
    assert f"<title>{code}</title>" in qr
    assert 'transform="scale(8)"' in qr  # 8 px a module: large enough for a scanner
    # The barcode's bars are exactly the Code 128 modules of the card code, between quiet zones.
    modules = barcode.get("code128", code).build()[0]
    drawn = ["0"] * (len(modules) + 20)
    for x, width in re.findall(r"M(\d+) 0h(\d+)", bars):
        drawn[int(x) : int(x) + int(width)] = "1" * int(width)
    assert "".join(drawn) == "0" * 10 + modules + "0" * 10
    # Drawn by attributes only: the strict content security policy allows no inline style.
    assert "style" not in qr + bars
    assert "<script" not in qr + bars


# --- history -------------------------------------------------------------------------------


@pytest.fixture
def coffee_card(rules):
    reward = reward_create(rules, title="Free coffee", points_cost=100)
    return StampProgramme.objects.create(programme=rules.programme, name="Coffee card", stamps_needed=8, reward=reward)


def test_history_explains_every_change_with_its_receipt_and_the_stamps_below(me, rules, mei, someone_else, store, coffee_card):
    # Given a purchase, a part return of it, a redemption and someone else's purchase
    purchase = earn(store, mei, "120", receipt="R-1").purchase
    services.purchase_return(purchase=purchase, return_number="RT-1", amount="20")
    catalog.redemption_create(member=mei, reward=reward_create(rules, title="Cake", points_cost=50))
    earn(store, someone_else, "99", receipt="R-9")

    html = me.get(HISTORY).content.decode()

    assert "Receipt R-1: CN¥120.00 × 1 pt per CN¥1 = 120 pts" in html
    assert "+120 pts" in html
    assert "Receipt R-1, Jing&#x27;an" in html
    assert "Return RT-1 of receipt R-1" in html
    assert "-20 pts" in html
    assert "Redeemed: Cake" in html
    assert "-50 pts" in html
    assert "R-9" not in html
    # The stamps, in their own section
    assert 'id="stamps-title"' in html
    assert "1 stamp for receipt R-1 (purchase of CN¥120.00)" in html


def kinds_shown(response) -> list[str]:
    return [entry.kind for entry in response.context_data["page"].object_list]


@pytest.fixture
def returned(me, mei, store):
    """Two purchases by Mei, the first partly returned."""
    purchase = earn(store, mei, "120", receipt="R-1").purchase
    earn(store, mei, "30", receipt="R-2")
    services.purchase_return(purchase=purchase, return_number="RT-1", amount="20")
    return purchase


def test_history_filters_by_kind(me, returned):
    response = me.get(HISTORY, {"kind": "clawback"})

    assert kinds_shown(response) == ["clawback"]
    assert 'value="clawback" selected' in response.content.decode()


def test_an_unknown_kind_is_a_form_error_and_filters_nothing(me, returned):
    response = me.get(HISTORY, {"kind": "'; DROP TABLE rewards_ledgerentry; --"})

    assert response.status_code == 200
    assert sorted(kinds_shown(response)) == ["clawback", "earn", "earn"]
    assert "Select a valid choice." in response.content.decode()


def test_with_htmx_a_filter_swaps_only_the_list(me, returned):
    response = me.get(HISTORY, {"kind": "earn"}, headers=HTMX)

    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith('<div id="entries">')
    assert "<html" not in html
    assert "stamps-title" not in html
    assert "HX-Request" in response["Vary"]
    assert kinds_shown(response) == ["earn", "earn"]
    # Without htmx the same URL is the whole page
    page = me.get(HISTORY, {"kind": "earn"})
    assert "<html" in page.content.decode()
    assert "HX-Request" in page["Vary"]


def test_history_pages_by_twenty_and_takes_any_page_number(me, mei, store):
    for n in range(25):
        earn(store, mei, "10", receipt=f"R-{n}")

    first = me.get(HISTORY)
    second = me.get(HISTORY, {"page": "2", "kind": "earn"})

    assert len(first.context_data["page"].object_list) == 20
    assert "Page 1 of 2" in first.content.decode()
    assert 'href="?page=2"' in first.content.decode()
    assert len(second.context_data["page"].object_list) == 5
    # The way back keeps the filter
    assert 'href="?page=1&amp;kind=earn"' in second.content.decode()
    for bad, number in [("999", 2), ("0", 2), ("abc", 1), ("-1", 2), ("1.5", 1), ("", 1)]:
        response = me.get(HISTORY, {"page": bad})
        assert response.status_code == 200
        assert response.context_data["page"].number == number, bad


def test_history_shows_only_the_members_own_entries_and_stamps(me, mei, someone_else, store, coffee_card):
    earn(store, someone_else, "99", receipt="R-9")

    response = me.get(HISTORY)

    html = response.content.decode()
    assert list(response.context_data["page"].object_list) == []
    assert response.context_data["stamps"] == []
    assert "No points yet." in html
    assert "No stamps yet." in html
    assert "R-9" not in html


@pytest.mark.parametrize("htmx", [False, True])
def test_history_takes_a_fixed_number_of_queries(me, mei, store, coffee_card, htmx):
    earn(store, mei, "10", receipt="R-first")
    headers = HTMX if htmx else {}
    me.get(HISTORY, headers=headers)  # warm the session

    with CaptureQueriesContext(connection) as one_entry:
        small = me.get(HISTORY, headers=headers)
    for n in range(29):
        earn(store, mei, "10", receipt=f"R-{n}")
    services.purchase_return(purchase=mei.purchases.get(receipt_number="R-0"), return_number="RT-1", amount="5")
    with CaptureQueriesContext(connection) as thirty_entries:
        big = me.get(HISTORY, headers=headers)

    assert len(small.context_data["page"].object_list) == 1
    assert len(big.context_data["page"].object_list) == 20
    assert len(thirty_entries) == len(one_entry), [q["sql"] for q in thirty_entries.captured_queries]


# --- rewards -----------------------------------------------------------------------------------


@pytest.fixture
def latte(rules):
    return reward_create(rules, title="Free latte", points_cost=50)


@pytest.fixture
def rich(me, mei, store):
    """Mei with 60 points."""
    earn(store, mei, "60")
    return mei


def redeem(client, reward, *, token: str | None = None, htmx: bool = False):
    data = {"reward": reward.pk, "token": token or str(uuid.uuid4())}
    return client.post(REWARDS, data, headers=HTMX if htmx else {})


def test_the_catalog_says_what_the_member_can_redeem_and_what_stands_in_the_way(me, rules, rich, latte):
    cake = reward_create(rules, title="Cake", points_cost=100)
    gold_mug = reward_create(rules, title="Gold mug", points_cost=10, min_tier=tier_create(rules, "gold", 2))

    response = me.get(REWARDS)

    html = response.content.decode()
    assert response.status_code == 200
    assert response.context_data["items"][0].reward == latte
    assert f'href="{REWARDS}?reward={latte.pk}"' in html
    assert not any(f"?reward={reward.pk}" in html for reward in (cake, gold_mug))
    assert "40 pts more needed." in html
    assert "For Gold members and above." in html
    assert "You have 60 pts to spend" in html
    nothing_redeemed()


@pytest.mark.parametrize("htmx", [False, True])
def test_choosing_a_reward_asks_to_confirm_with_a_one_time_token(me, rich, latte, htmx):
    response = me.get(REWARDS, {"reward": latte.pk}, headers=HTMX if htmx else {})

    html = response.content.decode()
    assert response.status_code == 200
    assert "Redeem Free latte for 50 pts?" in html
    assert "Left after redeeming: 10 pts." in html
    assert re.search(r'name="token" value="[0-9a-f-]{36}"', html)
    assert "Confirm and redeem" in html
    assert ("<html" in html) is not htmx
    assert ('id="catalog"' in html) is not htmx
    assert "HX-Request" in response["Vary"]
    nothing_redeemed()


@pytest.mark.parametrize("chosen", ["cake", "999999", "abc", "1e3"])
def test_a_reward_out_of_reach_or_unknown_offers_no_confirmation(me, rules, rich, chosen):
    cake = reward_create(rules, title="Cake", points_cost=100)

    response = me.get(REWARDS, {"reward": cake.pk if chosen == "cake" else chosen})

    html = response.content.decode()
    assert response.status_code == 200
    assert "Confirm and redeem" not in html
    assert "40 pts more needed." in html  # the catalog still says what the cake needs
    nothing_redeemed()


@pytest.mark.parametrize("htmx", [False, True])
def test_redeeming_goes_to_the_voucher_page(me, mei, rich, latte, htmx):
    response = redeem(me, latte, htmx=htmx)

    redemption = Redemption.objects.get()
    voucher = redemption.voucher
    url = reverse("portal:voucher", args=[voucher.code])
    if htmx:
        assert response.status_code == 200
        assert response["HX-Redirect"] == url
    else:
        assert response.status_code == 302
        assert response["Location"] == url
    assert (redemption.member, redemption.reward, redemption.points, redemption.created_via) == (mei, latte, 50, "portal")
    assert redemption.created_by is None
    page = me.get(url)
    assert "Redeemed Free latte: your voucher is ready." in page.content.decode()


def test_a_double_tap_or_a_resent_form_redeems_once(me, mei, rich, latte):
    token = str(uuid.uuid4())

    first = redeem(me, latte, token=token)
    again = redeem(me, latte, token=token)

    assert first["Location"] == again["Location"]
    assert Redemption.objects.count() == 1
    assert account_for(mei).available == 10


@pytest.mark.parametrize("htmx", [False, True])
def test_a_refusal_is_shown_and_nothing_is_written(me, rules, rich, htmx):
    cake = reward_create(rules, title="Cake", points_cost=100)

    response = redeem(me, cake, htmx=htmx)

    html = response.content.decode()
    assert response.status_code == 200
    assert "40 more points are needed: 60 are available." in html
    assert "Nothing was redeemed." in html
    assert ("<html" in html) is not htmx
    nothing_redeemed()


@pytest.mark.parametrize("data", [{}, {"reward": "abc", "token": "x"}, {"reward": "999999", "token": str(uuid.uuid4())}])
def test_a_tampered_form_is_refused_and_nothing_is_written(me, rich, latte, data):
    response = me.post(REWARDS, data)

    assert response.status_code == 200
    assert "Nothing was redeemed." in response.content.decode()
    nothing_redeemed()


def test_the_rewards_page_takes_a_fixed_number_of_queries(me, rules, rich, latte):
    gold = tier_create(rules, "gold", 2)
    reward_create(rules, title="Gold mug", points_cost=10, min_tier=gold, limit_per_member=1)
    me.get(REWARDS)  # warm the session

    with CaptureQueriesContext(connection) as two_rewards:
        me.get(REWARDS)
    for n in range(8):
        reward_create(
            rules, title=f"Reward {n}", points_cost=10 + n, min_tier=gold if n % 2 else None, limit_per_member=n or None
        )
    with CaptureQueriesContext(connection) as ten_rewards:
        page = me.get(REWARDS)

    assert page.content.decode().count("<h3>") == 10
    assert len(ten_rewards) == len(two_rewards), [q["sql"] for q in ten_rewards.captured_queries]


# --- vouchers ------------------------------------------------------------------------------------


@pytest.fixture
def voucher(rich, latte):
    return catalog.redemption_create(member=rich, reward=latte, via="portal").voucher


def test_the_voucher_page_shows_the_reward_its_validity_and_the_code_as_qr(me, voucher):
    response = me.get(reverse("portal:voucher", args=[voucher.code]))

    html = response.content.decode()
    assert response.status_code == 200
    assert "Free latte" in html
    assert voucher.code in html
    assert "Ready to use until" in html
    (qr,) = svgs(html)
    assert f"<title>{voucher.code}</title>" in qr
    assert "style" not in qr


def test_a_voucher_code_typed_loosely_finds_the_same_voucher(me, voucher):
    loose = voucher.code.lower().replace("-", "")

    response = me.get(reverse("portal:voucher", args=[loose]))

    assert response.status_code == 200
    assert response.context_data["voucher"] == voucher


def test_another_members_voucher_or_an_unknown_code_is_a_404(client, rules, store, voucher, latte, someone_else):
    earn(store, someone_else, "60")
    theirs = catalog.redemption_create(member=someone_else, reward=latte).voucher
    client.force_login(Member.objects.get(pk=voucher.member_id).user)

    assert client.get(reverse("portal:voucher", args=[theirs.code])).status_code == 404
    assert client.get(reverse("portal:voucher", args=["7KQ2-M9XD-4HTA"])).status_code == 404
    assert client.get(reverse("portal:voucher", args=["not-a-code"])).status_code == 404
    assert client.get(f"{reverse('portal:home')}vouchers/%00/").status_code == 404


def test_a_used_voucher_says_when_and_where_and_shows_no_qr(me, store, voucher):
    catalog.voucher_use(code=voucher.code, store=store)

    html = me.get(reverse("portal:voucher", args=[voucher.code])).content.decode()

    assert "Used on" in html
    assert "Jing&#x27;an" in html
    assert svgs(html) == []


def test_an_expired_voucher_says_so(client, voucher):
    with time_machine.travel(voucher.expires_at + dt.timedelta(minutes=1)):
        client.force_login(Member.objects.get(pk=voucher.member_id).user)  # the morning's session has expired
        html = client.get(reverse("portal:voucher", args=[voucher.code])).content.decode()

    assert "Expired on" in html
    assert svgs(html) == []


# --- how it works -------------------------------------------------------------------------------


@pytest.fixture
def terms(rules):
    terms = TermsVersion.objects.create(programme=rules.programme, version="2026.1", published_at="2026-01-01T00:00Z")
    TermsText.objects.create(terms=terms, language="en", body="Points have no cash value.")
    TermsText.objects.create(terms=terms, language="zh-hant", body="積分不可兌換現金。")
    return terms


@pytest.fixture
def programme(rules, terms):
    settings_change(
        rules,
        points_per_unit="1.5",
        minimum_purchase="10",
        excluded_categories=["gift-cards", "tobacco"],
        pending_days=14,
        min_redemption_points=100,
        birthday_bonus_points=20,
    )
    Tier.objects.create(
        programme=rules.programme,
        code="gold",
        name_en="Gold",
        name_zh_hant="金卡",
        rank=2,
        metric=Tier.Metric.SPEND,
        entry_threshold=2000,
        retain_threshold=1500,
        window=Tier.Window.ROLLING,
        window_months=12,
        grace_days=30,
        earn_multiplier="1.50",
        birthday_bonus_points=200,
        perks_en="Free size upgrade\nPriority queue",
    )
    Tier.objects.create(
        programme=rules.programme, code="vip", name="VIP", rank=3, entry_threshold=0, retain_threshold=0, invitation_only=True
    )
    coffee = reward_create(rules, title="Free coffee", points_cost=100)
    StampProgramme.objects.create(
        programme=rules.programme, name="Coffee card", stamps_needed=8, rule="category_item", category="coffee", reward=coffee
    )
    StampProgramme.objects.create(programme=rules.programme, name="Old card", active=False, reward=coffee)
    return rules


def test_how_it_works_is_public_and_written_from_the_rules_in_force(client, programme):
    response = client.get(HOW)

    html = response.content.decode()
    assert response.status_code == 200
    assert "How Morning Light works" in html
    assert "1.5 points for every CN¥1 spent." in html
    assert "A purchase earns points from CN¥10.00." in html
    assert "These categories earn no points: gift-cards, tobacco." in html
    assert "can be spent 14 days after it" in html
    assert "Points can be used for 12 months from the day they are earned." in html
    assert "A reward costs at least 100 pts." in html
    assert "Every member gets 20 pts on their birthday" in html
    # Tiers and their benefits
    assert "Gold" in html
    assert "CN¥2,000.00 spent" in html
    assert "counted over the last 12 months" in html
    assert "CN¥1,500.00 spent in each period; if you fall short you keep the tier 30 more days." in html
    assert "× 1.5 on every purchase" in html
    assert "200 pts bonus" in html
    assert "<li>Priority queue</li>" in html
    assert "By invitation only." in html
    # Stamp cards in force, and the terms
    assert "Coffee card" in html
    assert "A stamp for each item of coffee." in html
    assert "8 stamps earn Free coffee." in html
    assert "Old card" not in html
    assert "Points are counted on the amount paid after discounts, tax included." in html
    assert "Points have no cash value." in html
    assert "Version 2026.1" in html
    # Logged out: no member menu, a way in instead
    assert 'aria-label="My membership"' not in html
    assert reverse("account_login") in html


def test_a_logged_in_member_reads_it_with_their_menu(me, programme):
    html = me.get(HOW).content.decode()

    assert 'aria-label="My membership"' in html
    assert f'href="{HOW}" aria-current="page"' in html


@pytest.mark.parametrize(("language", "text"), [("zh-hant", "積分不可兌換現金。"), ("ko", "Points have no cash value.")])
def test_the_terms_are_in_the_readers_language_or_else_english(client, programme, language, text):
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = language

    html = client.get(HOW).content.decode()

    assert text in html
    if language == "zh-hant":
        assert "金卡" in html


@pytest.mark.parametrize(
    ("policy", "years", "expected"),
    [
        ("year_end", 1, "those earned in {year} can be used until Dec. 31, {next}."),
        ("year_end", 0, "those earned in {year} can be used until Dec. 31, {year}."),
        ("never", 1, "Points never expire."),
    ],
)
def test_the_expiry_policy_is_said_in_plain_words(client, rules, policy, years, expected):
    settings_change(rules, expiry_policy=policy, expiry_years=years, pending_days=0)
    year = timezone.localdate(timezone=rules.programme.tz).year

    html = client.get(HOW).content.decode()

    assert expected.format(year=year, next=year + 1) in html
    assert "Points can be spent as soon as they are earned." in html
    assert "No terms are published yet." in html


def test_before_the_programme_is_set_up_the_page_says_so(client, db):
    response = client.get(HOW)

    assert response.status_code == 200
    assert "The programme is not open yet." in response.content.decode()
