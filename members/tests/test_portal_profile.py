"""The member's own pages: profile (birthday once, consent recorded, language), a phone re-verified by SMS code, the inbox."""

import datetime as dt
import re

import pytest
import time_machine
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from members import services
from members.context_processors import inbox as inbox_context
from members.models import Category, ConsentRecord, Member, Notification
from members.notifications import notify
from members.portal_views import PHONE_CHALLENGE
from members.tests.factories import MemberFactory, StoreFactory, UserFactory

pytestmark = pytest.mark.django_db

PROFILE = reverse("portal:profile")
PHONE = reverse("portal:phone_change")
CONFIRM = reverse("portal:phone_confirm")
INBOX = reverse("portal:inbox")
HTMX = {"HX-Request": "true"}


@pytest.fixture
def user(db):
    return UserFactory(is_staff=False, email="mei@example.com")


@pytest.fixture
def mine(user):
    return MemberFactory(name="Mei", phone="+8613800001111", email="mei@example.com", user=user)


@pytest.fixture
def portal(client, user, mine):
    client.force_login(user)
    return client


def message(member, key, subject_points=50, minutes_ago=0):
    notification = notify(
        member=member, kind="birthday_bonus", key=key, context={"points": subject_points, "year": 2026}, email=False
    )
    Notification.objects.filter(pk=notification.pk).update(created_at=timezone.now() - dt.timedelta(minutes=minutes_ago))
    return notification


# --- access ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", PROFILE),
        ("post", PROFILE),
        ("post", PHONE),
        ("post", CONFIRM),
        ("get", INBOX),
        ("get", reverse("portal:inbox_open", args=[1])),
        ("post", reverse("portal:inbox_read", args=[1])),
    ],
)
def test_every_page_needs_a_login(client, method, url):
    response = getattr(client, method)(url)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))


# --- profile -----------------------------------------------------------------------------------


def profile_data(**overrides):
    data = {"name": "Mei Lin", "preferred_store": "", "language": "en", "sms_consent": "", "email_consent": ""}
    data.update(overrides)
    return {key: value for key, value in data.items() if value != ""}


def test_the_profile_page_shows_the_members_details_and_its_fragment_for_htmx(portal, mine):
    page = portal.get(PROFILE)
    fragment = portal.get(PROFILE, headers=HTMX)

    assert page.status_code == 200
    html = page.content.decode()
    assert 'value="Mei"' in html
    assert "+8613800001111" in html
    assert 'type="date"' in html  # no birthday yet: the member may set it
    assert 'aria-current="page"' in html
    assert ">Profile<" in html
    assert "HX-Request" in page["Vary"]
    assert fragment.status_code == 200
    assert 'id="profile-form"' in fragment.content.decode()
    assert "<nav" not in fragment.content.decode()


def test_saving_the_profile_records_consent_changes_from_the_portal_and_switches_the_language(portal, mine, user):
    store = StoreFactory(code="sh02", name="Xuhui")

    response = portal.post(
        PROFILE, profile_data(preferred_store=store.pk, language="zh-hant", sms_consent="on", birthday="1990-05-04")
    )

    assert response.status_code == 302
    assert response["Location"] == PROFILE
    assert response.cookies[settings.LANGUAGE_COOKIE_NAME].value == "zh-hant"
    mine.refresh_from_db()
    assert (mine.name, mine.preferred_store, mine.language, mine.birthday) == ("Mei Lin", store, "zh-hant", dt.date(1990, 5, 4))
    assert (mine.sms_consent, mine.email_consent) == (True, False)
    record = ConsentRecord.objects.get(member=mine)  # e-mail consent did not change: no record for it
    assert (record.channel, record.granted, record.source, record.recorded_by) == ("sms", True, "portal", user)
    assert "儲存" in portal.get(PROFILE).content.decode()  # the next page comes in Traditional Chinese


def test_a_closed_store_cannot_be_preferred_and_nothing_is_saved(portal, mine):
    closed = StoreFactory(code="old", name="Closed store", is_active=False)

    response = portal.post(PROFILE, profile_data(preferred_store=closed.pk, sms_consent="on"))

    assert response.status_code == 200
    assert "Please check the form" in response.content.decode()
    mine.refresh_from_db()
    assert (mine.name, mine.preferred_store, mine.sms_consent) == ("Mei", None, False)
    assert not ConsentRecord.objects.filter(member=mine).exists()


def test_the_birthday_is_set_once_then_shown_read_only(portal, mine):
    portal.post(PROFILE, profile_data(birthday="1990-05-04"))

    page = portal.get(PROFILE).content.decode()
    portal.post(PROFILE, profile_data(birthday="1991-01-01"))  # not a field any more: ignored

    assert 'type="date"' not in page
    assert "to correct it, ask staff" in page
    mine.refresh_from_db()
    assert mine.birthday == dt.date(1990, 5, 4)


def test_the_service_refuses_changing_a_set_birthday_or_one_in_the_future(mine):
    with pytest.raises(ValidationError) as future:
        services.member_profile_update(
            member=mine,
            name="Mei",
            language="en",
            preferred_store=None,
            email_consent=True,
            sms_consent=False,
            birthday=timezone.localdate() + dt.timedelta(days=1),
        )
    services.member_profile_update(
        member=mine,
        name="Mei",
        language="en",
        preferred_store=None,
        email_consent=False,
        sms_consent=False,
        birthday=dt.date(1990, 5, 4),
    )
    with pytest.raises(ValidationError) as changed:
        services.member_profile_update(
            member=mine,
            name="Someone",
            language="en",
            preferred_store=None,
            email_consent=True,
            sms_consent=False,
            birthday=dt.date(1991, 1, 1),
        )

    assert "birthday" in future.value.message_dict
    assert "ask staff" in changed.value.message_dict["birthday"][0]
    mine.refresh_from_db()
    assert (mine.name, mine.birthday, mine.email_consent) == ("Mei", dt.date(1990, 5, 4), False)
    assert not ConsentRecord.objects.filter(member=mine).exists()


def categories():
    """Return the merchant's categories as the admin would set them up: a retired one is never offered."""
    coffee = Category.objects.create(code="coffee", name_en="Coffee", name_zh_hant="咖啡", position=1)
    tea = Category.objects.create(code="tea", name_en="Tea", name_zh_hant="茶飲", position=2)
    retired = Category.objects.create(code="juice", name_en="Juice", is_active=False)
    return coffee, tea, retired


def test_favourite_categories_are_offered_in_the_members_language_and_saved(portal, mine):
    coffee, tea, _retired = categories()
    mine.favourite_categories.add(tea)

    page = portal.get(PROFILE).content.decode()
    response = portal.post(PROFILE, {**profile_data(), "favourite_categories": [coffee.pk]})
    portal.cookies[settings.LANGUAGE_COOKIE_NAME] = "zh-hant"
    translated = portal.get(PROFILE).content.decode()

    assert "Favourite categories" in page
    assert re.search(rf'value="{tea.pk}"[^>]*checked', page)
    assert not re.search(rf'value="{coffee.pk}"[^>]*checked', page)
    assert "Juice" not in page
    assert response.status_code == 302
    assert list(mine.favourite_categories.all()) == [coffee]
    assert "茶飲" in translated


def test_unticking_every_category_clears_them_and_a_retired_one_is_refused(portal, mine):
    coffee, tea, retired = categories()
    mine.favourite_categories.add(coffee, tea)

    refused = portal.post(PROFILE, {**profile_data(name="Changed"), "favourite_categories": [retired.pk]})
    kept = list(mine.favourite_categories.order_by("position"))
    cleared = portal.post(PROFILE, profile_data())

    assert refused.status_code == 200
    assert "Please check the form" in refused.content.decode()
    assert kept == [coffee, tea]
    mine.refresh_from_db()
    assert cleared.status_code == 302
    assert mine.name == "Mei Lin"
    assert not mine.favourite_categories.exists()


def test_the_service_refuses_a_retired_category_and_saves_nothing(mine):
    coffee, _tea, retired = categories()

    with pytest.raises(ValidationError) as refused:
        services.member_profile_update(
            member=mine,
            name="Someone",
            language="en",
            preferred_store=None,
            email_consent=False,
            sms_consent=False,
            favourite_categories=[coffee, retired],
        )

    assert "favourite_categories" in refused.value.message_dict
    mine.refresh_from_db()
    assert mine.name == "Mei"
    assert not mine.favourite_categories.exists()


def test_without_categories_set_up_the_profile_asks_for_none_and_keeps_what_it_has(portal, mine):
    coffee, _tea, _retired = categories()
    mine.favourite_categories.add(coffee)
    Category.objects.update(is_active=False)

    page = portal.get(PROFILE).content.decode()
    portal.post(PROFILE, profile_data())

    assert "Favourite categories" not in page
    assert list(mine.favourite_categories.all()) == [coffee]


def test_the_profile_page_reads_a_fixed_number_of_queries(portal, mine):
    StoreFactory.create_batch(5, is_active=True)
    coffee, tea, _retired = categories()
    mine.favourite_categories.add(coffee, tea)
    with CaptureQueriesContext(connection) as queries:
        assert portal.get(PROFILE).status_code == 200

    # session, user, terms accepted, member, stores for the select, categories offered (is there one, then the list),
    # the member's favourites, unread count
    assert len(queries) <= 9, "\n".join(q["sql"][:120] for q in queries)


# --- the phone number, re-verified by a code ---------------------------------------------------


def test_a_new_phone_is_stored_only_once_the_texted_code_is_typed_back(portal, mine, sms):
    sent = portal.post(PHONE, {"phone": "139 0000 2222"})

    assert sent.status_code == 302
    assert sms.sent[0][0] == "+8613900002222"
    code = sms.last_code()
    challenge = portal.session[PHONE_CHALLENGE]
    assert code not in str(challenge)  # only a keyed hash of it is kept
    mine.refresh_from_db()
    assert str(mine.phone) == "+8613800001111"
    assert "We sent a code to +8613900002222" in portal.get(PROFILE).content.decode()

    wrong = portal.post(CONFIRM, {"code": "000000" if code != "000000" else "111111"})
    assert wrong.status_code == 200
    assert "This is not the code we sent." in wrong.content.decode()
    assert portal.session[PHONE_CHALLENGE]["attempts"] == 1

    confirmed = portal.post(CONFIRM, {"code": code})
    assert confirmed.status_code == 302
    mine.refresh_from_db()
    assert str(mine.phone) == "+8613900002222"
    assert PHONE_CHALLENGE not in portal.session


def test_the_phone_change_works_in_place_with_htmx(portal, mine, sms):
    sent = portal.post(PHONE, {"phone": "13900002222"}, headers=HTMX)

    assert sent.status_code == 200
    html = sent.content.decode()
    assert 'id="phone"' in html
    assert 'name="code"' in html
    assert 'hx-swap-oob="innerHTML"' in html  # the status message is announced
    assert "<nav" not in html

    confirmed = portal.post(CONFIRM, {"code": sms.last_code()}, headers=HTMX)

    assert confirmed.status_code == 200
    assert "Your phone number is now +8613900002222" in confirmed.content.decode()
    assert 'name="code"' not in confirmed.content.decode()
    mine.refresh_from_db()
    assert str(mine.phone) == "+8613900002222"


def test_five_wrong_codes_use_up_the_code(portal, mine, sms):
    portal.post(PHONE, {"phone": "13900002222"})
    code = sms.last_code()
    wrong = "000000" if code != "000000" else "111111"
    for _try in range(services.PHONE_CODE_ATTEMPTS):
        portal.post(CONFIRM, {"code": wrong})

    late = portal.post(CONFIRM, {"code": code})

    assert late.status_code == 200
    assert "There is no code waiting" in late.content.decode()
    mine.refresh_from_db()
    assert str(mine.phone) == "+8613800001111"


def test_a_code_expires_after_ten_minutes(portal, mine, sms):
    portal.post(PHONE, {"phone": "13900002222"})

    with time_machine.travel(timezone.now() + dt.timedelta(minutes=10, seconds=1)):
        late = portal.post(CONFIRM, {"code": sms.last_code()})

    assert late.status_code == 200
    mine.refresh_from_db()
    assert str(mine.phone) == "+8613800001111"


def test_at_most_three_codes_an_hour_are_sent(portal, mine, sms):
    for number in ("13900002221", "13900002222", "13900002223"):
        portal.post(PHONE, {"phone": number})

    fourth = portal.post(PHONE, {"phone": "13900002224"})

    assert fourth.status_code == 200
    assert "Too many codes were sent" in fourth.content.decode()
    assert len(sms.sent) == 3
    with time_machine.travel(timezone.now() + dt.timedelta(hours=1, minutes=1)):
        assert portal.post(PHONE, {"phone": "13900002224"}).status_code == 302
    assert len(sms.sent) == 4


def test_a_phone_of_another_membership_is_refused_after_the_code_without_saying_whose(portal, mine, sms):
    other = MemberFactory(phone="+8613900002222")
    portal.post(PHONE, {"phone": "13900002222"})

    refused = portal.post(CONFIRM, {"code": sms.last_code()})

    assert refused.status_code == 200
    html = refused.content.decode()
    assert "belongs to another membership" in html
    assert other.member_number not in html
    mine.refresh_from_db()
    assert str(mine.phone) == "+8613800001111"


def test_bad_numbers_the_same_number_and_a_failed_gateway_send_nothing(portal, mine, sms):
    assert "Enter a valid phone number" in portal.post(PHONE, {"phone": "12"}).content.decode()
    assert "already your phone number" in portal.post(PHONE, {"phone": "138 0000 1111"}).content.decode()
    sms.fail = True
    assert "could not be sent" in portal.post(PHONE, {"phone": "13900002222"}).content.decode()

    assert sms.sent == []
    assert PHONE_CHALLENGE not in portal.session


# --- inbox -------------------------------------------------------------------------------------


def test_the_inbox_lists_the_members_own_messages_newest_first_unread_marked(portal, mine):
    old = message(mine, "old", subject_points=10, minutes_ago=10)
    new = message(mine, "new", subject_points=20, minutes_ago=1)
    Notification.objects.filter(pk=old.pk).update(read_at=timezone.now())
    message(MemberFactory(name="Someone Else"), "someone-else")

    page = portal.get(INBOX)
    fragment = portal.get(INBOX, headers=HTMX)

    html = page.content.decode()
    assert page.status_code == 200
    assert html.index(f"notification-{new.pk}") < html.index(f"notification-{old.pk}")
    assert f'id="notification-{new.pk}" class="unread"' in html
    assert f'id="notification-{old.pk}">' in html
    assert "Someone Else" not in html
    assert "Inbox (1)" in html
    assert "HX-Request" in page["Vary"]
    assert 'id="inbox-list"' in fragment.content.decode()
    assert "<nav class" not in fragment.content.decode()


def test_the_inbox_is_paginated(portal, mine):
    for i in range(25):
        message(mine, f"m{i}", minutes_ago=i)

    first = portal.get(INBOX).content.decode()
    second = portal.get(INBOX, {"page": 2}).content.decode()

    assert first.count('<li id="notification-') == 20
    assert second.count('<li id="notification-') == 5
    assert "Page 2 of 2" in second


def test_opening_a_message_marks_it_read_and_updates_the_count(portal, mine):
    first = message(mine, "first")
    message(mine, "second")

    page = portal.get(reverse("portal:inbox_open", args=[first.pk]))

    assert page.status_code == 200
    html = page.content.decode()
    assert first.body.splitlines()[0] in html
    assert "Inbox (1)" in html
    first.refresh_from_db()
    assert first.read_at is not None


def test_opening_a_message_with_htmx_swaps_it_in_and_refreshes_the_list_item_and_the_count(portal, mine):
    first = message(mine, "first")

    fragment = portal.get(reverse("portal:inbox_open", args=[first.pk]), headers=HTMX)

    html = fragment.content.decode()
    assert 'id="message"' in html
    assert f'id="notification-{first.pk}" hx-swap-oob="true"' in html
    assert 'id="inbox-link"' in html
    assert "Inbox (0)" in html
    assert "<nav class" not in html


def test_mark_as_read_without_opening(portal, mine):
    first = message(mine, "first")
    second = message(mine, "second")

    plain = portal.post(reverse("portal:inbox_read", args=[first.pk]), {"page": "1"})
    fragment = portal.post(reverse("portal:inbox_read", args=[second.pk]), headers=HTMX)

    assert plain.status_code == 302
    assert plain["Location"] == f"{INBOX}?page=1"
    assert fragment.status_code == 200
    assert "Inbox (0)" in fragment.content.decode()
    assert 'class="unread"' not in fragment.content.decode()
    assert Notification.objects.filter(member=mine, read_at__isnull=True).count() == 0


def test_another_members_message_is_not_found_and_stays_unread(portal):
    theirs = message(MemberFactory(), "theirs")

    assert portal.get(reverse("portal:inbox_open", args=[theirs.pk])).status_code == 404
    assert portal.post(reverse("portal:inbox_read", args=[theirs.pk])).status_code == 404
    theirs.refresh_from_db()
    assert theirs.read_at is None


def test_the_inbox_reads_a_fixed_number_of_queries(portal, mine):
    for i in range(5):
        message(mine, f"m{i}", minutes_ago=i)
    with CaptureQueriesContext(connection) as few:
        portal.get(INBOX)
    for i in range(5, 20):
        message(mine, f"m{i}", minutes_ago=i)
    with CaptureQueriesContext(connection) as many:
        portal.get(INBOX)

    assert len(few) == len(many)
    # session, user, member, terms check, count, page, unread count
    assert len(many) <= 7, [q["sql"] for q in many]


# --- the unread count in the header ---------------------------------------------------------------


def test_the_unread_count_is_one_query_and_only_when_a_page_shows_it(user, mine):
    message(mine, "a")
    message(mine, "b")
    request = RequestFactory().get("/")
    request.user = user

    with CaptureQueriesContext(connection) as unused:
        context = inbox_context(request)
    with CaptureQueriesContext(connection) as shown:
        assert str(context["inbox_unread"]) == "2"

    assert len(unused) == 0
    assert len(shown) == 1


def test_the_unread_count_uses_the_member_the_portal_found(user, mine):
    message(mine, "a")
    request = RequestFactory().get("/")
    request.user, request.member = user, mine

    assert str(inbox_context(request)["inbox_unread"]) == "1"


def test_no_count_for_anonymous_visitors_nor_for_a_closed_membership(user, mine):
    message(mine, "a")
    anonymous = RequestFactory().get("/")
    anonymous.user = type("Anonymous", (), {"is_authenticated": False})()
    Member.objects.filter(pk=mine.pk).update(status=Member.Status.CLOSED)
    request = RequestFactory().get("/")
    request.user = user

    assert inbox_context(anonymous) == {}
    assert str(inbox_context(request)["inbox_unread"]) == "0"


# --- logging in ---------------------------------------------------------------------------------


def test_logging_in_switches_to_the_language_of_the_members_profile_and_lands_on_the_portal(client, user, mine):
    from allauth.account.models import EmailAddress

    from conftest_e2e import STAFF_PASSWORD

    EmailAddress.objects.create(user=user, email=user.email, verified=True, primary=True)
    Member.objects.filter(pk=mine.pk).update(language="ko")

    response = client.post(reverse("account_login"), {"login": user.email, "password": STAFF_PASSWORD})
    landing = client.get(response["Location"])

    assert response.status_code == 302
    assert response.cookies[settings.LANGUAGE_COOKIE_NAME].value == "ko"
    assert landing.status_code == 302
    assert landing["Location"] == reverse("portal:home")


def test_staff_land_on_the_counter_and_visitors_on_the_welcome_page(client, cashier):
    welcome = client.get(reverse("home"))
    client.force_login(cashier)
    staff = client.get(reverse("home"))

    assert welcome.status_code == 200
    assert staff["Location"] == reverse("staff:find")
    assert settings.LANGUAGE_COOKIE_NAME not in staff.cookies


def test_head_office_staff_without_a_store_land_on_the_administration(client, roles):
    client.force_login(UserFactory(role="Marketer"))

    assert client.get(reverse("home"))["Location"] == reverse("admin:index")
