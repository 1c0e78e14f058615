"""Every portal page in 简体中文, 繁體中文 and 한국어: no English left; dates, numbers and money as readers write them.

A member whose data makes every section of every page appear is shown each page and fragment in their
language; the visible text (and the attributes a screen reader speaks) may hold no English word but the
proper names and codes of the test data and a short list of tokens those languages really write in Latin letters.
"""

import datetime as dt
import re
import uuid
import zoneinfo
from dataclasses import dataclass
from decimal import Decimal
from html.parser import HTMLParser
from types import SimpleNamespace

import pytest
import time_machine
from django.conf import settings
from django.test import Client
from django.urls import reverse

from conftest_e2e import STAFF_PASSWORD, email_verify
from members.models import Member, Notification
from members.tests.factories import MemberFactory, StoreFactory, UserFactory
from referrals import services as referrals
from rewards import catalog, services
from rewards.models import Programme, ProgrammeRules, Reward, StampProgramme, TermsText, TermsVersion, Tier, Voucher

pytestmark = pytest.mark.django_db

LANGUAGES = ["zh-hans", "zh-hant", "ko"]
SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
# A fixed moment, so the dates shown can be read back exactly: 15 March 2026, midday in Shanghai.
NOW = dt.datetime(2026, 3, 15, 12, 0, tzinfo=SHANGHAI)
HTMX = {"HTTP_HX_REQUEST": "true"}
UNKNOWN_KIND = "nonsense"

# What a merchant types in the admin, in each language (modeltranslation's columns).
WORDS = {
    "silver": {"en": "Silver", "zh-hans": "银卡", "zh-hant": "銀卡", "ko": "실버"},
    "silver_perks": {"en": "Free size upgrade", "zh-hans": "免费升杯", "zh-hant": "免費升杯", "ko": "무료 사이즈 업"},
    "gold": {"en": "Gold", "zh-hans": "金卡", "zh-hant": "金卡", "ko": "골드"},
    "gold_perks": {
        "en": "A drink on us each month",
        "zh-hans": "每月一杯免费饮品",
        "zh-hant": "每月一杯免費飲品",
        "ko": "매달 음료 한 잔 무료",
    },
    "latte": {"en": "Free latte", "zh-hans": "免费拿铁", "zh-hant": "免費拿鐵", "ko": "무료 라떼"},
    "latte_text": {"en": "Any size", "zh-hans": "任意杯型", "zh-hant": "任意杯型", "ko": "모든 사이즈"},
    "cake": {"en": "Slice of cake", "zh-hans": "蛋糕一块", "zh-hant": "蛋糕一塊", "ko": "케이크 한 조각"},
    "lounge": {"en": "Tasting evening", "zh-hans": "品鉴之夜", "zh-hant": "品鑑之夜", "ko": "시음의 밤"},
    "grinder": {"en": "Coffee grinder", "zh-hans": "咖啡磨豆机", "zh-hant": "咖啡磨豆機", "ko": "커피 그라인더"},
    "stamp_card": {"en": "Coffee card", "zh-hans": "咖啡集章卡", "zh-hant": "咖啡集章卡", "ko": "커피 스탬프 카드"},
    "terms": {
        "en": "Points have no cash value.",
        "zh-hans": "积分不可兑换现金。",
        "zh-hant": "積分不可兌換現金。",
        "ko": "포인트는 현금으로 바꿀 수 없습니다.",
    },
    "adjustment": {"en": "Missed stamp", "zh-hans": "补记漏盖的印章", "zh-hant": "補記漏蓋的印章", "ko": "누락된 적립 보정"},
}

# Latin-letter tokens each language really writes as they are, as its own shops and apps do.
SAME_IN_LANGUAGE = {
    "zh-hans": {"QR"},  # "QR码": the code's own name
    "zh-hant": {"QR"},  # "QR碼"
    # "QR 코드"; text messages are "SMS" in Korean; points are written "1,200P".
    "ko": {"QR", "SMS", "P"},
}
# In every language: the file formats the privacy page names, and the header's switcher, which names each
# language in itself so a reader finds their own.
EVERYWHERE = {"CSV", "JSON", "zip", "English"}


def columns(field: str, key: str) -> dict[str, str]:
    """Return a translated field's modeltranslation columns (title_en, title_zh_hans, ...) filled from WORDS."""
    return {f"{field}_{code.replace('-', '_')}": text for code, text in WORDS[key].items()}


@dataclass
class Walk:
    """The logged-in member's things the pages link to, and the names and codes their pages may show in Latin letters."""

    client: Client
    referral_code: str
    voucher: Voucher
    notification: Notification
    rewards: dict[str, Reward]
    proper_names: list[str]


def programme_in_every_language(now: dt.datetime) -> tuple[dict[str, Reward], TermsVersion]:
    """Set up rules, tiers, rewards, a stamp card and terms as a merchant does, in the four languages."""
    rules = ProgrammeRules.objects.create(
        programme=Programme.objects.create(name="Morning Light", currency="CNY", timezone="Asia/Shanghai"),
        effective_from=now - dt.timedelta(days=3650),
        points_per_unit=Decimal(1),
        pending_days=7,
        claim_days=30,
        expiry_policy=ProgrammeRules.Expiry.MONTHS,
        expiry_months=12,
        expiry_reminder_days=30,
        minimum_purchase=Decimal(5),
        min_redemption_points=50,
        birthday_bonus_points=100,
        refund_expired_vouchers=True,
    )
    programme = rules.programme
    Tier.objects.create(
        programme=programme,
        code="silver",
        rank=1,
        entry_threshold=Decimal(1000),
        retain_threshold=Decimal(500),
        earn_multiplier=Decimal("1.5"),
        birthday_bonus_points=200,
        **columns("name", "silver"),
        **columns("perks", "silver_perks"),
    )
    gold = Tier.objects.create(
        programme=programme,
        code="gold",
        rank=2,
        entry_threshold=Decimal(5000),
        retain_threshold=Decimal(5000),
        earn_multiplier=Decimal(2),
        window=Tier.Window.CALENDAR_YEAR,  # so the home page says by when
        **columns("name", "gold"),
        **columns("perks", "gold_perks"),
    )
    reward = {"programme": programme, "kind": Reward.Kind.FREE_ITEM, "voucher_valid_days": 30}
    rewards = {
        "latte": Reward.objects.create(
            points_cost=100, **reward, **columns("title", "latte"), **columns("description", "latte_text")
        ),
        "cake": Reward.objects.create(points_cost=300, **reward, **columns("title", "cake")),
        "lounge": Reward.objects.create(points_cost=200, min_tier=gold, **reward, **columns("title", "lounge")),
        "grinder": Reward.objects.create(points_cost=20_000, **reward, **columns("title", "grinder")),
    }
    StampProgramme.objects.create(programme=programme, stamps_needed=8, reward=rewards["latte"], **columns("name", "stamp_card"))
    terms = TermsVersion.objects.create(programme=programme, version="2026.1", published_at=now - dt.timedelta(days=90))
    TermsText.objects.bulk_create(TermsText(terms=terms, language=code, body=text) for code, text in WORDS["terms"].items())
    return rewards, terms


def member_with_everything(client: Client, language: str, *, now: dt.datetime = NOW) -> Walk:
    """Give a member of this language every kind of history, a tier on the way to the next, a voucher, stamps and messages,
    and log the client in as them, reading the portal in that language.
    """
    store = StoreFactory(code="sh01", name="Jing'an")
    rewards, terms = programme_in_every_language(now)
    manager = UserFactory(role="Programme admin", stores=[store])
    user = UserFactory(is_staff=False, email="mei.lin@example.com", name="Mei Lin")
    mei = MemberFactory(name="Mei Lin", email=user.email, language=language, store=store)
    Member.objects.filter(pk=mei.pk).update(user=user)
    services.terms_accept(member=mei, channel=Member.Channel.ONLINE, terms=terms)

    def buy(receipt: str, amount: str, days_ago: int):
        occurred = now - dt.timedelta(days=days_ago)
        return services.purchase_record(store=store, receipt_number=receipt, amount=amount, member=mei, occurred_at=occurred)

    # Points earned long ago and expired; points spendable, partly returned; a purchase as Silver still pending.
    buy("R-1001", "500", days_ago=400)
    spendable = buy("R-1002", "1200", days_ago=30).purchase  # crosses Silver's 1,000: a tier-up message
    services.points_release_due(now=now)
    services.points_expire_due(now=now)
    services.purchase_return(purchase=spendable, return_number="RT-2001", amount="200")
    buy("R-1003", "800", days_ago=0)  # × 1.5 as Silver, pending for 7 days
    services.points_adjust(member=mei, points=50, reason=WORDS["adjustment"][language], by=manager)
    redemption = catalog.redemption_create(member=mei, reward=rewards["cake"], via="portal")  # a voucher message
    # A friend who joined with Mei's invitation and qualified with a first purchase: the rewards are held.
    offer = referrals.settings_get()
    offer.referrer_points, offer.friend_points, offer.qualifying_amount = 200, 100, Decimal(30)
    offer.save()
    code = referrals.referral_code_for(mei).code
    friend = MemberFactory(name="Wei Zhang", language=language, referral_code=code)
    services.purchase_record(store=store, receipt_number="R-3001", amount="50", member=friend, occurred_at=now)

    # Logging in switches the site to the language of the member's profile.
    email_verify(user)
    logged_in = client.post(reverse("account_login"), {"login": user.email, "password": STAFF_PASSWORD})
    assert logged_in.status_code == 302, logged_in.content.decode()
    assert client.cookies[settings.LANGUAGE_COOKIE_NAME].value == language
    notification = mei.notifications.order_by("pk").first()
    assert notification is not None
    voucher = redemption.voucher
    names = [
        "Mei Lin",  # the member
        "Mei",  # her first name, as her invitation shows her to a friend
        "Wei",  # the friend she invited, by their first name
        user.email,  # their login, shown on the profile
        "Jing'an",  # the store
        "Morning Light",  # the brand
    ]
    codes = [
        voucher.code,
        mei.member_number,
        mei.card_code,
        " ".join(mei.card_code[i : i + 4] for i in range(0, len(mei.card_code), 4)),  # the card's code as printed
        "R-1001",
        "R-1002",
        "R-1003",
        "RT-2001",  # receipt and return numbers
        code,
        f"http://testserver/join/{code}/",  # her invitation: the referral code, and the link that carries it
        "LINE",
        "KakaoTalk",  # the chat apps the invitation is shared by, by their own names
        "sh01",  # the store's code, shown with its name in the profile's choice of store
        UNKNOWN_KIND,  # the member's own input, which the history's filter echoes in refusing it
        "CN¥",  # the programme's currency, as CLDR writes it in zh-Hant and ko
        terms.version,
    ]
    return Walk(
        client=client,
        referral_code=code,
        voucher=voucher,
        notification=notification,
        rewards=rewards,
        proper_names=names + codes,
    )


# --- reading a page as its reader sees it ------------------------------------------------


class VisibleText(HTMLParser):
    """Collect the text a reader sees or hears: text nodes and the attributes browsers show or speak."""

    SPOKEN = {"aria-label", "title", "placeholder", "alt"}
    BUTTONS = {"submit", "button", "reset"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._hidden += 1
            return
        values = dict(attrs)
        self.chunks.extend(value for name, value in attrs if name in self.SPOKEN and value)
        if tag == "input" and values.get("type") in self.BUTTONS and values.get("value"):
            self.chunks.append(values["value"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden and data.strip():
            self.chunks.append(data)


def visible_text(html: str) -> list[str]:
    parser = VisibleText()
    parser.feed(html)
    parser.close()
    return parser.chunks


ENGLISH_RUN = re.compile(r"[A-Za-z]+(?:['’-][A-Za-z]+)*(?:[\s,.;:!?()&/]+[A-Za-z]+(?:['’-][A-Za-z]+)*)*")


def english_left(html: str, *, language: str, proper_names: list[str]) -> list[str]:
    """Return every run of English words in the page's visible text, but the allowed names, codes and tokens."""
    allowed = SAME_IN_LANGUAGE[language] | EVERYWHERE
    # Longest first, so a name is taken out whole before a shorter one inside it.
    names = sorted(proper_names, key=len, reverse=True)
    found = []
    for chunk in visible_text(html):
        for name in names:
            chunk = chunk.replace(name, " ")
        for run in ENGLISH_RUN.findall(chunk):
            if any(word not in allowed for word in re.findall(r"[A-Za-z]+(?:['’-][A-Za-z]+)*", run)):
                found.append(run)
    return found


# Chinese closes its sentences and clauses with full-width marks: a half-width one after a Chinese character is
# English punctuation left around a translated string ("升至金卡." instead of "升至金卡。").
HALF_WIDTH_AFTER_HAN = re.compile(r"[\u3400-\u9fff][.,:;!?)]|[(][\u3400-\u9fff]")


def half_width_punctuation(html: str, *, language: str) -> list[str]:
    """Return each half-width mark written against Chinese text, with the character it touches."""
    if not language.startswith("zh"):
        return []  # Korean writes the same marks as English
    return [match for chunk in visible_text(html) for match in HALF_WIDTH_AFTER_HAN.findall(chunk)]


# Pages whose messages come from Django's and allauth's own catalogues, with their punctuation
# ("請選擇有效的項目, ...", "密碼(再次輸入)"): their words are checked, not their marks.
WORDED_BY_LIBRARIES = {"history of an unknown kind", "login", "signup"}


def pages(walk: Walk) -> list[tuple[str, str, dict[str, str]]]:
    """Return (name, url, headers) for every page and fragment a member's GET can show."""
    rewards = reverse("portal:rewards")
    history = reverse("portal:history")
    opened = reverse("portal:inbox_open", args=[walk.notification.pk])
    return [
        ("home", reverse("portal:home"), {}),
        ("card", reverse("portal:card"), {}),
        ("history", history, {}),
        ("history of earned points", f"{history}?kind=earn", {}),
        ("history of earned points, fragment", f"{history}?kind=earn", HTMX),
        ("history of an unknown kind", f"{history}?kind={UNKNOWN_KIND}", {}),
        ("rewards", rewards, {}),
        ("redeem: confirm", f"{rewards}?reward={walk.rewards['latte'].pk}", {}),
        ("redeem: confirm, fragment", f"{rewards}?reward={walk.rewards['latte'].pk}", HTMX),
        ("redeem: locked by tier", f"{rewards}?reward={walk.rewards['lounge'].pk}", {}),
        ("redeem: more points needed, fragment", f"{rewards}?reward={walk.rewards['grinder'].pk}", HTMX),
        ("voucher", reverse("portal:voucher", args=[walk.voucher.code]), {}),
        ("how it works", reverse("portal:how"), {}),
        ("profile", reverse("portal:profile"), {}),
        ("profile, fragment", reverse("portal:profile"), HTMX),
        ("inbox", reverse("portal:inbox"), {}),
        ("inbox, fragment", reverse("portal:inbox"), HTMX),
        ("message", opened, {}),
        ("message, fragment", opened, HTMX),
        ("privacy", reverse("portal:privacy"), {}),
        ("privacy, fragment", reverse("portal:privacy"), HTMX),
        ("terms", reverse("portal:terms"), {}),
        ("invite friends", reverse("portal:invite"), {}),
        ("invite friends, fragment", reverse("portal:invite"), HTMX),
    ]


# The browser's own Accept-Language for a visitor not logged in: the portal follows it.
BROWSER_LANGUAGE = {"zh-hans": "zh-CN,zh;q=0.9", "zh-hant": "zh-TW,zh;q=0.9", "ko": "ko-KR,ko;q=0.9"}


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_portal_page_is_in_the_members_language(client, roles, frozen, language):
    walk = member_with_everything(client, language)
    newcomer = Client()  # a login without a membership yet: joining, or claiming one made at the counter
    newcomer.cookies[settings.LANGUAGE_COOKIE_NAME] = language
    newcomer.force_login(UserFactory(is_staff=False, email="new@example.com"))
    visitor = Client(HTTP_ACCEPT_LANGUAGE=BROWSER_LANGUAGE[language])  # in the language their browser asks for
    shown = [(name, client.get(url, **headers)) for name, url, headers in pages(walk)]
    shown += [(name, newcomer.get(reverse(f"portal:{name}"))) for name in ["join", "claim"]]
    shown += [(name, visitor.get(reverse(f"account_{name}"))) for name in ["login", "signup"]]
    shown.append(("invitation", visitor.get(reverse("referral_join", args=[walk.referral_code]))))
    # Refusals come in the same language: too few points to redeem, a wrong password to close the account.
    redeem = {"reward": walk.rewards["grinder"].pk, "token": str(uuid.uuid4())}
    shown.append(("redeem refused", client.post(reverse("portal:rewards"), redeem, **HTMX)))
    shown.append(("close refused", client.post(reverse("portal:privacy_close"), {"password": "not-it", "confirm": "on"}, **HTMX)))

    left: dict[str, list[str]] = {}
    names = [*walk.proper_names, "new@example.com"]
    for name, response in shown:
        assert response.status_code == 200, (name, response.status_code, response.get("Location"))
        assert response.headers["Content-Language"] == language, name
        html = response.content.decode()
        found = english_left(html, language=language, proper_names=names)
        if name not in WORDED_BY_LIBRARIES:
            found += half_width_punctuation(html, language=language)
        if found:
            left[name] = found
    assert left == {}


# --- dates, numbers and money ----------------------------------------------------------------

# Django's locale formats: DATE_FORMAT "Y年n月j日" (zh) and "Y년 n월 j일" (ko).
CHINESE_DATE, KOREAN_DATE = "{d.year}年{d.month}月{d.day}日", "{d.year}년 {d.month}월 {d.day}일"
DATE = {"zh-hans": CHINESE_DATE, "zh-hant": CHINESE_DATE, "ko": KOREAN_DATE}
# Any date written that way, as a pattern.
ANY_DATE = SimpleNamespace(year=r"\d{4}", month=r"\d{1,2}", day=r"\d{1,2}")
DATE_SHAPE = {code: shape.format(d=ANY_DATE) for code, shape in DATE.items()}
# CLDR writes the yuan "¥" for mainland readers, "CN¥" where another yuan, dollar or won is at home.
YUAN = {"zh-hans": "¥", "zh-hant": "CN¥", "ko": "CN¥"}
ENGLISH_MONTHS = re.compile(r"\b(Jan|Feb|March|April|May|June|July|Aug|Sept|Oct|Nov|Dec)", re.I)


@pytest.mark.parametrize("language", LANGUAGES)
def test_dates_numbers_and_money_are_written_for_the_locale(client, roles, frozen, language):
    member_with_everything(client, language)
    today = NOW.date()

    home = " ".join(visible_text(client.get(reverse("portal:home")).content.decode()))
    # 1,200 pending points with the thousands grouped; Gold is ¥5,000 spent this year away, ¥1,800 of it done.
    assert "1,200" in home
    assert f"{YUAN[language]}3,200.00" in home
    assert DATE[language].format(d=dt.date(2026, 12, 31)) in home
    # The points earned on 13 February 2026 can be used for 12 months.
    assert DATE[language].format(d=dt.date(2027, 2, 13)) in home
    assert not ENGLISH_MONTHS.search(home)

    history = client.get(reverse("portal:history")).content.decode()
    times = re.findall(r"<time[^>]*>([^<]+)</time>", history)
    assert times, "the history shows when each change happened"
    assert DATE[language].format(d=today) in times
    assert all(re.fullmatch(DATE_SHAPE[language], text.strip()) for text in times), times
    text = " ".join(visible_text(history))
    assert "+1,200" in text
    assert f"{YUAN[language]}1,200.00" in text, "the earn explanations show the amount paid"
    assert not ENGLISH_MONTHS.search(text)
