"""Privacy in the portal: all my data as a zip of JSON and CSV, and closing my account for good."""

import csv
import datetime as dt
import io
import json
import zipfile

import pytest
import time_machine
from allauth.account.models import EmailAddress
from django.contrib.auth import SESSION_KEY
from django.core import serializers
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from members import services as member_services
from members.models import Category, ConsentRecord, IdempotentRequest, Member, Notification, User
from members.notifications import notify
from members.tests.factories import MemberFactory, UserFactory
from rewards import catalog, services
from rewards.explanations import explain
from rewards.models import LedgerEntry, PointsAccount, ProgrammeRules, Purchase, Redemption, Reward, TermsVersion, Voucher
from rewards.privacy import member_account_close, member_data_export
from rewards.selectors import ledger_drift
from rewards.tests.test_concurrency import run_at_once, unexpected

pytestmark = pytest.mark.django_db

PRIVACY = reverse("portal:privacy")
EXPORT = reverse("portal:privacy_export")
CLOSE = reverse("portal:privacy_close")
HTMX = {"HX-Request": "true"}
PASSWORD = "correct-horse-battery"


@pytest.fixture
def user(db):
    return UserFactory(is_staff=False, email="mei.lin@example.com", name="Mei Lin")


@pytest.fixture
def mine(rules, user, store):
    """A member with everything a member can have: points available and pending, a voucher, messages, consent."""
    member = MemberFactory(
        name="Mei Lin",
        phone="+8613800007777",
        email="mei.lin@example.com",
        birthday=dt.date(1990, 5, 4),
        external_ref="CRM-7777",
        email_consent=True,
        sms_consent=True,
        user=user,
    )
    Member.objects.filter(pk=member.pk).update(notes="oat milk, no sugar")
    member.favourite_categories.add(Category.objects.create(code="tea", name_en="Tea"))
    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    terms = TermsVersion.objects.create(programme=rules.programme, version="2026.1", published_at=timezone.now())
    services.terms_accept(member=member, channel=Member.Channel.ONLINE, terms=terms)
    services.purchase_record(store=store, receipt_number="R-1", amount="300", member=member)
    services.purchase_return(purchase=Purchase.objects.get(receipt_number="R-1"), return_number="X-1", amount="50")
    reward = Reward.objects.create(
        programme=rules.programme, kind=Reward.Kind.FREE_ITEM, title="Free latte", points_cost=100, stock=5
    )
    catalog.redemption_create(member=member, reward=reward)
    # Points still on their way: a new version of the rules holds them for a return window.
    ProgrammeRules.objects.create(
        programme=rules.programme, effective_from=timezone.now() - dt.timedelta(seconds=1), pending_days=14, expiry_months=12
    )
    services.purchase_record(store=store, receipt_number="R-2", amount="40", member=member)
    return member


@pytest.fixture
def portal(client, user, mine):
    client.force_login(user)
    return client


def archive(response) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content) if response.streaming else response.content))


def read_csv(zipped: zipfile.ZipFile, name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(zipped.read(name).decode("utf-8-sig"))))


# --- access -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "url"), [("get", PRIVACY), ("get", EXPORT), ("post", CLOSE)])
def test_every_privacy_page_needs_a_login(client, method, url):
    response = getattr(client, method)(url)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))


def test_the_privacy_page_offers_the_download_and_closing_and_its_fragment_for_htmx(portal):
    page = portal.get(PRIVACY)
    fragment = portal.get(PRIVACY, headers=HTMX)

    html = page.content.decode()
    assert page.status_code == 200
    assert EXPORT in html
    assert f'action="{CLOSE}"' in html
    assert 'autocomplete="current-password"' in html
    assert "HX-Request" in page["Vary"]
    assert 'id="close"' in fragment.content.decode()
    assert "<nav class" not in fragment.content.decode()


# --- download all my data ------------------------------------------------------------------------


def test_the_download_holds_all_my_data_as_json_and_csv_and_nothing_of_anyone_else(portal, mine, store):
    other = MemberFactory(name="Someone Else")
    services.purchase_record(store=store, receipt_number="R-OTHER", amount="999", member=other)
    notify(member=mine, kind="birthday_bonus", key="b:2026", context={"points": 50, "year": 2026}, email=False)

    response = portal.get(EXPORT)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"].startswith(f'attachment; filename="my-data-{mine.member_number}-')
    zipped = archive(response)
    names = set(zipped.namelist())
    assert names == {
        "my-data.json",
        "profile.csv",
        "points.csv",
        "consent_records.csv",
        "notifications.csv",
        "purchases.csv",
        "purchase_lines.csv",
        "returns.csv",
        "ledger.csv",
        "vouchers.csv",
        "redemptions.csv",
        "tier_changes.csv",
        "stamp_events.csv",
        "terms_acceptances.csv",
    }
    data = json.loads(zipped.read("my-data.json"))
    assert data["profile"]["name"] == "Mei Lin"
    assert data["profile"]["phone"] == "+8613800007777"
    assert data["profile"]["birthday"] == "1990-05-04"
    assert data["profile"]["favourite_categories"] == "tea"
    assert "notes" not in data["profile"]  # staff notes are never shown to the member
    assert [p["receipt_number"] for p in data["purchases"]] == ["R-1", "R-2"]
    assert data["returns"][0]["return_number"] == "X-1"
    assert {c["channel"] for c in data["consent_records"]} == {"email", "sms"}
    assert "Happy birthday, Mei Lin!" in [n["subject"] for n in data["notifications"]]
    assert data["vouchers"][0]["reward"] == "Free latte"
    assert data["redemptions"][0]["points"] == 100
    assert data["terms_acceptances"][0]["version"] == "2026.1"
    assert "Receipt R-1: CN¥300.00 × 1 pt per CN¥1 = 300 pts" in [e["explanation"] for e in data["ledger"]]
    ledger = read_csv(zipped, "ledger.csv")
    assert [row["explanation"] for row in ledger] == [e["explanation"] for e in data["ledger"]]
    assert read_csv(zipped, "tier_changes.csv") == []
    assert zipped.read("tier_changes.csv").decode("utf-8-sig").startswith("created_at,from_tier,to_tier,reason")
    everything = b"".join(zipped.read(name) for name in names).decode("utf-8", "replace")
    assert "Someone Else" not in everything
    assert "R-OTHER" not in everything


def test_the_download_is_written_in_the_language_being_shown(portal, mine):
    portal.cookies["django_language"] = "zh-hans"

    data = json.loads(archive(portal.get(EXPORT)).read("my-data.json"))

    assert data["ledger"][0]["kind"] == "消费获得"
    assert data["ledger"][0]["explanation"].startswith("小票 R-1：")


# --- closing my account --------------------------------------------------------------------------


def personal_strings() -> list[str]:
    return ["Mei Lin", "mei.lin", "8613800007777", "13800007777", "1990-05-04", "CRM-7777", "oat milk"]


def rows_about(member: Member) -> str:
    """Serialise the member's row and every row about them, as a grep of the database would read them."""
    member = Member.objects.get(pk=member.pk)
    user = User.objects.filter(pk=member.user_id)
    objects = [
        member,
        *user,
        *member.consent_records.all(),
        *Notification.objects.filter(member=member),
        *EmailAddress.objects.filter(user_id=member.user_id),
        *member.terms_acceptances.all(),
        *member.purchases.all(),
        *member.vouchers.all(),
        *member.redemptions.all(),
        *LedgerEntry.objects.filter(account_id=member.pk),
        *IdempotentRequest.objects.all(),
    ]
    return serializers.serialize("json", objects)


def test_closing_needs_the_password_and_the_confirmation_and_writes_nothing_without(portal, mine):
    before = rows_about(mine)

    wrong = portal.post(CLOSE, {"password": "not-it", "confirm": "on"})
    unticked = portal.post(CLOSE, {"password": PASSWORD}, headers=HTMX)

    assert wrong.status_code == 200
    assert "This is not your password." in wrong.content.decode()
    assert unticked.status_code == 200
    assert "Tick this box" in unticked.content.decode()
    assert 'id="close"' in unticked.content.decode()
    assert rows_about(mine) == before
    assert portal.get(PRIVACY).status_code == 200  # still logged in


def test_five_wrong_passwords_stop_the_guessing_for_an_hour(portal, mine):
    cache.clear()
    for _try in range(5):
        portal.post(CLOSE, {"password": "guess", "confirm": "on"})

    refused = portal.post(CLOSE, {"password": PASSWORD, "confirm": "on"})

    assert "Too many wrong passwords" in refused.content.decode()
    mine.refresh_from_db()
    assert mine.status == Member.Status.ACTIVE
    with time_machine.travel(timezone.now() + dt.timedelta(hours=1, minutes=1)):
        assert portal.post(CLOSE, {"password": PASSWORD, "confirm": "on"}).status_code == 302
    mine.refresh_from_db()
    assert mine.status == Member.Status.CLOSED


def test_closing_my_account_erases_me_keeps_the_books_and_ends_the_login(portal, mine, user, client):
    account = PointsAccount.objects.get(member=mine)
    assert account.available > 0
    assert account.pending > 0
    voucher = Voucher.objects.get(member=mine)
    old_card = mine.card_code
    notify(member=mine, kind="birthday_bonus", key="b:2026", context={"points": 50, "year": 2026}, email=False)
    forfeited = account.available + account.pending

    response = portal.post(CLOSE, {"password": PASSWORD, "confirm": "on"})

    assert response.status_code == 302
    assert response["Location"] == reverse("home")
    assert SESSION_KEY not in portal.session
    # Nothing personal remains, in the member's row or any row about them.
    dump = rows_about(mine)
    for text in personal_strings():
        assert text not in dump, text
    mine.refresh_from_db()
    assert mine.status == Member.Status.CLOSED
    assert (mine.name, mine.phone, mine.birthday, mine.notes, mine.external_ref) == ("", None, None, "", "")
    assert mine.email == ""
    assert not mine.favourite_categories.exists()
    assert mine.card_code != old_card
    assert not Notification.objects.filter(member=mine).exists()
    assert (mine.email_consent, mine.sms_consent) == (False, False)
    withdrawn = ConsentRecord.objects.filter(member=mine, granted=False, source="account closed")
    assert sorted(withdrawn.values_list("channel", flat=True)) == ["email", "sms"]
    # The books: purchases and the ledger kept, the points forfeited with an explained entry.
    assert Purchase.objects.filter(member=mine).count() == 2
    entry = LedgerEntry.objects.get(account_id=mine.pk, kind=LedgerEntry.Kind.ADJUSTMENT)
    assert (entry.points, entry.reason, entry.actor) == (-forfeited, "Account closed", None)
    assert explain(entry) == f"Forfeited when the account was closed: {forfeited:,} pts"
    account.refresh_from_db()
    assert (account.available, account.pending) == (0, 0)
    assert ledger_drift() == []
    voucher.refresh_from_db()
    assert voucher.status == Voucher.Status.CANCELLED
    assert Redemption.objects.get(member=mine).status == Redemption.Status.REDEEMED  # no points back
    assert Reward.objects.get().stock == 5  # the latte was never handed over
    # The login is gone.
    user.refresh_from_db()
    assert not user.is_active
    assert not user.has_usable_password()
    assert user.email.endswith("@closed.invalid")
    assert not client.login(username="mei.lin@example.com", password=PASSWORD)
    login = client.post(reverse("account_login"), {"login": "mei.lin@example.com", "password": PASSWORD})
    assert login.status_code == 200
    assert SESSION_KEY not in client.session
    assert portal.get(reverse("portal:home"))["Location"].startswith(reverse("account_login"))


def test_closing_with_htmx_sends_the_browser_home(portal, mine):
    response = portal.post(CLOSE, {"password": PASSWORD, "confirm": "on"}, headers=HTMX)

    assert response.status_code == 200
    assert response["HX-Redirect"] == reverse("home")
    mine.refresh_from_db()
    assert mine.status == Member.Status.CLOSED


def test_closing_twice_changes_nothing_more(mine, user):
    member_account_close(member=mine, user=user)
    entries = LedgerEntry.objects.count()
    records = ConsentRecord.objects.count()

    member_account_close(member=Member.objects.get(pk=mine.pk), user=user)

    assert LedgerEntry.objects.count() == entries
    assert ConsentRecord.objects.count() == records
    assert ledger_drift() == []


def test_a_member_without_points_closes_without_a_ledger_entry(rules):
    member = MemberFactory(name="Nobody Special")

    member_account_close(member=member, user=UserFactory(is_staff=False))

    member.refresh_from_db()
    assert member.status == Member.Status.CLOSED
    assert not LedgerEntry.objects.exists()
    assert ledger_drift() == []


def test_a_return_after_closing_owes_nothing_for_forfeited_points(mine, user):
    member_account_close(member=mine, user=user)

    services.purchase_return(purchase=Purchase.objects.get(receipt_number="R-2"), return_number="X-2", amount="40")

    account = PointsAccount.objects.get(member=mine)
    assert (account.available, account.pending, account.owed) == (0, 0, 0)
    assert ledger_drift() == []


def test_an_api_answer_kept_for_retries_loses_the_personal_data(rules, store):
    member = MemberFactory(name="Wang Fang", phone="+8613800008888", email="")
    IdempotentRequest.objects.create(
        store=store,
        key="key:abc",
        request_hash="0" * 64,
        status_code=201,
        response={"member_number": member.member_number, "name": "Wang Fang", "phone": "+8613800008888", "email": ""},
    )

    member_services.member_close(member=member)

    answer = IdempotentRequest.objects.get().response
    assert answer["member_number"] == member.member_number
    assert "Wang Fang" not in json.dumps(answer)
    assert "8888" not in json.dumps(answer)


def test_the_download_of_a_closed_member_holds_nothing_personal(mine, user):
    member_account_close(member=mine, user=user)

    zipped = zipfile.ZipFile(io.BytesIO(member_data_export(Member.objects.get(pk=mine.pk))))

    everything = b"".join(zipped.read(name) for name in zipped.namelist()).decode("utf-8", "replace")
    for text in personal_strings():
        assert text not in everything, text


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_closing_while_redeeming_leaves_no_points_no_usable_voucher_and_no_drift(rules, store):
    # Given a member with points for 7 lattes, and a user for their login
    user = UserFactory(is_staff=False)
    member = MemberFactory(user=user)
    services.purchase_record(store=store, receipt_number="R-1", amount="300", member=member)
    reward = Reward.objects.create(programme=rules.programme, kind=Reward.Kind.FREE_ITEM, title="Latte", points_cost=40)

    # When 12 redemptions and 4 closings of the account arrive at once
    def work(i: int) -> object:
        mine = Member.objects.get(pk=member.pk)
        if i % 4 == 0:
            return member_account_close(member=mine, user=user)
        return catalog.redemption_create(member=mine, reward=reward)

    outcomes = run_at_once(16, work)

    # Then the account was closed once, with nothing left to spend and no voucher left to use
    assert unexpected(outcomes, services.InsufficientPoints, catalog.RewardUnavailable) == []
    assert all(o.error is None for i, o in enumerate(outcomes) if i % 4 == 0)
    assert Member.objects.get(pk=member.pk).status == Member.Status.CLOSED
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.ADJUSTMENT).count() == 1  # 20 points at least were left
    account = PointsAccount.objects.get(member=member)
    assert (account.available, account.pending) == (0, 0)
    assert not Voucher.objects.filter(status=Voucher.Status.ISSUED).exists()
    assert ConsentRecord.objects.filter(member=member, source="account closed").count() == 2
    assert ledger_drift() == []
