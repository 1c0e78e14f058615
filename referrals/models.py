import secrets
from decimal import Decimal

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from members.models import Member
from rewards.models import AMOUNT, Programme, Purchase, Reward

# Letters and digits that read back unambiguously over the phone (no 0/O, 1/I/L, U).
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 7  # 29^7 ≈ 17 billion: never guessed within the join throttle
DEVICES_KEPT = 10  # the referrer's most recent devices, compared with a friend's


def referral_code_new() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


class ReferralSettings(models.Model):
    """How the programme rewards a member who brings a friend, and how it guards against cheating."""

    programme = models.OneToOneField(Programme, on_delete=models.CASCADE, related_name="referral_settings")
    active = models.BooleanField(_("referrals on"), default=True, help_text=_("Off: codes are neither shown nor accepted."))
    qualifying_amount = models.DecimalField(
        _("qualifying purchase from"),
        **AMOUNT,
        default=Decimal(0),
        validators=[MinValueValidator(Decimal(0))],
        help_text=_("The friend's first purchase must be at least this amount (after discounts)."),
    )
    qualifying_days = models.PositiveSmallIntegerField(
        _("days to qualify"), default=30, help_text=_("The friend has this many days from joining to make it.")
    )
    referrer_points = models.PositiveIntegerField(_("points for the member who invites"), default=0)
    referrer_reward = models.ForeignKey(
        Reward,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        verbose_name=_("reward for the member who invites"),
        help_text=_("A voucher from the catalog, given as well as or instead of points."),
    )
    friend_points = models.PositiveIntegerField(_("points for the friend"), default=0)
    friend_reward = models.ForeignKey(
        Reward, null=True, blank=True, on_delete=models.PROTECT, related_name="+", verbose_name=_("reward for the friend")
    )
    hold_days = models.PositiveSmallIntegerField(
        _("hold (days)"),
        default=14,
        help_text=_("Rewards stay pending this long after the qualifying purchase; returning it meanwhile cancels them."),
    )
    monthly_cap = models.PositiveSmallIntegerField(
        _("friends rewarded a month"),
        null=True,
        blank=True,
        default=10,
        help_text=_("Per member who invites; beyond it the friend is still rewarded. Empty: no limit."),
    )
    manual_approval = models.BooleanField(
        _("approve every reward by hand"), default=False, help_text=_("Every qualified referral waits in the review queue.")
    )
    guard_same_contact = models.BooleanField(
        _("check for the inviter's phone or e-mail"),
        default=True,
        help_text=_("E-mails are compared without case, dots or +tags at the common providers."),
    )
    guard_same_device = models.BooleanField(
        _("check for the inviter's device or payment card"),
        default=True,
        help_text=_("When the portal or the till reports a device or payment fingerprint."),
    )
    guard_staff_self = models.BooleanField(
        _("check for purchases rung up by the inviter"),
        default=True,
        help_text=_("A qualifying purchase recorded by the inviter's own staff login."),
    )
    burst_hours = models.PositiveSmallIntegerField(_("burst window (hours)"), default=24)
    signups_per_ip = models.PositiveSmallIntegerField(
        _("sign-ups from one network"), null=True, blank=True, default=5, help_text=_("More within the window is suspicious.")
    )
    joins_per_referrer = models.PositiveSmallIntegerField(
        _("friends of one member"), null=True, blank=True, default=10, help_text=_("More within the window is suspicious.")
    )
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("referral settings")
        verbose_name_plural = _("referral settings")

    def __str__(self) -> str:
        return str(_("Referral settings"))


class ReferralCode(models.Model):
    """A member's code, shared as a link (/join/<code>); made the first time it is shown."""

    member = models.OneToOneField(Member, on_delete=models.CASCADE, related_name="referral_code", primary_key=True)
    code = models.CharField(_("code"), max_length=12, unique=True, default=referral_code_new)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    shares = models.PositiveIntegerField(_("times shared"), default=0)
    visits = models.PositiveIntegerField(_("link visits"), default=0)
    # Hashes only (never the raw fingerprint), compared with a friend's to spot one person with two accounts.
    devices = ArrayField(models.CharField(max_length=64), default=list, blank=True, editable=False)

    class Meta:
        verbose_name = _("referral code")
        verbose_name_plural = _("referral codes")

    def __str__(self) -> str:
        return self.code


class ReferralStatus(models.TextChoices):
    JOINED = "joined", _("Joined")
    REVIEW = "review", _("In review")
    QUALIFIED = "qualified", _("Qualified")
    REWARDED = "rewarded", _("Rewarded")
    EXPIRED = "expired", _("Expired")
    REJECTED = "rejected", _("Rejected")


class ReferralFlag(models.TextChoices):
    """Why a referral looks suspicious; each guard has its own, shown to reviewers."""

    SAME_CONTACT = "same_contact", _("Same phone or e-mail as the inviter")
    SAME_DEVICE = "same_device", _("Same device as the inviter")
    SAME_PAYMENT = "same_payment", _("Paid with the inviter's card")
    IP_BURST = "ip_burst", _("Many sign-ups from one network")
    REFERRER_BURST = "referrer_burst", _("Many friends joined in a short time")
    STAFF_SELF = "staff_self", _("Purchase rung up by the inviter's staff login")
    MANUAL = "manual", _("Every reward is approved by hand")


class Referral(models.Model):
    """A friend who joined with a member's code, and what became of it."""

    Status = ReferralStatus
    Flag = ReferralFlag

    referrer = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="referrals_made", verbose_name=_("inviter"))
    # One referral per member, ever: a friend is referred once.
    friend = models.OneToOneField(Member, on_delete=models.PROTECT, related_name="referred_by", verbose_name=_("friend"))
    code = models.CharField(_("code used"), max_length=12)
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.JOINED)
    joined_at = models.DateTimeField(_("joined"), default=timezone.now)
    qualify_by = models.DateTimeField(_("must qualify by"))
    signup_ip = models.GenericIPAddressField(_("sign-up address"), null=True, blank=True)
    device = models.CharField(max_length=64, blank=True, editable=False)
    flags = ArrayField(models.CharField(max_length=20, choices=Flag.choices), default=list, blank=True)
    purchase = models.OneToOneField(
        Purchase,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="referral",
        verbose_name=_("qualifying purchase"),
    )
    qualified_at = models.DateTimeField(_("qualified"), null=True, blank=True)
    hold_until = models.DateTimeField(_("rewards held until"), null=True, blank=True)
    referrer_points = models.PositiveIntegerField(_("points to the inviter"), default=0)
    friend_points = models.PositiveIntegerField(_("points to the friend"), default=0)
    capped = models.BooleanField(_("inviter over the monthly cap"), default=False)
    # The inviter's share is settled in its own transaction after the friend's (see referrals.services).
    referrer_settled_at = models.DateTimeField(_("inviter's share settled"), null=True, blank=True)
    closed_at = models.DateTimeField(_("closed"), null=True, blank=True, help_text=_("Rewarded, expired or rejected."))
    # Which sentence a rejection's withdrawn points get in the members' history: "returned" or "rejected" (review).
    rejected_why = models.CharField(max_length=10, blank=True, editable=False)

    class Meta:
        ordering = ["-joined_at"]
        verbose_name = _("referral")
        verbose_name_plural = _("referrals")
        constraints = [
            models.CheckConstraint(condition=~Q(referrer=models.F("friend")), name="referral_not_self"),
            models.CheckConstraint(condition=Q(status__in=ReferralStatus.values), name="referral_status_valid"),
        ]
        indexes = [
            models.Index(fields=["referrer", "joined_at"], name="referral_referrer_joined"),
            # The clock's two sweeps: friends who never qualified, and rewards whose hold is over.
            models.Index(fields=["qualify_by"], condition=Q(status="joined"), name="referral_joined_due"),
            models.Index(fields=["hold_until"], condition=Q(status="qualified"), name="referral_held_due"),
            models.Index(
                fields=["id"],
                condition=Q(referrer_settled_at__isnull=True, status__in=["qualified", "rewarded", "rejected"]),
                name="referral_referrer_unsettled",
            ),
            models.Index(fields=["signup_ip", "joined_at"], name="referral_ip_joined"),
        ]

    def __str__(self) -> str:
        return f"{self.referrer.member_number} → {self.friend.member_number}"

    def flags_text(self) -> str:
        """Say why the referral looks suspicious, in the reader's language."""
        return "; ".join(str(ReferralFlag(flag).label) for flag in self.flags)


class ReferralEvent(models.Model):
    """One change of a referral's status, with its reason: the audit trail reviewers and members read."""

    referral = models.ForeignKey(Referral, on_delete=models.CASCADE, related_name="events")
    status = models.CharField(_("status"), max_length=10, choices=ReferralStatus.choices)
    reason = models.CharField(_("reason"), max_length=300, blank=True)
    at = models.DateTimeField(_("when"), default=timezone.now)
    by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["at", "pk"]
        verbose_name = _("referral event")
        verbose_name_plural = _("referral events")

    def __str__(self) -> str:
        return f"{self.referral_id}: {self.status}"
