import calendar
import datetime as dt
import zoneinfo
from decimal import ROUND_DOWN, ROUND_HALF_UP, ROUND_UP, Decimal

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from members.models import Member, Store, validate_timezone
from rewards.money import CURRENCY_CHOICES

AMOUNT = {"max_digits": 14, "decimal_places": 2}


class Programme(models.Model):
    """The loyalty programme: one per installation, with its currency and home time zone."""

    name = models.CharField(_("name"), max_length=100)
    currency = models.CharField(_("currency"), max_length=3, choices=CURRENCY_CHOICES, default="CNY")
    timezone = models.CharField(
        _("time zone"),
        max_length=64,
        default="Asia/Shanghai",
        validators=[validate_timezone],
        help_text=_("Days, birthdays and expiry dates are counted in this time zone."),
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    singleton = models.BooleanField(default=True, editable=False)

    class Meta:
        verbose_name = _("programme")
        verbose_name_plural = _("programme")
        constraints = [
            models.UniqueConstraint(fields=["singleton"], name="programme_one_only"),
            models.CheckConstraint(condition=Q(singleton=True), name="programme_singleton_true"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)


class RulesQuerySet(models.QuerySet["ProgrammeRules"]):
    def in_force(self, at: dt.datetime) -> "ProgrammeRules | None":
        """Return the version in force at a moment; before the first version, the first one."""
        return self.filter(effective_from__lte=at).order_by("-effective_from").first() or self.order_by("effective_from").first()


class Rounding(models.TextChoices):
    DOWN = "down", _("Round down")
    NEAREST = "nearest", _("Round to nearest")
    UP = "up", _("Round up")


class EarnBase(models.TextChoices):
    NET_WITH_TAX = "net_with_tax", _("Amount paid after discounts, tax included")
    NET_WITHOUT_TAX = "net_without_tax", _("Amount paid after discounts, tax excluded")


class ExpiryPolicy(models.TextChoices):
    MONTHS = "months", _("N months after earning")
    YEAR_END = "year_end", _("At the end of a calendar year")
    NEVER = "never", _("Never")


class ProgrammeRules(models.Model):
    """One version of the earning and spending rules. Versions are never edited once in force."""

    Rounding = Rounding
    EarnBase = EarnBase
    Expiry = ExpiryPolicy

    programme = models.ForeignKey(Programme, on_delete=models.CASCADE, related_name="rules")
    effective_from = models.DateTimeField(_("in force from"), default=timezone.now)
    points_per_unit = models.DecimalField(
        _("points per currency unit"),
        max_digits=8,
        decimal_places=4,
        default=Decimal(1),
        validators=[MinValueValidator(Decimal(0))],
        help_text=_("Points for each whole unit of the currency spent, e.g. 1 point per ¥1."),
    )
    rounding = models.CharField(_("rounding"), max_length=10, choices=Rounding.choices, default=Rounding.DOWN)
    earn_base = models.CharField(
        _("points are earned on"), max_length=20, choices=EarnBase.choices, default=EarnBase.NET_WITH_TAX
    )
    excluded_categories = ArrayField(
        models.CharField(max_length=50),
        blank=True,
        default=list,
        verbose_name=_("categories that earn nothing"),
        help_text=_("Comma-separated product categories, e.g. gift-cards, tobacco."),
    )
    minimum_purchase = models.DecimalField(
        _("minimum purchase to earn"), **AMOUNT, default=Decimal(0), validators=[MinValueValidator(Decimal(0))]
    )
    pending_days = models.PositiveSmallIntegerField(
        _("pending days"), default=14, help_text=_("The return window: points can be spent this many days after the purchase.")
    )
    expiry_policy = models.CharField(_("points expire"), max_length=10, choices=Expiry.choices, default=Expiry.MONTHS)
    expiry_months = models.PositiveSmallIntegerField(
        _("months of validity"), default=12, validators=[MinValueValidator(1)], help_text=_("For “N months after earning”.")
    )
    expiry_years = models.PositiveSmallIntegerField(
        _("calendar years after the year earned"),
        default=1,
        help_text=_("For “end of a calendar year”: 0 = end of the year earned, 1 = end of the following year."),
    )
    claim_days = models.PositiveSmallIntegerField(
        _("days to claim a sale"),
        default=30,
        help_text=_("How long after a sale without a card the member can still claim its points."),
    )
    min_redemption_points = models.PositiveIntegerField(
        _("minimum points per redemption"), default=0, help_text=_("0 lets members spend any amount.")
    )
    birthday_bonus_points = models.PositiveIntegerField(
        _("birthday bonus points"), default=0, help_text=_("For members without a tier; each tier sets its own.")
    )
    expiry_reminder_days = models.PositiveSmallIntegerField(
        _("remind this many days before points expire"), default=30, help_text=_("0 sends no early reminder.")
    )
    expiry_last_chance_days = models.PositiveSmallIntegerField(
        _("last-chance reminder, days before expiry"), default=3, help_text=_("0 sends no last-chance message.")
    )
    voucher_reminder_days = models.PositiveSmallIntegerField(
        _("remind this many days before a voucher expires"), default=3, help_text=_("0 sends no reminder.")
    )
    refund_expired_vouchers = models.BooleanField(
        _("give points back for expired vouchers"), default=False, help_text=_("Otherwise an unused voucher's points are gone.")
    )
    adjust_daily_limit = models.PositiveIntegerField(
        _("points a staff member may adjust per day"),
        default=1000,
        help_text=_("Added and removed together, per staff member and day; programme admins have no limit. 0 = no limit."),
    )
    change_note = models.CharField(_("why this change"), max_length=200, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    created_at = models.DateTimeField(_("recorded"), auto_now_add=True)

    objects = RulesQuerySet.as_manager()

    class Meta:
        ordering = ["-effective_from"]
        get_latest_by = "effective_from"
        verbose_name = _("programme rules")
        verbose_name_plural = _("programme rules")
        constraints = [
            models.UniqueConstraint(fields=["programme", "effective_from"], name="rules_one_version_per_moment"),
            models.CheckConstraint(condition=Q(points_per_unit__gte=0), name="rules_rate_not_negative"),
            models.CheckConstraint(condition=Q(minimum_purchase__gte=0), name="rules_minimum_not_negative"),
            models.CheckConstraint(condition=Q(expiry_months__gte=1), name="rules_expiry_months_positive"),
            models.CheckConstraint(condition=Q(rounding__in=Rounding.values), name="rules_rounding_valid"),
            models.CheckConstraint(condition=Q(earn_base__in=EarnBase.values), name="rules_earn_base_valid"),
            models.CheckConstraint(condition=Q(expiry_policy__in=ExpiryPolicy.values), name="rules_expiry_valid"),
        ]

    def __str__(self) -> str:
        return str(
            _("Rules in force from %(date)s") % {"date": timezone.localtime(self.effective_from).strftime("%Y-%m-%d %H:%M")}
        )

    @property
    def is_in_force_or_past(self) -> bool:
        return self.effective_from <= timezone.now()

    def points_for(self, base: Decimal, multiplier: Decimal = Decimal(1)) -> int:
        mode = {self.Rounding.DOWN: ROUND_DOWN, self.Rounding.NEAREST: ROUND_HALF_UP, self.Rounding.UP: ROUND_UP}[
            self.Rounding(self.rounding)
        ]
        return int((base * self.points_per_unit * multiplier).quantize(Decimal(1), rounding=mode))

    def lot_dates(self, earned_at: dt.datetime, *, return_window: bool) -> tuple[dt.datetime, dt.datetime | None]:
        """Return when points earned at a moment can be spent and when they expire.

        Purchase points wait out the return window; points never wait past their expiry.
        """
        expires_at = self.expires_at(earned_at, self.programme.tz)
        # Whole days of 24 hours, whatever the clocks do in between (as PostgreSQL counts in UTC).
        earned_at = earned_at.astimezone(dt.UTC)
        available_at = earned_at + dt.timedelta(days=self.pending_days) if return_window else earned_at
        return (min(available_at, expires_at) if expires_at else available_at), expires_at

    def expires_at(self, earned_at: dt.datetime, tz: zoneinfo.ZoneInfo) -> dt.datetime | None:
        """Return the first moment the points are no longer valid, at local midnight."""
        local = earned_at.astimezone(tz).date()
        if self.expiry_policy == self.Expiry.NEVER:
            return None
        if self.expiry_policy == self.Expiry.YEAR_END:
            last_day = dt.date(local.year + self.expiry_years, 12, 31)
        else:
            month_index = local.month - 1 + self.expiry_months
            year, month = local.year + month_index // 12, month_index % 12 + 1
            last_day = dt.date(year, month, min(local.day, calendar.monthrange(year, month)[1]))
        return dt.datetime.combine(last_day + dt.timedelta(days=1), dt.time(), tzinfo=tz)


class TermsVersion(models.Model):
    """A published version of the terms and conditions; the latest published one is current."""

    programme = models.ForeignKey(Programme, on_delete=models.CASCADE, related_name="terms")
    version = models.CharField(_("version"), max_length=20, unique=True)
    published_at = models.DateTimeField(_("published"), help_text=_("Members are asked to accept it from this moment."))
    summary_of_changes = models.TextField(_("summary of changes"), blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        ordering = ["-published_at"]
        verbose_name = _("terms and conditions")
        verbose_name_plural = _("terms and conditions")

    def __str__(self) -> str:
        return self.version


class TermsText(models.Model):
    terms = models.ForeignKey(TermsVersion, on_delete=models.CASCADE, related_name="texts")
    language = models.CharField(_("language"), max_length=10, choices=Member.Language.choices)
    body = models.TextField(_("text"))

    class Meta:
        verbose_name = _("terms text")
        verbose_name_plural = _("terms texts")
        constraints = [models.UniqueConstraint(fields=["terms", "language"], name="terms_one_text_per_language")]

    def __str__(self) -> str:
        return f"{self.terms} ({self.language})"


class TermsAcceptance(models.Model):
    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="terms_acceptances")
    terms = models.ForeignKey(TermsVersion, on_delete=models.PROTECT, related_name="acceptances")
    accepted_at = models.DateTimeField(_("accepted"), default=timezone.now)
    channel = models.CharField(_("where"), max_length=10, choices=Member.Channel.choices)

    class Meta:
        ordering = ["-accepted_at"]
        verbose_name = _("terms acceptance")
        verbose_name_plural = _("terms acceptances")
        constraints = [models.UniqueConstraint(fields=["member", "terms"], name="terms_accepted_once")]

    def __str__(self) -> str:
        return f"{self.member} accepted {self.terms}"


class PointsAccount(models.Model):
    """A member's cached balances, changed only by `rewards.services` under this row's lock.

    `available` and `pending` are the sums of the remaining points of the member's lots;
    `owed` is what a return clawed back after the points were spent. Total = sum of entries.
    """

    member = models.OneToOneField(Member, primary_key=True, on_delete=models.PROTECT, related_name="points")
    available = models.BigIntegerField(_("available"), default=0)
    pending = models.BigIntegerField(_("pending"), default=0)
    owed = models.BigIntegerField(_("owed"), default=0)
    lifetime_earned = models.BigIntegerField(_("earned to date"), default=0)
    lifetime_spent = models.BigIntegerField(_("spent to date"), default=0)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("points account")
        verbose_name_plural = _("points accounts")
        permissions = [("adjust_points", _("Can adjust a member's points"))]
        constraints = [
            models.CheckConstraint(condition=Q(available__gte=0), name="account_available_not_negative"),
            models.CheckConstraint(condition=Q(pending__gte=0), name="account_pending_not_negative"),
            models.CheckConstraint(condition=Q(owed__gte=0), name="account_owed_not_negative"),
            # Points that become available repay a debt first, so the two never coexist.
            models.CheckConstraint(condition=Q(owed=0) | Q(available=0), name="account_owed_means_nothing_available"),
        ]

    def __str__(self) -> str:
        return str(self.member)

    @property
    def balance(self) -> int:
        return self.available + self.pending - self.owed


class PurchaseChannel(models.TextChoices):
    STORE = "store", _("In store")
    ONLINE = "online", _("Online shop")
    APP = "app", _("App")
    IMPORT = "import", _("Imported")


class Purchase(models.Model):
    Channel = PurchaseChannel

    # Indexed by the unique (store, receipt number) constraint.
    store = models.ForeignKey(Store, on_delete=models.PROTECT, related_name="purchases", verbose_name=_("store"), db_index=False)
    receipt_number = models.CharField(_("receipt number"), max_length=64)
    # Indexed by purchase_member_recent, which leads with the member.
    member = models.ForeignKey(
        Member,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="purchases",
        verbose_name=_("member"),
        db_index=False,
    )
    channel = models.CharField(_("channel"), max_length=10, choices=Channel.choices, default=Channel.STORE)
    gross = models.DecimalField(_("amount"), **AMOUNT, help_text=_("Total before discounts, tax included."))
    discount = models.DecimalField(_("discount"), **AMOUNT, default=Decimal(0))
    tax = models.DecimalField(_("tax"), **AMOUNT, default=Decimal(0), help_text=_("Tax included in the amount."))
    net = models.DecimalField(_("paid"), **AMOUNT)
    occurred_at = models.DateTimeField(_("purchased at"))
    recorded_at = models.DateTimeField(_("recorded at"), auto_now_add=True)
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("recorded by"),
    )
    recorded_via = models.CharField(_("recorded via"), max_length=64, blank=True, help_text=_("Till or API key name."))
    rules = models.ForeignKey(ProgrammeRules, on_delete=models.PROTECT, related_name="+", verbose_name=_("rules applied"))
    earn_base = models.DecimalField(_("amount that earns points"), **AMOUNT, default=Decimal(0))
    points_earned = models.BigIntegerField(_("points earned"), default=0)
    claimed_at = models.DateTimeField(_("claimed at"), null=True, blank=True)
    fingerprint = models.CharField(
        max_length=64, editable=False, help_text="Hash of the request, to tell a replay from a conflict."
    )
    # A keyed hash of the card token the till may send: tells one person's two accounts apart from friends.
    payment_fingerprint = models.CharField(max_length=64, blank=True, default="", db_default="", editable=False)

    class Meta:
        ordering = ["-occurred_at"]
        verbose_name = _("purchase")
        verbose_name_plural = _("purchases")
        permissions = [("import_history", _("Can import members and purchases from another system"))]
        constraints = [
            models.UniqueConstraint(fields=["store", "receipt_number"], name="purchase_receipt_unique_per_store"),
            models.CheckConstraint(condition=Q(gross__gt=0), name="purchase_gross_positive"),
            models.CheckConstraint(condition=Q(discount__gte=0, discount__lte=F("gross")), name="purchase_discount_in_range"),
            models.CheckConstraint(condition=Q(net=F("gross") - F("discount")), name="purchase_net_is_gross_less_discount"),
            models.CheckConstraint(condition=Q(tax__gte=0, tax__lte=F("net")), name="purchase_tax_in_range"),
            models.CheckConstraint(condition=Q(points_earned__gte=0), name="purchase_points_not_negative"),
            models.CheckConstraint(condition=Q(channel__in=PurchaseChannel.values), name="purchase_channel_valid"),
        ]
        indexes = [models.Index(fields=["member", "-occurred_at"], name="purchase_member_recent")]

    def __str__(self) -> str:
        return f"{self.store.code} #{self.receipt_number}"


class PurchaseLine(models.Model):
    purchase = models.ForeignKey(Purchase, on_delete=models.CASCADE, related_name="lines")
    line_number = models.PositiveSmallIntegerField(_("line"))
    sku = models.CharField(_("SKU"), max_length=64, blank=True)
    name = models.CharField(_("product"), max_length=200, blank=True)
    category = models.CharField(_("category"), max_length=50, blank=True)
    quantity = models.PositiveIntegerField(_("quantity"), default=1)
    amount = models.DecimalField(_("amount"), **AMOUNT, help_text=_("Line total."))

    class Meta:
        ordering = ["purchase", "line_number"]
        verbose_name = _("purchase line")
        verbose_name_plural = _("purchase lines")
        constraints = [
            models.UniqueConstraint(fields=["purchase", "line_number"], name="purchase_line_number_unique"),
            models.CheckConstraint(condition=Q(quantity__gt=0), name="purchase_line_quantity_positive"),
            models.CheckConstraint(condition=Q(amount__gte=0), name="purchase_line_amount_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} × {self.name or self.sku}"


class Return(models.Model):
    purchase = models.ForeignKey(Purchase, on_delete=models.PROTECT, related_name="returns", verbose_name=_("purchase"))
    return_number = models.CharField(_("return number"), max_length=64)
    amount = models.DecimalField(_("amount refunded"), **AMOUNT)
    points_clawed_back = models.BigIntegerField(_("points taken back"), default=0)
    recorded_at = models.DateTimeField(_("recorded at"), auto_now_add=True)
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    recorded_via = models.CharField(_("recorded via"), max_length=64, blank=True)
    store = models.ForeignKey(
        Store,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("returned at"),
        help_text=_("Where the goods came back, which may be another store than the sale's."),
    )
    fingerprint = models.CharField(max_length=64, editable=False)

    class Meta:
        ordering = ["-recorded_at"]
        verbose_name = _("return")
        verbose_name_plural = _("returns")
        constraints = [
            models.UniqueConstraint(fields=["purchase", "return_number"], name="return_number_unique_per_purchase"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="return_amount_positive"),
            models.CheckConstraint(condition=Q(points_clawed_back__gte=0), name="return_points_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.purchase} ↩ {self.return_number}"


class ReturnLine(models.Model):
    return_record = models.ForeignKey(Return, on_delete=models.CASCADE, related_name="lines")
    purchase_line = models.ForeignKey(PurchaseLine, on_delete=models.PROTECT, related_name="returned")
    quantity = models.PositiveIntegerField(_("quantity"))
    amount = models.DecimalField(_("amount"), **AMOUNT)

    class Meta:
        verbose_name = _("return line")
        verbose_name_plural = _("return lines")
        constraints = [
            models.UniqueConstraint(fields=["return_record", "purchase_line"], name="return_line_once_per_return"),
            models.CheckConstraint(condition=Q(quantity__gt=0), name="return_line_quantity_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.quantity} × {self.purchase_line}"


class PointsLotQuerySet(models.QuerySet["PointsLot"]):
    def spendable(self) -> "PointsLotQuerySet":
        """Available lots with points left, soonest-expiring first: the order spending uses."""
        return self.filter(status=PointsLot.Status.AVAILABLE, remaining__gt=0).order_by(
            F("expires_at").asc(nulls_last=True), "available_at", "id"
        )


class LotStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    AVAILABLE = "available", _("Available")
    EXPIRED = "expired", _("Expired")


class PointsLot(models.Model):
    """Points earned together, with the day they can be spent and the day they expire."""

    Status = LotStatus

    # Indexed by lot_account_spend, which leads with the account.
    account = models.ForeignKey(PointsAccount, on_delete=models.PROTECT, related_name="lots", db_index=False)
    points = models.PositiveBigIntegerField(_("points"))
    remaining = models.PositiveBigIntegerField(_("remaining"))
    status = models.CharField(_("status"), max_length=10, choices=Status.choices)
    available_at = models.DateTimeField(_("available from"))
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)
    purchase = models.ForeignKey(Purchase, null=True, blank=True, on_delete=models.PROTECT, related_name="lots")
    earned_at = models.DateTimeField(_("earned at"), default=timezone.now)

    objects = PointsLotQuerySet.as_manager()

    class Meta:
        ordering = ["expires_at", "id"]
        verbose_name = _("points lot")
        verbose_name_plural = _("points lots")
        constraints = [
            models.CheckConstraint(condition=Q(points__gt=0), name="lot_points_positive"),
            models.CheckConstraint(condition=Q(remaining__gte=0, remaining__lte=F("points")), name="lot_remaining_in_range"),
            models.CheckConstraint(condition=Q(status__in=LotStatus.values), name="lot_status_valid"),
            models.CheckConstraint(condition=~Q(status="expired") | Q(remaining=0), name="lot_expired_is_empty"),
            models.CheckConstraint(
                condition=Q(expires_at__isnull=True) | Q(expires_at__gte=F("available_at")), name="lot_expires_after_available"
            ),
        ]
        indexes = [
            models.Index(fields=["account", "status", "expires_at"], name="lot_account_spend"),
            models.Index(fields=["available_at"], condition=Q(status="pending"), name="lot_pending_due"),
            models.Index(
                fields=["expires_at"], condition=Q(status__in=["pending", "available"], remaining__gt=0), name="lot_expiry_due"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.points} pts ({self.get_status_display()})"


class EntryKind(models.TextChoices):
    EARN = "earn", _("Earned")
    OPENING = "opening", _("Opening balance")
    BONUS = "bonus", _("Bonus")
    REFERRAL = "referral", _("Referral reward")
    ADJUSTMENT = "adjustment", _("Adjustment")
    SPEND = "spend", _("Spent")
    CLAWBACK = "clawback", _("Return")
    EXPIRE = "expire", _("Expired")
    REVERSAL = "reversal", _("Reversal")
    WITHDRAWAL = "withdrawal", _("Withdrawn")  # granted points taken back while still pending


class LedgerEntry(models.Model):
    """One change of a member's points. Append-only: corrections are new entries."""

    Kind = EntryKind

    # Indexed by entry_account_recent, which leads with the account.
    account = models.ForeignKey(PointsAccount, on_delete=models.PROTECT, related_name="entries", db_index=False)
    kind = models.CharField(_("kind"), max_length=12, choices=Kind.choices)
    points = models.BigIntegerField(_("points"))
    occurred_at = models.DateTimeField(_("when"), default=timezone.now, help_text=_("When the change took effect."))
    created_at = models.DateTimeField(_("recorded"), default=timezone.now)
    purchase = models.ForeignKey(Purchase, null=True, blank=True, on_delete=models.PROTECT, related_name="entries")
    return_record = models.ForeignKey(Return, null=True, blank=True, on_delete=models.PROTECT, related_name="entries")
    lot = models.ForeignKey(PointsLot, null=True, blank=True, on_delete=models.PROTECT, related_name="entries")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", verbose_name=_("by")
    )
    source_ref = models.CharField(_("source"), max_length=64, blank=True, help_text="e.g. campaign:12, redemption:40")
    reason = models.CharField(_("reason"), max_length=300, blank=True)
    detail = models.JSONField(default=dict, blank=True, help_text="Figures the explanation is written from.")
    owed_points = models.PositiveBigIntegerField(default=0, help_text="Of a clawback, the points that were already spent.")
    idempotency_key = models.CharField(
        max_length=100, null=True, blank=True, help_text="The caller's key for a retried request, unique per member."
    )

    class Meta:
        ordering = ["-occurred_at", "-id"]
        verbose_name = _("ledger entry")
        verbose_name_plural = _("ledger entries")
        constraints = [
            models.CheckConstraint(condition=~Q(points=0), name="entry_points_not_zero"),
            models.CheckConstraint(condition=Q(kind__in=EntryKind.values), name="entry_kind_valid"),
            models.CheckConstraint(
                condition=~Q(kind__in=["earn", "opening", "bonus", "referral", "reversal"]) | Q(points__gt=0),
                name="entry_credit_positive",
            ),
            models.CheckConstraint(
                condition=~Q(kind__in=["spend", "clawback", "expire", "withdrawal"]) | Q(points__lt=0),
                name="entry_debit_negative",
            ),
            models.UniqueConstraint(fields=["purchase"], condition=Q(kind="earn"), name="entry_one_earn_per_purchase"),
            models.UniqueConstraint(fields=["return_record"], condition=Q(kind="clawback"), name="entry_one_clawback_per_return"),
            models.UniqueConstraint(fields=["lot"], condition=Q(kind="expire"), name="entry_one_expiry_per_lot"),
            # Retries of one member's request meet under that member's account lock.
            models.UniqueConstraint(fields=["account", "idempotency_key"], name="entry_idempotency_key_per_account"),
        ]
        indexes = [models.Index(fields=["account", "-occurred_at", "-id"], name="entry_account_recent")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.points:+d}"

    @property
    def explanation(self) -> str:
        from rewards.explanations import explain

        return explain(self)


class AllocationKind(models.TextChoices):
    SPEND = "spend", _("Spent")
    CLAWBACK = "clawback", _("Return")
    EXPIRE = "expire", _("Expired")
    REPAY = "repay", _("Repaid points owed")


class LotAllocation(models.Model):
    """Points taken from a lot: by a spend, a clawback, an expiry, or a debt repaid."""

    Kind = AllocationKind

    lot = models.ForeignKey(PointsLot, on_delete=models.PROTECT, related_name="allocations")
    entry = models.ForeignKey(LedgerEntry, null=True, blank=True, on_delete=models.PROTECT, related_name="allocations")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    points = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(points__gt=0), name="allocation_points_positive"),
            models.CheckConstraint(condition=Q(kind__in=AllocationKind.values), name="allocation_kind_valid"),
            models.CheckConstraint(condition=Q(kind="repay") | Q(entry__isnull=False), name="allocation_has_entry_unless_repay"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.points} from lot {self.lot_id}"


# --- tiers ----------------------------------------------------------------------------


class TierMetric(models.TextChoices):
    SPEND = "spend", _("Amount spent")
    POINTS = "points", _("Points earned")
    PURCHASES = "purchases", _("Number of purchases")


class TierWindow(models.TextChoices):
    ROLLING = "rolling", _("The last N months")
    CALENDAR_YEAR = "calendar_year", _("This calendar year")
    LIFETIME = "lifetime", _("Since joining")


class Tier(models.Model):
    """A level members unlock by what they do (or by invitation), with the benefits it brings."""

    Metric = TierMetric
    Window = TierWindow

    programme = models.ForeignKey(Programme, on_delete=models.CASCADE, related_name="tiers")
    code = models.SlugField(_("code"), max_length=30, unique=True)
    name = models.CharField(_("name"), max_length=60)
    rank = models.PositiveSmallIntegerField(_("rank"), unique=True, help_text=_("Higher ranks are better tiers."))
    metric = models.CharField(_("qualifies by"), max_length=10, choices=Metric.choices, default=Metric.SPEND)
    entry_threshold = models.DecimalField(
        _("to reach"), **AMOUNT, validators=[MinValueValidator(Decimal(0))], help_text=_("Amount, points or purchases.")
    )
    retain_threshold = models.DecimalField(
        _("to keep"), **AMOUNT, validators=[MinValueValidator(Decimal(0))], help_text=_("Needed in each window to stay.")
    )
    window = models.CharField(_("counted over"), max_length=15, choices=Window.choices, default=Window.ROLLING)
    window_months = models.PositiveSmallIntegerField(
        _("months in the window"), default=12, validators=[MinValueValidator(1)], help_text=_("For “the last N months”.")
    )
    grace_days = models.PositiveSmallIntegerField(
        _("grace days"), default=30, help_text=_("How long a member keeps the tier after missing what it takes to keep it.")
    )
    earn_multiplier = models.DecimalField(
        _("earn multiplier"), max_digits=5, decimal_places=2, default=Decimal(1), validators=[MinValueValidator(Decimal(1))]
    )
    birthday_bonus_points = models.PositiveIntegerField(_("birthday bonus points"), default=0)
    perks = models.TextField(_("other perks"), blank=True, help_text=_("One per line, e.g. free size upgrade."))
    invitation_only = models.BooleanField(
        _("by invitation only"), default=False, help_text=_("Staff assign it, with an end date.")
    )
    active = models.BooleanField(_("active"), default=True)

    class Meta:
        ordering = ["rank"]
        verbose_name = _("tier")
        verbose_name_plural = _("tiers")
        constraints = [
            models.CheckConstraint(condition=Q(metric__in=TierMetric.values), name="tier_metric_valid"),
            models.CheckConstraint(condition=Q(window__in=TierWindow.values), name="tier_window_valid"),
            models.CheckConstraint(condition=Q(retain_threshold__lte=F("entry_threshold")), name="tier_keep_not_above_reach"),
            models.CheckConstraint(condition=Q(earn_multiplier__gte=1), name="tier_multiplier_at_least_one"),
        ]

    def __str__(self) -> str:
        return self.name


class MemberTier(models.Model):
    """A member's current tier; absent or with no tier means the programme's base level."""

    member = models.OneToOneField(Member, primary_key=True, on_delete=models.CASCADE, related_name="tier_status")
    tier = models.ForeignKey(Tier, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    since = models.DateTimeField(_("since"), default=timezone.now)
    invited_until = models.DateField(_("invited until"), null=True, blank=True)
    missed_since = models.DateField(
        _("missed the keep threshold on"), null=True, blank=True, help_text=_("Start of the grace period.")
    )
    evaluated_on = models.DateField(_("last evaluated"), null=True, blank=True)

    class Meta:
        verbose_name = _("member tier")
        verbose_name_plural = _("member tiers")

    def __str__(self) -> str:
        return f"{self.member}: {self.tier or '-'}"


class TierChangeReason(models.TextChoices):
    UPGRADE = "upgrade", _("Reached on a purchase")
    EVALUATION = "evaluation", _("Scheduled evaluation")
    INVITED = "invited", _("Invited by staff")
    INVITATION_ENDED = "invitation_ended", _("Invitation ended")
    STAFF = "staff", _("Set by staff")


class TierChange(models.Model):
    """One change of a member's tier, with why: the tier history."""

    Reason = TierChangeReason

    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="tier_changes")
    from_tier = models.ForeignKey(Tier, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    to_tier = models.ForeignKey(Tier, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    reason = models.CharField(_("reason"), max_length=20, choices=Reason.choices)
    detail = models.JSONField(default=dict, blank=True, help_text="Figures behind the change: metric, value, threshold.")
    note = models.CharField(_("note"), max_length=300, blank=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(_("when"), default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["member", "-created_at"], name="tierchange_member_recent")]
        verbose_name = _("tier change")
        verbose_name_plural = _("tier changes")
        constraints = [models.CheckConstraint(condition=Q(reason__in=TierChangeReason.values), name="tierchange_reason_valid")]

    def __str__(self) -> str:
        return f"{self.member}: {self.from_tier or '-'} → {self.to_tier or '-'}"


# --- reward catalog, redemptions and vouchers ------------------------------------------


class RewardKind(models.TextChoices):
    FREE_ITEM = "free_item", _("Free item")
    FIXED_VOUCHER = "fixed_voucher", _("Money-off voucher")
    PERCENT_VOUCHER = "percent_voucher", _("Percentage-off voucher")
    MERCHANDISE = "merchandise", _("Merchandise")
    EXPERIENCE = "experience", _("Event or experience")


class RewardQuerySet(models.QuerySet["Reward"]):
    def visible(self, at: dt.datetime) -> "RewardQuerySet":
        """Rewards shown in the catalog at a moment (some are shown before they can be redeemed)."""
        return self.filter(
            Q(active=True),
            Q(visible_from__isnull=True) | Q(visible_from__lte=at),
            Q(visible_until__isnull=True) | Q(visible_until__gt=at),
        )


class Reward(models.Model):
    """Something members spend points on; redeeming it issues a voucher."""

    Kind = RewardKind

    programme = models.ForeignKey(Programme, on_delete=models.CASCADE, related_name="rewards")
    kind = models.CharField(_("kind"), max_length=20, choices=Kind.choices)
    title = models.CharField(_("title"), max_length=100)
    description = models.TextField(_("description"), blank=True)
    image = models.ImageField(_("image"), upload_to="rewards/", blank=True)
    points_cost = models.PositiveIntegerField(_("points"), validators=[MinValueValidator(1)])
    value = models.DecimalField(
        _("value"), **AMOUNT, null=True, blank=True, help_text=_("Money off for a money-off voucher; percent for a percentage.")
    )
    min_tier = models.ForeignKey(
        Tier,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("open to"),
        help_text=_("This tier and the tiers above it; blank for everyone."),
    )
    stock = models.PositiveIntegerField(_("stock"), null=True, blank=True, help_text=_("Blank for unlimited."))
    limit_per_member = models.PositiveIntegerField(_("limit per member"), null=True, blank=True, help_text=_("Blank for none."))
    available_from = models.DateTimeField(_("redeemable from"), null=True, blank=True)
    available_until = models.DateTimeField(_("redeemable until"), null=True, blank=True)
    visible_from = models.DateTimeField(_("shown from"), null=True, blank=True)
    visible_until = models.DateTimeField(_("shown until"), null=True, blank=True)
    voucher_valid_days = models.PositiveSmallIntegerField(
        _("voucher valid for (days)"), default=30, validators=[MinValueValidator(1)]
    )
    active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    objects = RewardQuerySet.as_manager()

    class Meta:
        ordering = ["points_cost", "pk"]
        verbose_name = _("reward")
        verbose_name_plural = _("rewards")
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=RewardKind.values), name="reward_kind_valid"),
            models.CheckConstraint(condition=Q(points_cost__gt=0), name="reward_cost_positive"),
            models.CheckConstraint(condition=Q(stock__isnull=True) | Q(stock__gte=0), name="reward_stock_not_negative"),
            models.CheckConstraint(
                condition=~Q(kind="percent_voucher") | Q(value__gt=0, value__lte=100), name="reward_percent_in_range"
            ),
            models.CheckConstraint(condition=~Q(kind="fixed_voucher") | Q(value__gt=0), name="reward_fixed_value_positive"),
        ]

    def __str__(self) -> str:
        return self.title


class RedemptionStatus(models.TextChoices):
    REDEEMED = "redeemed", _("Redeemed")
    CANCELLED = "cancelled", _("Cancelled")


class Redemption(models.Model):
    """Points a member spent on a reward; the voucher says whether it was used."""

    Status = RedemptionStatus

    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="redemptions")
    reward = models.ForeignKey(Reward, on_delete=models.PROTECT, related_name="redemptions")
    points = models.PositiveIntegerField(_("points"))
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.REDEEMED)
    spend_entry = models.OneToOneField(LedgerEntry, on_delete=models.PROTECT, related_name="redemption")
    refund_entry = models.OneToOneField(
        LedgerEntry, null=True, blank=True, on_delete=models.PROTECT, related_name="refunded_redemption"
    )
    store = models.ForeignKey(Store, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_via = models.CharField(_("via"), max_length=64, blank=True)
    created_at = models.DateTimeField(_("redeemed at"), default=timezone.now)
    cancelled_at = models.DateTimeField(_("cancelled at"), null=True, blank=True)
    idempotency_key = models.CharField(max_length=150, null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["member", "reward"], name="redemption_member_reward")]
        verbose_name = _("redemption")
        verbose_name_plural = _("redemptions")
        constraints = [
            models.CheckConstraint(condition=Q(status__in=RedemptionStatus.values), name="redemption_status_valid"),
            models.CheckConstraint(condition=Q(points__gt=0), name="redemption_points_positive"),
            models.UniqueConstraint(fields=["member", "idempotency_key"], name="redemption_idempotent_per_member"),
        ]

    def __str__(self) -> str:
        return f"{self.member}: {self.reward}"


class VoucherStatus(models.TextChoices):
    ISSUED = "issued", _("Ready to use")
    USED = "used", _("Used")
    EXPIRED = "expired", _("Expired")
    CANCELLED = "cancelled", _("Cancelled")


class Voucher(models.Model):
    """A reward the member holds, shown at the counter by its code (or its QR image)."""

    Status = VoucherStatus

    code = models.CharField(_("code"), max_length=20, unique=True)
    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="vouchers")
    reward = models.ForeignKey(Reward, on_delete=models.PROTECT, related_name="vouchers")
    redemption = models.OneToOneField(Redemption, null=True, blank=True, on_delete=models.PROTECT, related_name="voucher")
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.ISSUED)
    issued_at = models.DateTimeField(_("issued"), default=timezone.now)
    expires_at = models.DateTimeField(_("valid until"))
    used_at = models.DateTimeField(_("used at"), null=True, blank=True)
    used_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    used_store = models.ForeignKey(Store, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    used_via = models.CharField(_("used via"), max_length=64, blank=True)
    closed_at = models.DateTimeField(_("expired or cancelled at"), null=True, blank=True)
    reminded_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-issued_at", "-pk"]
        indexes = [
            models.Index(fields=["member", "status"], name="voucher_member_status"),
            models.Index(fields=["expires_at"], condition=Q(status="issued"), name="voucher_issued_expiry"),
        ]
        verbose_name = _("voucher")
        verbose_name_plural = _("vouchers")
        constraints = [
            models.CheckConstraint(condition=Q(status__in=VoucherStatus.values), name="voucher_status_valid"),
            models.CheckConstraint(condition=~Q(status="used") | Q(used_at__isnull=False), name="voucher_used_has_time"),
        ]

    def __str__(self) -> str:
        return self.code


# --- stamp cards ----------------------------------------------------------------------


class StampRule(models.TextChoices):
    PURCHASE_OVER = "purchase_over", _("One stamp for a purchase of at least an amount")
    CATEGORY_ITEM = "category_item", _("One stamp for each item of a category")
    SKU_ITEM = "sku_item", _("One stamp for each item of a product (SKU)")


class StampProgramme(models.Model):
    """A paper stamp card made digital: N stamps earn a reward, then a new card starts."""

    Rule = StampRule

    programme = models.ForeignKey(Programme, on_delete=models.CASCADE, related_name="stamp_programmes")
    name = models.CharField(_("name"), max_length=100)
    stamps_needed = models.PositiveSmallIntegerField(_("stamps needed"), default=8, validators=[MinValueValidator(1)])
    rule = models.CharField(_("a stamp is earned by"), max_length=20, choices=Rule.choices, default=Rule.PURCHASE_OVER)
    min_amount = models.DecimalField(
        _("minimum purchase"), **AMOUNT, default=Decimal(0), validators=[MinValueValidator(Decimal(0))]
    )
    category = models.CharField(_("category"), max_length=50, blank=True)
    sku = models.CharField(_("SKU"), max_length=64, blank=True)
    reward = models.ForeignKey(Reward, on_delete=models.PROTECT, related_name="+", verbose_name=_("reward for a full card"))
    active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("stamp card programme")
        verbose_name_plural = _("stamp card programmes")
        constraints = [
            models.CheckConstraint(condition=Q(rule__in=StampRule.values), name="stamp_rule_valid"),
            models.CheckConstraint(condition=Q(stamps_needed__gte=1), name="stamp_needed_positive"),
            models.CheckConstraint(condition=~Q(rule="category_item") | ~Q(category=""), name="stamp_category_given"),
            models.CheckConstraint(condition=~Q(rule="sku_item") | ~Q(sku=""), name="stamp_sku_given"),
        ]

    def __str__(self) -> str:
        return self.name


class StampCard(models.Model):
    """One card of a member: open until full, then completed with the voucher it issued."""

    programme = models.ForeignKey(StampProgramme, on_delete=models.PROTECT, related_name="cards")
    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="stamp_cards")
    stamps = models.PositiveSmallIntegerField(_("stamps"), default=0)
    completed_at = models.DateTimeField(_("completed"), null=True, blank=True)
    voucher = models.OneToOneField(Voucher, null=True, blank=True, on_delete=models.PROTECT, related_name="stamp_card")
    created_at = models.DateTimeField(_("started"), default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = _("stamp card")
        verbose_name_plural = _("stamp cards")
        constraints = [
            models.UniqueConstraint(
                fields=["programme", "member"], condition=Q(completed_at__isnull=True), name="stampcard_one_open_per_member"
            ),
            models.CheckConstraint(condition=Q(stamps__gte=0), name="stampcard_stamps_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.member}: {self.stamps}/{self.programme.stamps_needed}"


class StampEvent(models.Model):
    """Stamps added by a purchase or removed by a return: the stamp card's history."""

    card = models.ForeignKey(StampCard, on_delete=models.PROTECT, related_name="events")
    purchase = models.ForeignKey(Purchase, null=True, blank=True, on_delete=models.PROTECT, related_name="stamp_events")
    return_record = models.ForeignKey(Return, null=True, blank=True, on_delete=models.PROTECT, related_name="stamp_events")
    stamps = models.SmallIntegerField(_("stamps"))
    detail = models.JSONField(default=dict, blank=True, help_text="Figures the explanation is written from.")
    created_at = models.DateTimeField(_("when"), default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = _("stamp")
        verbose_name_plural = _("stamps")
        constraints = [
            models.CheckConstraint(condition=~Q(stamps=0), name="stampevent_not_zero"),
            models.UniqueConstraint(
                fields=["card", "purchase"], condition=Q(return_record__isnull=True), name="stampevent_once_per_purchase"
            ),
            models.UniqueConstraint(fields=["card", "return_record"], name="stampevent_once_per_return"),
        ]

    def __str__(self) -> str:
        return f"{self.stamps:+d} on {self.card}"


# --- the programme clock --------------------------------------------------------------


class JobRun(models.Model):
    """One run of a clock job, with what it did and how long it took (shown in the admin)."""

    class Status(models.TextChoices):
        RUNNING = "running", _("Running")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")

    job = models.CharField(_("job"), max_length=50)
    started_at = models.DateTimeField(_("started"), default=timezone.now)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.RUNNING)
    counts = models.JSONField(_("counts"), default=dict, blank=True)
    error = models.TextField(_("error"), blank=True)

    class Meta:
        ordering = ["-started_at", "-pk"]
        indexes = [models.Index(fields=["job", "-started_at"], name="jobrun_job_recent")]
        verbose_name = _("clock job run")
        verbose_name_plural = _("clock job runs")

    def __str__(self) -> str:
        return f"{self.job} {self.started_at:%Y-%m-%d %H:%M}"

    @property
    def duration(self) -> dt.timedelta | None:
        return self.finished_at - self.started_at if self.finished_at else None


# --- history imports ----------------------------------------------------------------------


def imports_storage():  # type: ignore[no-untyped-def]
    """Where uploaded history waits for the worker: a storage of its own, never served on the web."""
    from django.core.files.storage import storages

    return storages["imports"]


class HistoryImport(models.Model):
    """A file of members or purchases uploaded in the admin, checked and imported by a worker.

    The file is kept until an import writes it (a dry run keeps it, for "Import this file now"),
    then deleted: it holds phone numbers and e-mail addresses. The report stays.
    """

    class Kind(models.TextChoices):
        PURCHASES = "purchases", _("Purchases")
        MEMBERS = "members", _("Members")

    class Status(models.TextChoices):
        QUEUED = "queued", _("Waiting for a worker")
        RUNNING = "running", _("Running")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")

    PENDING = (Status.QUEUED, Status.RUNNING)

    kind = models.CharField(_("what the file holds"), max_length=10, choices=Kind.choices)
    file = models.FileField(_("file"), upload_to="history/%Y/%m/", storage=imports_storage, blank=True)
    file_name = models.CharField(_("file name"), max_length=255)
    store = models.ForeignKey(
        Store,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("store"),
        help_text=_("For purchase rows without a store column."),
    )
    create_members = models.BooleanField(_("enrol unknown phone numbers and e-mails"), default=False)
    skip_invalid = models.BooleanField(_("import the good rows even if some are bad"), default=False)
    dry_run = models.BooleanField(_("only check the file"), default=True)
    # The messages of the report are written in the language of whoever asked for it.
    language = models.CharField(_("language"), max_length=10)
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.QUEUED)
    # Purchases are written a chunk at a time, each committed: the page shows how far the worker is.
    rows_written = models.PositiveIntegerField(_("rows written"), default=0)
    rows_to_write = models.PositiveIntegerField(_("rows to write"), default=0)
    # Touched by the worker at each phase and chunk: a run long silent has lost its worker.
    heartbeat_at = models.DateTimeField(_("last sign of its worker"), null=True, blank=True)
    # Failed for a reason that running it again can cure (a worker stopped, no broker), not a bad file.
    can_retry = models.BooleanField(default=False, editable=False)
    report = models.JSONField(_("report"), default=dict, blank=True)
    error = models.TextField(_("error"), blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+", verbose_name=_("requested by")
    )
    requested_at = models.DateTimeField(_("requested"), default=timezone.now)
    started_at = models.DateTimeField(_("started"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)

    class Meta:
        ordering = ["-requested_at", "-pk"]
        verbose_name = _("history import")
        verbose_name_plural = _("history imports")

    def __str__(self) -> str:
        return f"{self.file_name} ({self.requested_at:%Y-%m-%d %H:%M})"

    @property
    def pending(self) -> bool:
        return self.status in self.PENDING
