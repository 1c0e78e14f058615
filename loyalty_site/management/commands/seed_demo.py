"""The demo programme: the coffee chain Morning Light / 晨光, built through the services."""

import datetime as dt
import random
from decimal import Decimal

from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from members import services as member_services
from members.models import Category, Member, Store, User
from referrals import services as referral_services
from rewards import catalog
from rewards import services as reward_services
from rewards.models import Programme, ProgrammeRules, Reward, StampProgramme, TermsText, TermsVersion, Tier
from rewards.selectors import account_for
from rewards.services import LineInput

DEMO_PASSWORD = "morning-light-demo"  # noqa: S105 - printed for the demo on purpose
STAFF = [
    ("admin@morninglight.example", "Programme admin", "Programme admin", None),
    ("marketer@morninglight.example", "Marketer", "Marketer", None),
    ("manager@morninglight.example", "Store manager", "Store manager", "sh-jingan"),
    ("cashier@morninglight.example", "Cashier", "Cashier", "sh-jingan"),
]
STORES = [
    ("sh-jingan", "晨光 Morning Light · Jing'an", "Asia/Shanghai", "上海市静安区南京西路 1266 号"),
    ("sh-xuhui", "晨光 Morning Light · Xuhui", "Asia/Shanghai", "上海市徐汇区衡山路 8 号"),
    ("hz-xihu", "晨光 Morning Light · West Lake", "Asia/Shanghai", "杭州市西湖区北山街 32 号"),
]
MENU = [
    ("AMR-M", "Americano", "coffee", Decimal("22")),
    ("LAT-M", "Latte", "coffee", Decimal("28")),
    ("FLW-M", "Flat white", "coffee", Decimal("30")),
    ("OAT-L", "Oat latte", "coffee", Decimal("32")),
    ("TEA-J", "Jasmine tea", "tea", Decimal("18")),
    ("CRO-B", "Butter croissant", "pastry", Decimal("16")),
    ("CAK-C", "Cheesecake", "pastry", Decimal("26")),
    ("BEA-250", "House beans 250 g", "beans", Decimal("88")),
    ("MUG-01", "Morning Light mug", "merchandise", Decimal("68")),
    ("GC-100", "Gift card ¥100", "gift-cards", Decimal("100")),
]
FAMILY_NAMES = ["王", "李", "张", "刘", "陈", "杨", "黄", "林", "吴", "周", "김", "이", "박", "최", "陳", "林", "黃"]
GIVEN_NAMES = ["伟", "芳", "娜", "敏", "静", "磊", "洋", "婷", "민준", "서연", "지우", "志明", "淑芬", "雅婷", "家豪"]
# (code, rank, names en/zh-hans/zh-hant/ko, to reach, to keep, multiplier, birthday bonus, by invitation)
TIERS = [
    ("silver", 1, ("Silver", "银卡", "銀卡", "실버"), 500, 400, "1.25", 50, False),
    ("gold", 2, ("Gold", "金卡", "金卡", "골드"), 1500, 1200, "1.5", 150, False),
    ("black", 3, ("Black", "黑卡", "黑卡", "블랙"), 999999, 0, "2", 300, True),
]
# (code as on receipt lines, names en/zh-hans/zh-hant/ko): what members may pick as favourites
CATEGORIES = [
    ("coffee", ("Coffee", "咖啡", "咖啡", "커피")),
    ("tea", ("Tea", "茶饮", "茶飲", "차")),
    ("pastry", ("Pastries and cakes", "烘焙甜点", "烘焙甜點", "베이커리")),
    ("beans", ("Beans to brew at home", "咖啡豆", "咖啡豆", "원두")),
    ("merchandise", ("Mugs and gear", "杯具周边", "杯具周邊", "머그와 굿즈")),
]
# (kind, titles en/zh-hans/zh-hant/ko, points, value, lowest tier, stock)
REWARDS = [
    ("free_item", ("Free Americano", "免费美式咖啡", "免費美式咖啡", "아메리카노 무료"), 150, None, None, None),
    ("free_item", ("Free latte", "免费拿铁", "免費拿鐵", "라테 무료"), 200, None, None, None),
    ("fixed_voucher", ("¥20 off", "立减 20 元", "折抵 20 元", "20위안 할인"), 300, "20", None, None),
    ("percent_voucher", ("15% off beans", "咖啡豆 85 折", "咖啡豆 85 折", "원두 15% 할인"), 250, "15", "silver", None),
    ("merchandise", ("Morning Light mug", "晨光马克杯", "晨光馬克杯", "모닝라이트 머그"), 600, None, None, 40),
    ("experience", ("Cupping with our roaster", "烘焙师杯测体验", "烘豆師杯測體驗", "로스터 커핑 체험"), 900, None, "gold", 12),
]
TERMS = {
    "en": "Earn 1 point for every ¥1 you pay. Points can be spent 14 days after a purchase and are valid for 12 months.",
    "zh-hans": "每消费 1 元积 1 分。积分在消费 14 天后可用，有效期 12 个月。",
    "zh-hant": "每消費 1 元積 1 點。點數於消費 14 天後可用，有效期 12 個月。",
    "ko": "1위안마다 1포인트가 적립됩니다. 포인트는 구매 14일 후부터 사용할 수 있으며 12개월간 유효합니다.",
}


class Command(BaseCommand):
    help = "Load the Morning Light demo programme (idempotent: a second run adds nothing)."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--members", type=int, default=200)

    def handle(self, *args: object, **options: object) -> None:
        call_command("sync_roles", verbosity=0)
        with transaction.atomic():
            self._programme()
            self._catalog()
            self._referrals()
            stores = self._stores()
            staff = self._staff(stores)
        created = self._members(int(options["members"]), stores, staff)  # type: ignore[call-overload]
        referral_services.referrals_reward_due()
        referral_services.referrals_expire_due()
        released = reward_services.points_release_due()
        expired = reward_services.points_expire_due()
        self.stdout.write(
            f"Demo programme ready: {created} new members, {released.lots} lots released, {expired.lots} lots expired."
        )
        self.stdout.write(f"Demo logins (password: {DEMO_PASSWORD}):")
        for email, _name, role, _store in STAFF:
            self.stdout.write(f"  {role:<16} {email}")

    def _programme(self) -> None:
        programme, _created = Programme.objects.get_or_create(
            defaults={"name": "Morning Light / 晨光", "currency": "CNY", "timezone": "Asia/Shanghai"}
        )
        if not programme.rules.exists():
            ProgrammeRules.objects.create(
                programme=programme,
                effective_from=timezone.now() - dt.timedelta(days=800),
                points_per_unit=Decimal(1),
                pending_days=14,
                expiry_policy=ProgrammeRules.Expiry.MONTHS,
                expiry_months=12,
                excluded_categories=["gift-cards"],
                min_redemption_points=50,
                change_note="Launch rules",
            )
        if not programme.terms.exists():
            terms = TermsVersion.objects.create(
                programme=programme, version="2025.1", published_at=timezone.now() - dt.timedelta(days=800)
            )
            TermsText.objects.bulk_create(TermsText(terms=terms, language=lang, body=body) for lang, body in TERMS.items())

    def _catalog(self) -> None:
        for position, (code, names) in enumerate(CATEGORIES):
            Category.objects.get_or_create(code=code, defaults={"position": position, **_translated("name", names)})
        programme = Programme.objects.get()
        tiers = {}
        for code, rank, names, reach, keep, multiplier, birthday, invited in TIERS:
            tiers[code], _created = Tier.objects.get_or_create(
                code=code,
                defaults=dict(
                    programme=programme,
                    rank=rank,
                    **_translated("name", names),
                    entry_threshold=reach,
                    retain_threshold=keep,
                    earn_multiplier=Decimal(multiplier),
                    birthday_bonus_points=birthday,
                    invitation_only=invited,
                ),
            )
        if not Reward.objects.exists():
            for kind, titles, points, value, tier, stock in REWARDS:
                Reward.objects.create(
                    programme=programme,
                    kind=kind,
                    **_translated("title", titles),
                    points_cost=points,
                    value=Decimal(value) if value else None,
                    min_tier=tiers[tier] if tier else None,
                    stock=stock,
                    limit_per_member=1 if kind == "experience" else None,
                )
        if not StampProgramme.objects.exists():
            StampProgramme.objects.create(
                programme=programme,
                **_translated("name", ("Coffee card", "咖啡集章卡", "咖啡集點卡", "커피 스탬프 카드")),
                stamps_needed=8,
                rule=StampProgramme.Rule.CATEGORY_ITEM,
                category="coffee",
                reward=Reward.objects.get(title_en="Free latte"),
            )

    def _referrals(self) -> None:
        settings = referral_services.settings_get()
        if settings.referrer_points == settings.friend_points == 0:
            settings.qualifying_amount, settings.qualifying_days, settings.hold_days = Decimal(30), 30, 14
            settings.referrer_points, settings.friend_points = 200, 100
            settings.save()

    def _stores(self) -> list[Store]:
        return [
            Store.objects.get_or_create(code=code, defaults={"name": name, "timezone": tz, "address": address})[0]
            for code, name, tz, address in STORES
        ]

    def _staff(self, stores: list[Store]) -> dict[str, User]:
        from django.contrib.auth.models import Group

        by_code = {store.code: store for store in stores}
        staff = {}
        for email, name, role, store_code in STAFF:
            user = User.objects.filter(email=email).first()
            if user is None:
                user = User.objects.create_user(email, DEMO_PASSWORD, name=name, is_staff=True)
                user.groups.add(Group.objects.get(name=role))
                user.stores.set([by_code[store_code]] if store_code else stores)
                if role == "Programme admin":
                    user.is_superuser = True
                    user.save(update_fields=["is_superuser"])
            staff[role] = user
        return staff

    def _members(self, count: int, stores: list[Store], staff: dict[str, User]) -> int:
        rng = random.Random(2026)  # the same chain every time
        now = timezone.now()
        created = 0
        for i in range(count):
            phone = f"+86139{i:08d}"
            # Draw everything for this member even when they exist, so the others stay the same.
            profile = self._draw_member(rng, i, stores, now)
            if Member.objects.filter(phone=phone).exists():
                continue
            with transaction.atomic():
                self._create_member(phone, profile, staff)
            created += 1
        return created

    def _draw_member(self, rng: random.Random, i: int, stores: list[Store], now: dt.datetime) -> dict[str, object]:
        name = rng.choice(FAMILY_NAMES) + rng.choice(GIVEN_NAMES)
        home = rng.choice(stores)
        # A few regulars buy most of the coffee: the 80/20 the analytics will show.
        visits_per_month = rng.choice([0.5, 1, 1, 2, 2, 3, 4, 8, 12, 20])
        enrolled = now - dt.timedelta(days=rng.randint(14, 400))
        visits = []
        day = max(enrolled, now - dt.timedelta(days=183))
        while day < now:
            day += dt.timedelta(days=rng.expovariate(visits_per_month / 30))
            if day >= now:
                break
            items = [rng.choice(MENU) for _ in range(rng.choice([1, 1, 1, 2, 2, 3]))]
            store = home if rng.random() < 0.8 else rng.choice(stores)
            visits.append((min(day.replace(hour=rng.randint(7, 19)), now - dt.timedelta(minutes=5)), store, items))
        return {
            "name": name,
            "email": f"member{i}@example.com" if rng.random() < 0.6 else "",
            "birthday": dt.date(rng.randint(1965, 2005), rng.randint(1, 12), rng.randint(1, 28)),
            "home": home,
            "enrolled": enrolled,
            "language": rng.choice(["zh-hans", "zh-hans", "zh-hant", "ko", "en"]),
            "consent": rng.random() < 0.7,
            "visits": visits,
            "lapsed_purchase": rng.random() < 0.1,
            "redeem_after": rng.choice([0, 0, 0, 200, 300]),
            "return_one": rng.random() < 0.05,
            # One member in seven came with a friend's invitation.
            "invited_by": f"+86139{rng.randrange(i):08d}" if i and rng.random() < 0.15 else None,
        }

    def _create_member(self, phone: str, p: dict, staff: dict[str, User]) -> None:
        inviter = Member.objects.filter(phone=p["invited_by"], enrolled_at__lt=p["enrolled"]).first()
        member = member_services.member_enrol(
            referral_code=referral_services.referral_code_for(inviter).code if inviter else "",
            channel=Member.Channel.COUNTER,
            phone=phone,
            email=p["email"],
            name=p["name"],
            birthday=p["birthday"],
            language=p["language"],
            store=p["home"],
            by=staff["Cashier"],
            sms_consent=p["consent"],
            enrolled_at=p["enrolled"],
        )
        reward_services.terms_accept(member=member, channel=Member.Channel.COUNTER)
        n = member.member_number
        if p["lapsed_purchase"]:
            # Points from over a year ago: the clock expires them, with an explained entry.
            reward_services.purchase_record(
                store=p["home"],
                receipt_number=f"{n}-L",
                amount="88.00",
                member=member,
                occurred_at=p["enrolled"] - dt.timedelta(days=400),
                by=staff["Cashier"],
            )
        purchases = []
        for k, (when, store, items) in enumerate(p["visits"]):
            lines = [LineInput(amount=price, sku=sku, name=title, category=category) for sku, title, category, price in items]
            result = reward_services.purchase_record(
                store=store,
                receipt_number=f"{n}-{k:03d}",
                amount=sum(line.amount for line in lines),
                member=member,
                occurred_at=when,
                lines=lines,
                by=staff["Cashier"],
            )
            purchases.append(result.purchase)
            if p["redeem_after"] and account_for(member).available >= p["redeem_after"]:
                # Through the catalog, as at the counter: a voucher, some of them used since.
                reward = Reward.objects.filter(min_tier=None, points_cost__lte=p["redeem_after"]).order_by("-points_cost").first()
                if reward is not None:
                    try:
                        redemption = catalog.redemption_create(member=member, reward=reward, by=staff["Cashier"], store=store)
                    except reward_services.InsufficientPoints:
                        continue  # some of the points had expired meanwhile: no coffee this time
                    if k % 2:
                        catalog.voucher_use(code=redemption.voucher.code, by=staff["Cashier"], store=store)
        if p["return_one"] and purchases:
            reward_services.purchase_return(
                purchase=purchases[-1], return_number=f"{n}-RET", amount=purchases[-1].gross, by=staff["Store manager"]
            )


def _translated(field: str, values: tuple[str, str, str, str]) -> dict[str, str]:
    return {f"{field}_{suffix}": value for suffix, value in zip(("en", "zh_hans", "zh_hant", "ko"), values, strict=True)}
