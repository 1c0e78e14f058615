import secrets
import zoneinfo

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from phonenumber_field.modelfields import PhoneNumberField


def validate_timezone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(_("%(value)s is not a known time zone."), params={"value": value})


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **fields: object) -> "User":
        if not email:
            raise ValueError("An e-mail address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **fields: object) -> "User":
        fields.update(is_staff=True, is_superuser=True)
        return self.create_user(email, password, **fields)


class User(AbstractBaseUser, PermissionsMixin):
    """A login: store staff, marketers, admins, and members who claimed their card online."""

    email = models.EmailField(_("e-mail"), unique=True)
    name = models.CharField(_("name"), max_length=150, blank=True)
    is_staff = models.BooleanField(_("staff status"), default=False, help_text=_("Can log in to the admin and the staff pages."))
    is_active = models.BooleanField(_("active"), default=True)
    date_joined = models.DateTimeField(_("date joined"), default=timezone.now)
    stores = models.ManyToManyField(
        "Store", blank=True, related_name="staff", verbose_name=_("stores"), help_text=_("Stores this person works in.")
    )

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        verbose_name = _("user")
        verbose_name_plural = _("users")
        constraints = [models.UniqueConstraint(Lower("email"), name="user_email_ci_unique")]

    def __str__(self) -> str:
        return self.name or self.email

    def get_full_name(self) -> str:
        return self.name

    def get_short_name(self) -> str:
        return self.name or self.email


class Store(models.Model):
    code = models.SlugField(_("code"), max_length=20, unique=True, help_text=_("Short code printed on receipts."))
    name = models.CharField(_("name"), max_length=100)
    timezone = models.CharField(_("time zone"), max_length=64, default="Asia/Shanghai", validators=[validate_timezone])
    address = models.TextField(_("address"), blank=True)
    is_active = models.BooleanField(_("active"), default=True)

    class Meta:
        ordering = ["code"]
        verbose_name = _("store")
        verbose_name_plural = _("stores")

    def __str__(self) -> str:
        return f"{self.name} ({self.code})"


class Category(models.Model):
    """A kind of product the merchant sells, that members may name as a favourite and offers may target."""

    code = models.SlugField(
        _("code"), max_length=50, unique=True, help_text=_("As the tills send it on receipt lines, e.g. “coffee”.")
    )
    name = models.CharField(_("name"), max_length=100)
    position = models.PositiveSmallIntegerField(_("position"), default=0, help_text=_("Lower comes first on the profile page."))
    is_active = models.BooleanField(_("active"), default=True)

    class Meta:
        ordering = ["position", "code"]
        verbose_name = _("product category")
        verbose_name_plural = _("product categories")

    def __str__(self) -> str:
        return self.name


class MemberQuerySet(models.QuerySet["Member"]):
    def active(self) -> "MemberQuerySet":
        return self.filter(status=Member.Status.ACTIVE)

    def with_email(self, email: str) -> "MemberQuerySet":
        """Match an e-mail as the unique index does (LOWER), so a lookup never finds two."""
        return self.annotate(email_lower=Lower("email")).filter(email_lower=email.strip().lower())


def new_card_code() -> str:
    # 80 random bits in Crockford-style base32: scannable as Code 128 or QR, never guessable.
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    return "".join(secrets.choice(alphabet) for _ in range(16))


class MemberStatus(models.TextChoices):
    ACTIVE = "active", _("Active")
    BLOCKED = "blocked", _("Blocked")
    CLOSED = "closed", _("Closed")


class Gender(models.TextChoices):
    FEMALE = "female", _("Female")
    MALE = "male", _("Male")
    OTHER = "other", _("Other")


class EnrolmentChannel(models.TextChoices):
    COUNTER = "counter", _("At the counter")
    ONLINE = "online", _("Online")
    API = "api", _("Till or web shop")
    IMPORT = "import", _("Imported")
    ADMIN = "admin", _("Admin")


class Language(models.TextChoices):
    ENGLISH = "en", "English"
    SIMPLIFIED_CHINESE = "zh-hans", "简体中文"
    TRADITIONAL_CHINESE = "zh-hant", "繁體中文"
    KOREAN = "ko", "한국어"


class Member(models.Model):
    """The loyalty identity. May exist without a login: enrolled at the counter by phone only."""

    Status = MemberStatus
    Gender = Gender
    Channel = EnrolmentChannel
    Language = Language

    member_number = models.CharField(_("member number"), max_length=12, unique=True, editable=False)
    card_code = models.CharField(_("card code"), max_length=16, unique=True, editable=False, default=new_card_code)
    user = models.OneToOneField(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="member", verbose_name=_("login")
    )
    phone = PhoneNumberField(_("phone"), null=True, blank=True, unique=True)
    email = models.EmailField(_("e-mail"), blank=True)
    name = models.CharField(_("name"), max_length=150, blank=True)
    birthday = models.DateField(_("birthday"), null=True, blank=True)
    notes = models.TextField(
        _("notes for staff"), blank=True, help_text=_("Seen by staff only, e.g. “oat milk, no sugar”. Never shown to the member.")
    )
    gender = models.CharField(_("gender"), max_length=10, choices=Gender.choices, blank=True)
    language = models.CharField(_("language"), max_length=10, choices=Language.choices, default=Language.ENGLISH)
    external_ref = models.CharField(
        _("external reference"), max_length=64, blank=True, help_text=_("The member's id in another system.")
    )
    preferred_store = models.ForeignKey(
        Store, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", verbose_name=_("preferred store")
    )
    favourite_categories = models.ManyToManyField(
        Category, blank=True, related_name="fans", verbose_name=_("favourite categories")
    )
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.ACTIVE)
    enrolled_at = models.DateTimeField(_("enrolled at"), default=timezone.now)
    enrolment_channel = models.CharField(_("enrolled via"), max_length=10, choices=Channel.choices)
    enrolled_store = models.ForeignKey(
        Store, null=True, blank=True, on_delete=models.PROTECT, related_name="enrolments", verbose_name=_("enrolled at store")
    )
    enrolled_by = models.ForeignKey(
        User, null=True, blank=True, on_delete=models.SET_NULL, related_name="enrolments", verbose_name=_("enrolled by")
    )
    email_consent = models.BooleanField(_("e-mail marketing"), default=False)
    email_consent_at = models.DateTimeField(_("e-mail consent changed"), null=True, blank=True)
    sms_consent = models.BooleanField(_("SMS marketing"), default=False)
    sms_consent_at = models.DateTimeField(_("SMS consent changed"), null=True, blank=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    objects = MemberQuerySet.as_manager()

    class Meta:
        ordering = ["-enrolled_at"]
        verbose_name = _("member")
        verbose_name_plural = _("members")
        constraints = [
            # A closed membership keeps neither: its contact details are erased.
            models.CheckConstraint(
                condition=models.Q(phone__isnull=False) | ~models.Q(email="") | models.Q(status=MemberStatus.CLOSED),
                name="member_phone_or_email",
            ),
            models.UniqueConstraint(Lower("email"), condition=~models.Q(email=""), name="member_email_ci_unique"),
            models.UniqueConstraint(
                fields=["external_ref"], condition=~models.Q(external_ref=""), name="member_external_ref_unique"
            ),
            models.CheckConstraint(condition=models.Q(status__in=MemberStatus.values), name="member_status_valid"),
            models.CheckConstraint(
                condition=models.Q(enrolment_channel__in=EnrolmentChannel.values), name="member_channel_valid"
            ),
        ]
        indexes = [models.Index(Lower("name"), name="member_name_lower")]

    def __str__(self) -> str:
        return f"{self.name or self.phone or self.email} ({self.member_number})"

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


class ConsentChannel(models.TextChoices):
    EMAIL = "email", _("E-mail")
    SMS = "sms", _("SMS")


class ConsentRecord(models.Model):
    """Every change of marketing consent, as evidence of when and how it was given or withdrawn."""

    Channel = ConsentChannel

    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="consent_records")
    channel = models.CharField(_("channel"), max_length=10, choices=Channel.choices)
    granted = models.BooleanField(_("granted"))
    recorded_at = models.DateTimeField(_("recorded at"), default=timezone.now)
    source = models.CharField(_("source"), max_length=50, help_text=_("Where it was given: counter, portal, import…"))
    recorded_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-recorded_at"]
        verbose_name = _("consent record")
        verbose_name_plural = _("consent records")
        constraints = [
            models.CheckConstraint(condition=models.Q(channel__in=ConsentChannel.values), name="consent_channel_valid")
        ]

    def __str__(self) -> str:
        return f"{self.get_channel_display()}: {'granted' if self.granted else 'withdrawn'}"


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def active(self) -> "ApiKeyQuerySet":
        return self.filter(revoked_at__isnull=True)


class ApiKey(models.Model):
    """A till's or web shop's key to the API; it acts for one store. Only a hash is stored."""

    store = models.ForeignKey(Store, on_delete=models.PROTECT, related_name="api_keys", verbose_name=_("store"))
    name = models.CharField(_("name"), max_length=100, help_text=_("Which till or shop uses it, e.g. “Till 2”."))
    prefix = models.CharField(_("prefix"), max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    requests_per_minute = models.PositiveIntegerField(_("requests per minute"), default=1200)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False)
    last_used_at = models.DateTimeField(_("last used"), null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(_("revoked"), null=True, blank=True, editable=False)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["store", "name"]
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class IdempotentRequest(models.Model):
    """A write already answered for a store: a retry with the same key gets the same answer."""

    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=200)
    request_hash = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField()
    response = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["store", "key"], name="idempotent_request_once_per_store")]

    def __str__(self) -> str:
        return self.key


class NotificationKind(models.TextChoices):
    POINTS_EARNED = "points_earned", _("Points earned")
    POINTS_EXPIRING = "points_expiring", _("Points expiring soon")
    POINTS_LAST_CHANCE = "points_last_chance", _("Last chance before points expire")
    TIER_UP = "tier_up", _("New tier")
    TIER_KEPT = "tier_kept", _("Tier kept")
    TIER_LOWERED = "tier_lowered", _("Tier lowered")
    BIRTHDAY_BONUS = "birthday_bonus", _("Birthday bonus")
    VOUCHER_ISSUED = "voucher_issued", _("Voucher issued")
    VOUCHER_EXPIRING = "voucher_expiring", _("Voucher expiring soon")
    REFERRAL_REWARD = "referral_reward", _("Referral reward")


class DeliveryStatus(models.TextChoices):
    NOT_SENT = "", _("Inbox only")
    PENDING = "pending", _("Waiting to be sent")
    SENT = "sent", _("Sent")
    NO_CONSENT = "no_consent", _("Not sent: no consent")
    NO_ADDRESS = "no_address", _("Not sent: no address")
    FAILED = "failed", _("Failed")


class Notification(models.Model):
    """One message to a member: always in the portal inbox, and by e-mail or SMS when they agreed.

    Written in the member's language when created, so the inbox reads the same later. `key` makes
    each message once-only (a job run twice, a task delivered twice).
    """

    Kind = NotificationKind
    Delivery = DeliveryStatus

    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="notifications")
    kind = models.CharField(_("kind"), max_length=30, choices=Kind.choices)
    key = models.CharField(max_length=120, editable=False, help_text="Makes the message once-only per member.")
    subject = models.CharField(_("subject"), max_length=200)
    body = models.TextField(_("message"))
    link = models.CharField(_("link"), max_length=200, blank=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    read_at = models.DateTimeField(_("read"), null=True, blank=True)
    email_status = models.CharField(_("e-mail"), max_length=12, choices=Delivery.choices, blank=True, default="")
    sms_status = models.CharField(_("SMS"), max_length=12, choices=Delivery.choices, blank=True, default="")
    delivered_at = models.DateTimeField(_("delivered"), null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["member", "-created_at"], name="notification_member_recent"),
            models.Index(fields=["member"], condition=models.Q(read_at__isnull=True), name="notification_unread"),
            # The clock's sweep for deliveries whose task was lost.
            models.Index(
                fields=["created_at"],
                condition=models.Q(email_status="pending") | models.Q(sms_status="pending"),
                name="notification_pending",
            ),
        ]
        verbose_name = _("notification")
        verbose_name_plural = _("notifications")
        constraints = [
            models.UniqueConstraint(fields=["member", "key"], name="notification_once_per_key"),
            models.CheckConstraint(condition=models.Q(kind__in=NotificationKind.values), name="notification_kind_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.member}: {self.subject}"
