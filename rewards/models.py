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
                condition=~Q(kind__in=["spend", "clawback", "expire"]) | Q(points__lt=0), name="entry_debit_negative"
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
