"""The counter's rewards: redeeming for a member from the catalog they can have, and using a voucher by its code."""

import datetime as dt
import re
import uuid

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from members.tests.counter import counter_login as counter
from members.tests.factories import MemberFactory, UserFactory
from rewards import catalog
from rewards.models import LedgerEntry, Redemption, Voucher
from rewards.selectors import account_for
from rewards.tests.test_catalog import earn, reward_create, tier_create

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
VOUCHERS = reverse("staff:vouchers")


@pytest.fixture
def marketer(roles, store):
    return UserFactory(role="Marketer", stores=[store])


@pytest.fixture
def wang(rules, store):
    member = MemberFactory(name="Wang Fang")
    earn(store, member, "60")
    return member


@pytest.fixture
def latte(rules):
    return reward_create(rules, title="Free latte", points_cost=50)


def rewards_url(member) -> str:
    return reverse("staff:member_rewards", args=[member.member_number])


def redeem(client, member, reward, *, token: str | None = None, htmx: bool = True):
    data = {"reward": reward.pk, "token": token or str(uuid.uuid4())}
    return client.post(rewards_url(member), data, headers=HTMX if htmx else {})


def nothing_redeemed() -> None:
    assert not Redemption.objects.exists()
    assert not Voucher.objects.exists()
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.SPEND).exists()


# --- the catalog --------------------------------------------------------------------------


def test_the_catalog_shows_what_the_member_can_have_first_and_what_the_rest_need(at_counter, rules, wang, latte):
    # Given a member with 60 points and rewards they can and cannot have
    cake = reward_create(rules, title="Cake", points_cost=100)
    gold_only = reward_create(rules, title="Gold mug", points_cost=10, min_tier=tier_create(rules, "gold", 2))
    sold_out = reward_create(rules, title="Tote bag", points_cost=20, stock=0)

    # When the cashier opens the member's rewards
    page = at_counter.get(rewards_url(wang))

    # Then the one they can have comes first, with the only Redeem link; the others say why not
    assert page.status_code == 200
    html = page.content.decode()
    titles = [item.reward.title for item in page.context["items"]]
    assert titles[0] == "Free latte"
    assert set(titles) == {"Free latte", "Cake", "Gold mug", "Tote bag"}
    assert f"?reward={latte.pk}" in html
    assert not any(f"?reward={reward.pk}" in html for reward in (cake, gold_only, sold_out))
    assert "40 pts more needed." in html
    assert "For Gold members and above." in html
    assert "Sold out." in html
    assert "Available: 60 pts" in html
    nothing_redeemed()


def test_the_catalog_refreshes_itself_as_a_fragment_in_a_fixed_number_of_queries(at_counter, rules, wang, latte):
    url = rewards_url(wang)
    headers = {**HTMX, "HX-Target": "catalog"}
    at_counter.get(url, headers=headers)  # warm the session and the programme

    with CaptureQueriesContext(connection) as one_reward:
        fragment = at_counter.get(url, headers=headers)
    for n in range(5):
        reward_create(rules, title=f"Reward {n}", points_cost=10 + n, limit_per_member=2)
    with CaptureQueriesContext(connection) as six_rewards:
        bigger = at_counter.get(url, headers=headers)

    assert fragment.status_code == 200
    html = fragment.content.decode()
    assert 'id="catalog"' in html
    assert 'id="redeem"' not in html
    assert "<html" not in html
    assert "HX-Request" in fragment["Vary"]
    assert bigger.content.decode().count("<h3>") == 6
    # The limit per member adds one grouped count, whatever the number of rewards.
    assert len(six_rewards) <= len(one_reward) + 1


@pytest.mark.parametrize("htmx", [True, False])
def test_choosing_a_reward_asks_to_confirm_with_a_one_time_token(at_counter, wang, latte, htmx):
    response = at_counter.get(rewards_url(wang), {"reward": latte.pk}, headers=HTMX if htmx else {})

    assert response.status_code == 200
    html = response.content.decode()
    assert "Redeem Free latte for 50 pts?" in html
    assert "Left after redeeming: 10 pts." in html
    assert re.search(r'name="token" value="[0-9a-f-]{36}"', html)
    assert "Confirm and redeem" in html
    assert ("<html" in html) is not htmx
    nothing_redeemed()


# --- redeeming ----------------------------------------------------------------------------


def test_redeeming_shows_the_voucher_and_its_qr_and_refreshes_the_balance(at_counter, cashier, store, wang, latte):
    token = str(uuid.uuid4())

    response = redeem(at_counter, wang, latte, token=token)

    assert response.status_code == 200
    assert response["HX-Trigger"] == "pointsChanged"
    redemption = Redemption.objects.get()
    voucher = redemption.voucher
    assert (redemption.member, redemption.reward, redemption.points) == (wang, latte, 50)
    assert (redemption.store, redemption.created_by, redemption.created_via) == (store, cashier, "counter")
    assert redemption.idempotency_key == f"counter:{token}"
    assert account_for(wang).available == 10
    html = response.content.decode()
    assert voucher.code in html
    assert "<svg" in html
    assert f"<title>{voucher.code}</title>" in html
    assert "50 pts spent; 10 pts available now." in html
    assert 'hx-swap-oob="innerHTML"' in html
    assert "Redeemed Free latte" in html
    assert "<html" not in html


def test_the_qr_image_is_markup_the_content_security_policy_allows(at_counter, wang, latte):
    response = redeem(at_counter, wang, latte)
    svg = re.search(r"<svg.*?</svg>", response.content.decode(), re.S).group(0)
    # No script, no style attribute or element: inline SVG drawn by attributes needs no CSP exception.
    assert "<script" not in svg
    assert "style" not in svg
    assert "script-src 'self'" in response["Content-Security-Policy"]


def test_without_javascript_redeeming_redirects_to_a_page_showing_the_voucher(at_counter, wang, latte):
    response = redeem(at_counter, wang, latte, htmx=False)

    redemption = Redemption.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"{rewards_url(wang)}?redeemed={redemption.pk}"
    page = at_counter.get(response["Location"])
    html = page.content.decode()
    assert redemption.voucher.code in html
    assert "<svg" in html
    assert f"Redeemed Free latte: voucher {redemption.voucher.code}." in html


def test_a_double_click_or_a_resent_form_redeems_once(at_counter, wang, latte):
    token = str(uuid.uuid4())

    first = redeem(at_counter, wang, latte, token=token)
    second = redeem(at_counter, wang, latte, token=token)
    again_without_javascript = redeem(at_counter, wang, latte, token=token, htmx=False)

    redemption = Redemption.objects.get()
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.SPEND).count() == 1
    assert account_for(wang).available == 10
    assert redemption.voucher.code in first.content.decode()
    assert redemption.voucher.code in second.content.decode()
    assert again_without_javascript["Location"].endswith(f"?redeemed={redemption.pk}")


@pytest.mark.parametrize("htmx", [True, False])
def test_short_of_points_says_how_many_more_are_needed_and_writes_nothing(at_counter, rules, wang, htmx):
    cake = reward_create(rules, title="Cake", points_cost=100)

    response = redeem(at_counter, wang, cake, htmx=htmx)

    assert response.status_code == 200
    assert "HX-Trigger" not in response
    html = response.content.decode()
    assert "40 more points are needed: 60 are available." in html
    assert "nothing was recorded" in html
    nothing_redeemed()
    assert account_for(wang).available == 60


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"stock": 0}, "This reward is sold out."), ({"active": False}, "This reward is not offered at the moment.")],
)
def test_an_unavailable_reward_says_why_and_writes_nothing(at_counter, rules, wang, fields, message):
    reward = reward_create(rules, title="Mug", points_cost=20, **fields)

    response = redeem(at_counter, wang, reward)

    assert response.status_code == 200
    assert message in response.content.decode()
    nothing_redeemed()


def test_another_members_redemption_is_never_shown_on_this_members_page(at_counter, rules, store, wang, latte):
    other = MemberFactory(name="Li Na")
    earn(store, other, "80")
    theirs = catalog.redemption_create(member=other, reward=latte)

    page = at_counter.get(rewards_url(wang), {"redeemed": theirs.pk})

    assert page.status_code == 200
    assert theirs.voucher.code not in page.content.decode()


def test_a_manager_redeems_too(client, manager, store, wang, latte):
    response = redeem(counter(client, manager, store), wang, latte)
    assert response.status_code == 200
    assert Redemption.objects.get().created_by == manager


@pytest.mark.parametrize("method", ["get", "post"])
def test_staff_without_the_redeem_permission_are_refused_even_by_crafting_it(client, marketer, store, wang, latte, method):
    client = counter(client, marketer, store)
    data = {"reward": latte.pk, "token": str(uuid.uuid4())}
    response = getattr(client, method)(rewards_url(wang), data, headers=HTMX)
    assert response.status_code == 403
    nothing_redeemed()


def test_the_rewards_page_needs_a_staff_login(client, wang, latte):
    assert client.get(rewards_url(wang))["Location"].startswith(reverse("account_login"))
    client.force_login(UserFactory(is_staff=False))
    assert redeem(client, wang, latte).status_code == 403
    nothing_redeemed()


# --- using a voucher ----------------------------------------------------------------------


@pytest.fixture
def voucher(wang, latte):
    return catalog.redemption_create(member=wang, reward=latte).voucher


@pytest.mark.parametrize("htmx", [True, False])
def test_the_voucher_page_is_a_code_box_ready_for_the_scanner(at_counter, rules, htmx):
    response = at_counter.get(VOUCHERS, headers=HTMX if htmx else {})
    assert response.status_code == 200
    html = response.content.decode()
    assert re.search(r'<input type="text" name="code"[^>]* autofocus', html)
    assert ("<html" in html) is not htmx
    if not htmx:
        assert f'href="{VOUCHERS}" aria-current="page"' in html


@pytest.mark.parametrize("htmx", [True, False])
def test_a_scanned_or_loosely_typed_code_shows_what_the_voucher_is_for_and_whose_it_is(at_counter, voucher, htmx):
    typed = voucher.code.lower().replace("-", " ")

    response = at_counter.get(VOUCHERS, {"code": typed}, headers=HTMX if htmx else {})

    assert response.status_code == 200
    html = response.content.decode()
    assert "Free latte" in html
    assert "Wang Fang" in html
    assert reverse("staff:member", args=[voucher.member.member_number]) in html
    assert "Valid: ready to use" in html
    assert "Mark as used: Free latte" in html
    assert f'name="code" value="{voucher.code}"' in html  # the use form's hidden code
    assert ("<html" in html) is not htmx
    voucher.refresh_from_db()
    assert voucher.status == Voucher.Status.ISSUED


def test_an_unknown_code_says_so_on_the_field(at_counter, rules):
    response = at_counter.get(VOUCHERS, {"code": "0000-0000-0000"}, headers=HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert "No voucher has this code." in html
    assert 'aria-invalid="true"' in html


def test_using_a_voucher_marks_it_used_once_by_whom_and_where(at_counter, cashier, store, voucher):
    response = at_counter.post(VOUCHERS, {"code": voucher.code}, headers=HTMX)

    assert response.status_code == 200
    assert response["HX-Trigger"] == "voucherUsed"
    voucher.refresh_from_db()
    assert (voucher.status, voucher.used_by, voucher.used_store, voucher.used_via) == ("used", cashier, store, "counter")
    html = response.content.decode()
    assert "Used on" in html
    assert "Jing&#x27;an" in html
    assert f"Voucher {voucher.code} used: Free latte" in html
    assert "Mark as used" not in html


def test_without_javascript_using_a_voucher_redirects_to_it(at_counter, voucher):
    response = at_counter.post(VOUCHERS, {"code": voucher.code})

    assert response.status_code == 302
    assert response["Location"] == f"{VOUCHERS}?code={voucher.code}"
    page = at_counter.get(response["Location"]).content.decode()
    assert f"Voucher {voucher.code} used" in page
    assert "Used on" in page


def test_a_second_use_says_when_and_where_it_was_used_and_changes_nothing(client, at_counter, rules, store, voucher):
    at_counter.post(VOUCHERS, {"code": voucher.code}, headers=HTMX)
    voucher.refresh_from_db()
    first = (voucher.used_at, voucher.used_by, voucher.used_store)

    with time_machine.travel(voucher.used_at + dt.timedelta(hours=1)):
        again = at_counter.post(VOUCHERS, {"code": voucher.code}, headers=HTMX)

    assert again.status_code == 200
    assert "HX-Trigger" not in again
    local = voucher.used_at.astimezone(rules.programme.tz).strftime("%Y-%m-%d %H:%M")
    assert f"This voucher was already used on {local} at Jing&#x27;an." in again.content.decode()
    voucher.refresh_from_db()
    assert (voucher.used_at, voucher.used_by, voucher.used_store) == first


def test_an_expired_voucher_says_when_it_expired_and_stays_unused(client, cashier, store, voucher):
    with time_machine.travel(voucher.expires_at + dt.timedelta(minutes=1)):
        at_counter = counter(client, cashier, store)  # a month later: a new login
        shown = at_counter.get(VOUCHERS, {"code": voucher.code})
        refused = at_counter.post(VOUCHERS, {"code": voucher.code}, headers=HTMX)

    assert "Expired on" in shown.content.decode()
    assert "Mark as used" not in shown.content.decode()
    assert refused.status_code == 200
    assert "This voucher expired on" in refused.content.decode()
    voucher.refresh_from_db()
    assert voucher.status == Voucher.Status.ISSUED
    assert voucher.used_at is None


def test_a_cancelled_voucher_says_so(at_counter, manager, voucher):
    catalog.redemption_cancel(redemption=voucher.redemption, by=manager)

    shown = at_counter.get(VOUCHERS, {"code": voucher.code}, headers=HTMX)
    refused = at_counter.post(VOUCHERS, {"code": voucher.code}, headers=HTMX)

    assert "Cancelled" in shown.content.decode()
    assert "This voucher was cancelled." in refused.content.decode()
    voucher.refresh_from_db()
    assert voucher.status == Voucher.Status.CANCELLED


@pytest.mark.parametrize("method", ["get", "post"])
def test_staff_without_the_voucher_permission_are_refused(client, marketer, store, voucher, method):
    response = getattr(counter(client, marketer, store), method)(VOUCHERS, {"code": voucher.code})
    assert response.status_code == 403
    voucher.refresh_from_db()
    assert voucher.status == Voucher.Status.ISSUED


# --- the member panel ---------------------------------------------------------------------


def test_the_member_panel_offers_redeeming_and_a_use_button_for_each_voucher(at_counter, voucher):
    html = at_counter.get(reverse("staff:member", args=[voucher.member.member_number])).content.decode()

    assert rewards_url(voucher.member) in html
    assert f'action="{VOUCHERS}"' in html
    assert f'name="code" value="{voucher.code}"' in html
    assert reverse("staff:member_adjust", args=[voucher.member.member_number]) not in html  # a cashier cannot adjust
