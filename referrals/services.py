"""Referrals: a friend joins with a member's code, qualifies with a purchase, and both are rewarded once.

Each transaction locks one points account, then the referral: the friend's share (a purchase or
return hook holds the friend's account already; reviewers' actions and returns take it first) and,
after commit and in its own transaction, the inviter's share (`referral_referrer_settle`). A
friend's purchase therefore never waits on the inviter's account, which a till's batch may hold.
"""

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _

from members.hooks import MemberEnrolled
from members.models import Member, Notification, User
from members.notifications import notify
from members.services import fingerprint_digest
from members.tasks import send_after_commit
from referrals.models import CODE_ALPHABET, DEVICES_KEPT, Referral, ReferralCode, ReferralEvent, ReferralSettings
from rewards import catalog
from rewards import services as reward_services
from rewards.hooks import PurchaseRecorded, ReturnRecorded
from rewards.models import LedgerEntry, Purchase

# Providers known to ignore dots in the local part, and those known to deliver "name+tag" to "name".
DOTLESS_DOMAINS = {"gmail.com", "googlemail.com"}
PLUS_TAG_DOMAINS = DOTLESS_DOMAINS | {
    "outlook.com",
    "hotmail.com",
    "live.com",
    "icloud.com",
    "me.com",
    "yahoo.com",
    "proton.me",
    "protonmail.com",
    "fastmail.com",
    "qq.com",
    "163.com",
    "126.com",
    "naver.com",
}


# A name that starts with a Chinese character, kana or Hangul.
CJK_NAME = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")


class ReferralError(ValidationError):
    """A referral code that cannot be used, named on the `referral_code` field."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__({"referral_code": message}, code=code)


def settings_get() -> ReferralSettings:
    """Return the programme's referral settings (with their rewards), created with the defaults the first time.

    Raises ProgrammeNotConfigured before the programme is set up.
    """
    # One row for the one programme: read in one query on every purchase a referred friend makes.
    found = ReferralSettings.objects.select_related("friend_reward", "referrer_reward").first()
    if found is not None:
        return found
    programme = reward_services.programme_get()
    ReferralSettings.objects.bulk_create([ReferralSettings(programme=programme)], ignore_conflicts=True)
    return ReferralSettings.objects.get(programme=programme)


def code_normalise(code: str) -> str:
    """Read a code as people type it: any case, with spaces or dashes (its alphabet has no look-alike letters)."""
    return re.sub(r"[\s-]+", "", code).upper()


def referral_code_for(member: Member) -> ReferralCode:
    """Return the member's referral code, made the first time it is asked for."""
    found = ReferralCode.objects.filter(member=member).first()
    if found is not None:
        return found
    for _attempt in range(5):
        try:
            with transaction.atomic():
                return ReferralCode.objects.create(member=member)
        except IntegrityError:
            # Either a twin request made this member's code, or the random code was taken: look, then retry.
            if (found := ReferralCode.objects.filter(member=member).first()) is not None:
                return found
    raise RuntimeError("could not allocate a unique referral code")


def referral_code_find(code: str) -> ReferralCode | None:
    code = code_normalise(code)
    if not code or any(char not in CODE_ALPHABET for char in code):
        return None
    return ReferralCode.objects.select_related("member", "member__user").filter(code=code).first()


def email_canonical(email: str) -> str:
    """Return the mailbox an address reaches: one person's "M.Lin+shop@gmail.com" and "mlin@gmail.com" are one."""
    local, _at, domain = email.strip().lower().rpartition("@")
    if not local:
        return ""
    if domain == "googlemail.com":
        domain = "gmail.com"
    if domain in PLUS_TAG_DOMAINS:
        local = local.split("+", 1)[0]
    if domain in DOTLESS_DOMAINS:
        local = local.replace(".", "")
    return f"{local}@{domain}"


DEVICE_APPEND_SQL = """
UPDATE referrals_referralcode
SET devices = (array_append(devices, %(digest)s))[GREATEST(cardinality(devices) + 2 - %(kept)s, 1):]
WHERE member_id = %(member)s AND NOT %(digest)s = ANY(devices)
"""


def device_seen(*, member: Member, device: str) -> None:
    """Remember a device the member used (as a keyed hash, the last few only), to spot a friend signing up on it."""
    digest = fingerprint_digest("device", device)
    if digest:
        referral_code_for(member)
        # In one statement, so two requests of the member never overwrite each other's device.
        with connection.cursor() as cursor:
            cursor.execute(DEVICE_APPEND_SQL, {"digest": digest, "kept": DEVICES_KEPT, "member": member.pk})


def _event(referral: Referral, reason: str, *, by: User | None = None, at: dt.datetime | None = None) -> None:
    ReferralEvent.objects.create(referral=referral, status=referral.status, reason=reason, by=by, at=at or timezone.now())


# --- joining ----------------------------------------------------------------------------------


def _join_flags(
    settings: ReferralSettings, referrer: Member, friend: Member, *, ip: str | None, device: str, now: dt.datetime
) -> list[str]:
    flags = []
    if settings.guard_same_contact:
        referrer_emails = {email_canonical(e) for e in (referrer.email, referrer.user.email if referrer.user else "") if e}
        friend_emails = {email_canonical(e) for e in (friend.email, friend.user.email if friend.user else "") if e}
        same_phone = referrer.phone is not None and friend.phone is not None and str(referrer.phone) == str(friend.phone)
        if same_phone or referrer_emails & friend_emails:
            flags.append(Referral.Flag.SAME_CONTACT)
    digest = fingerprint_digest("device", device)
    if settings.guard_same_device and digest and digest in referrer.referral_code.devices:
        flags.append(Referral.Flag.SAME_DEVICE)
    since = now - dt.timedelta(hours=settings.burst_hours)
    from_ip = Referral.objects.filter(signup_ip=ip, joined_at__gte=since)
    if settings.signups_per_ip and ip and from_ip.count() >= settings.signups_per_ip:
        flags.append(Referral.Flag.IP_BURST)
    of_referrer = Referral.objects.filter(referrer=referrer, joined_at__gte=since)
    if settings.joins_per_referrer and of_referrer.count() >= settings.joins_per_referrer:
        flags.append(Referral.Flag.REFERRER_BURST)
    return flags


@transaction.atomic
def referral_join(
    *, friend: Member, code: str, ip: str | None = None, device: str = "", now: dt.datetime | None = None
) -> Referral | None:
    """Record that the friend joined with a member's code; None when referrals are off.

    Raises ReferralError (on `referral_code`) for a code nobody has, the friend's own, or a member
    already referred, so the caller's enrolment is undone with it.
    """
    now = now or timezone.now()
    settings = settings_get()
    if not settings.active:
        return None
    found = referral_code_find(code)
    if found is None:
        raise ReferralError(_("No member has this referral code. Check it, or leave it empty."), code="unknown")
    referrer = found.member
    if referrer.pk == friend.pk:
        raise ReferralError(_("You cannot use your own referral code."), code="self")
    if referrer.status != Member.Status.ACTIVE:
        raise ReferralError(_("This referral code can no longer be used."), code="inactive")
    if Referral.objects.filter(friend=friend).exists():
        raise ReferralError(_("This member was already referred by someone."), code="already_referred")
    flags = _join_flags(settings, referrer, friend, ip=ip, device=device, now=now)
    referral = Referral(
        referrer=referrer,
        friend=friend,
        code=found.code,
        joined_at=now,
        qualify_by=now + dt.timedelta(days=settings.qualifying_days),
        signup_ip=ip,
        device=fingerprint_digest("device", device),
        flags=flags,
    )
    try:
        with transaction.atomic():
            referral.save(force_insert=True)
    except IntegrityError:  # a twin request referred this friend a moment ago
        raise ReferralError(_("This member was already referred by someone."), code="already_referred") from None
    _event(referral, referral.flags_text(), at=now)
    return referral


def on_member_enrolled(event: MemberEnrolled) -> None:
    """Enrolment hook: a code typed or carried by a link makes the new member a referral.

    The device they enrolled on is remembered too, so a friend later signing up on it is recognised.
    """
    if event.device:
        device_seen(member=event.member, device=event.device)
    if event.referral_code:
        # Joined when enrolled: an import of members from another system keeps their dates.
        referral_join(
            friend=event.member, code=event.referral_code, ip=event.ip, device=event.device, now=event.member.enrolled_at
        )


# --- qualifying and paying out ----------------------------------------------------------------


def _month_start(now: dt.datetime) -> dt.datetime:
    local = now.astimezone(reward_services.programme_get().tz)
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def member_display_name(member: Member) -> str:
    """Name a member to another as little as possible: a first name, or a masked phone or e-mail."""
    name = member.name.strip()
    if CJK_NAME.match(name):
        # Chinese, Japanese and Korean names are written whole, without spaces: the family name only ("王••", "김••").
        return name[0] + "•" * min(len(name) - 1, 2)
    if name:
        return name.split()[0]
    if member.phone:
        return f"••• {str(member.phone)[-4:]}"
    local, _at, domain = member.email.partition("@")
    return f"{local[:1]}•••@{domain}" if local else _("a friend")


def _grant(referral: Referral, *, member: Member, role: str, points: int, by: User | None) -> None:
    if points:
        other = referral.friend if role == "referrer" else referral.referrer
        reward_services.points_grant(
            member=member,
            points=points,
            kind=LedgerEntry.Kind.REFERRAL,
            idempotency_key=f"referral:{referral.pk}:{role}",
            detail={"referral": referral.pk, "role": role, "name": member_display_name(other)},
            reason=_("Referral reward"),
            hold_until=referral.hold_until,
            by=by,
        )


def _notify(referral: Referral, settings: ReferralSettings, *, role: str) -> None:
    friend = role == "friend"
    notify(
        member=referral.friend if friend else referral.referrer,
        kind=Notification.Kind.REFERRAL_REWARD,
        key=f"referral:{referral.pk}:{role}",
        context={
            "role": role,
            "name": member_display_name(referral.referrer if friend else referral.friend),
            "points": referral.friend_points if friend else referral.referrer_points,
            "reward": settings.friend_reward if friend else settings.referrer_reward,
            "hold_until": referral.hold_until,
        },
        link=reverse("portal:invite"),
    )


def _referrer_settle_later(referral: Referral) -> None:
    """Settle the inviter's share in its own transaction once this one commits (the clock catches a lost task)."""
    from referrals.tasks import settle_referrer  # tasks import this module

    referral.referrer_settled_at = None
    send_after_commit(settle_referrer, referral.pk)


def _payout(referral: Referral, settings: ReferralSettings, *, now: dt.datetime, by: User | None = None) -> None:
    """Qualify the referral: the friend's reward now, held; the inviter's right after, in its own transaction.

    The caller holds the friend's account lock. Each transaction locks one points account only, so a
    friend's purchase and a till's batch holding the inviter's account can never wait on each other.
    """
    referral.status = Referral.Status.QUALIFIED
    # Held from the purchase, as its own points wait out the return window: a sale a till sends late, or one
    # approved after review, is not held twice.
    referral.hold_until = referral.purchase.occurred_at + dt.timedelta(days=settings.hold_days)  # type: ignore[union-attr]
    referral.friend_points = settings.friend_points
    _grant(referral, member=referral.friend, role="friend", points=settings.friend_points, by=by)
    _referrer_settle_later(referral)
    referral.save(update_fields=["status", "hold_until", "friend_points", "qualified_at", "purchase", "referrer_settled_at"])
    _event(referral, "", by=by, at=now)
    _notify(referral, settings, role="friend")
    if referral.hold_until <= now:
        _reward(referral, settings, now=now)


def _reward(referral: Referral, settings: ReferralSettings, *, now: dt.datetime) -> None:
    """End the hold: the points were pending until now; catalog rewards are issued as vouchers."""
    referral.status = Referral.Status.REWARDED
    referral.closed_at = now
    referral.save(update_fields=["status", "closed_at"])
    if settings.friend_reward is not None:
        catalog.voucher_issue(member=referral.friend, reward=settings.friend_reward, now=now)
    # The inviter's voucher goes out with whichever comes last: the end of the hold or their settling.
    if settings.referrer_reward is not None and referral.referrer_settled_at is not None and not referral.capped:
        catalog.voucher_issue(member=referral.referrer, reward=settings.referrer_reward, now=now)
    _event(referral, "", at=now)


@transaction.atomic
def referral_referrer_settle(*, referral_id: int) -> Referral | None:
    """Settle the inviter's share of a referral: pay it (within the monthly cap) or, once rejected, withdraw it.

    Idempotent: a referral whose inviter's share is settled is left alone. Locks the inviter's account,
    then the referral; every payout to one inviter waits on that account, so the cap is counted once.
    """
    referrer = Member.objects.filter(referrals_made__pk=referral_id).first()
    if referrer is None:
        return None
    reward_services.account_lock(referrer)
    referral = (
        Referral.objects.select_for_update(of=("self",))
        .select_related("referrer", "friend")
        .filter(pk=referral_id, referrer_settled_at__isnull=True)
        .first()
    )
    if referral is None:
        return None
    settings, now = settings_get(), timezone.now()
    if referral.status == Referral.Status.REJECTED:
        _withdraw(referral, role="referrer", reason=referral.events.last().reason, why=referral.rejected_why, by=None)
    elif referral.status in (Referral.Status.QUALIFIED, Referral.Status.REWARDED):
        paid = (
            Referral.objects.filter(
                referrer_id=referral.referrer_id,
                referrer_settled_at__gte=_month_start(now),
                capped=False,
            )
            .exclude(status=Referral.Status.REJECTED)
            .exclude(pk=referral.pk)
            .count()
        )
        if referral.referrer.status != Member.Status.ACTIVE:
            referral.capped = True
            _event(referral, _("The inviter's membership is no longer active."), at=now)
        elif settings.monthly_cap is not None and paid >= settings.monthly_cap:
            referral.capped = True
            _event(
                referral,
                _("The inviter reached this month's limit of %(cap)s rewarded friends.") % {"cap": settings.monthly_cap},
                at=now,
            )
        else:
            referral.referrer_points = settings.referrer_points
            _grant(referral, member=referral.referrer, role="referrer", points=settings.referrer_points, by=None)
            _notify(referral, settings, role="referrer")
            if referral.status == Referral.Status.REWARDED and settings.referrer_reward is not None:
                catalog.voucher_issue(member=referral.referrer, reward=settings.referrer_reward, now=now)
    referral.referrer_settled_at = now
    referral.save(update_fields=["referrer_settled_at", "referrer_points", "capped"])
    return referral


def _rung_up_by_inviter(purchase: Purchase, referrer: Member) -> bool:
    """Say whether the staff login that recorded the sale is the inviter's: their own login, or one of their addresses."""
    staff = purchase.recorded_by
    if staff is None:
        return False
    inviter_emails = {email_canonical(e) for e in (referrer.email, referrer.user.email if referrer.user else "") if e}
    return staff.pk == referrer.user_id or email_canonical(staff.email) in inviter_emails


def _qualify(referral: Referral, purchase: Purchase, settings: ReferralSettings, now: dt.datetime) -> None:
    flags = list(referral.flags)
    referrer = referral.referrer
    if settings.guard_staff_self and _rung_up_by_inviter(purchase, referrer):
        flags.append(Referral.Flag.STAFF_SELF)
    if (
        settings.guard_same_device
        and purchase.payment_fingerprint
        and Purchase.objects.filter(member=referrer, payment_fingerprint=purchase.payment_fingerprint).exists()
    ):
        flags.append(Referral.Flag.SAME_PAYMENT)
    if settings.manual_approval:
        flags.append(Referral.Flag.MANUAL)
    referral.purchase, referral.qualified_at, referral.flags = purchase, now, flags
    if flags:
        referral.status = Referral.Status.REVIEW
        referral.save(update_fields=["purchase", "qualified_at", "flags", "status"])
        _event(referral, referral.flags_text(), at=now)
        return
    _payout(referral, settings, now=now)


def on_purchases(events: Sequence[PurchaseRecorded]) -> None:
    """Purchase hook: a friend's first purchase of the qualifying amount, in time, qualifies their referral."""
    friends = {event.purchase.member_id for event in events if event.purchase.member_id is not None}
    if not friends:
        return
    # One query for the whole batch; most purchases are not a referred friend's.
    waiting = set(
        Referral.objects.filter(friend_id__in=friends, status=Referral.Status.JOINED)
        .order_by()
        .values_list("friend_id", flat=True)
    )
    if not waiting:
        return
    settings = settings_get()
    now = timezone.now()
    for event in events:
        purchase = event.purchase
        if purchase.member_id not in waiting or purchase.net < settings.qualifying_amount:
            continue
        referral = (
            Referral.objects.select_for_update(of=("self",))
            .select_related("referrer", "friend")
            .filter(friend_id=purchase.member_id, status=Referral.Status.JOINED, qualify_by__gt=purchase.occurred_at)
            .first()
        )
        if referral is not None and purchase.occurred_at >= referral.joined_at - dt.timedelta(minutes=5):
            _qualify(referral, purchase, settings, now)
            waiting.discard(purchase.member_id)


def _withdraw(referral: Referral, *, role: str, reason: str, why: str, by: User | None) -> None:
    """Take back one side's referral points while still pending; released points stay (the hold is over)."""
    member = referral.friend if role == "friend" else referral.referrer
    entry = LedgerEntry.objects.filter(account_id=member.pk, idempotency_key=f"referral:{referral.pk}:{role}").first()
    if entry is not None:
        reward_services.points_grant_cancel(
            entry=entry,
            idempotency_key=f"referral:{referral.pk}:{role}:cancel",
            detail={"referral": referral.pk, "role": role, "why": why},
            reason=reason,
            by=by,
        )


def _reject(referral: Referral, *, reason: str, why: str, by: User | None, now: dt.datetime) -> None:
    """Close the referral as rejected; `reason` is for reviewers, `why` ("returned" or "rejected") for the members.

    The caller holds the friend's account lock: their points are withdrawn now, the inviter's right after.
    """
    _withdraw(referral, role="friend", reason=reason, why=why, by=by)
    referral.status, referral.closed_at, referral.rejected_why = Referral.Status.REJECTED, now, why
    _referrer_settle_later(referral)
    referral.save(update_fields=["status", "closed_at", "rejected_why", "referrer_settled_at"])
    _event(referral, reason, by=by, at=now)


def on_return(event: ReturnRecorded) -> None:
    """Return hook: returning the qualifying purchase below the qualifying amount, during the hold, rejects the referral."""
    purchase = event.return_record.purchase
    now = timezone.now()
    held = Q(status=Referral.Status.REVIEW) | Q(status=Referral.Status.QUALIFIED, hold_until__gt=now)
    if purchase.member_id is None or not Referral.objects.filter(held, purchase=purchase).exists():
        return
    reward_services.account_lock(purchase.member)  # the friend's account first, as every path takes it
    referral = (
        Referral.objects.select_for_update(of=("self",))
        .select_related("referrer", "friend")
        .filter(held, purchase=purchase)
        .first()
    )
    if referral is None:
        return
    settings = settings_get()
    refunded = sum((r.amount for r in purchase.returns.all()), Decimal(0))
    if purchase.net - refunded >= settings.qualifying_amount and refunded < purchase.net:
        return
    _reject(
        referral,
        reason=_("The qualifying purchase was returned."),
        why="returned",
        by=event.return_record.recorded_by,
        now=now,
    )


# --- the review queue -------------------------------------------------------------------------


def _locked_for_review(referral: Referral, statuses: Sequence[str]) -> Referral:
    reward_services.account_lock(referral.friend)
    locked = (
        Referral.objects.select_for_update(of=("self",))
        .select_related("referrer", "friend", "purchase")
        .filter(pk=referral.pk, status__in=statuses)
        .first()
    )
    if locked is None:
        raise ValidationError(_("This referral was already decided."), code="decided")
    return locked


@transaction.atomic
def referral_approve(*, referral: Referral, by: User, note: str = "") -> Referral:
    """Pay out a referral waiting in review, with the reviewer's note."""
    referral = _locked_for_review(referral, [Referral.Status.REVIEW])
    now = timezone.now()
    _event(referral, note.strip() or _("Approved"), by=by, at=now)
    _payout(referral, settings_get(), now=now, by=by)
    return referral


@transaction.atomic
def referral_reject(*, referral: Referral, by: User, note: str) -> Referral:
    """Reject a referral (joined, in review, or held) with the reviewer's reason; pending rewards are taken back."""
    if not note.strip():
        raise ValidationError({"note": _("Say why: the note is kept with the referral.")})
    referral = _locked_for_review(referral, [Referral.Status.JOINED, Referral.Status.REVIEW, Referral.Status.QUALIFIED])
    _reject(referral, reason=note.strip(), why="rejected", by=by, now=timezone.now())
    return referral


# --- the clock --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferralsResult:
    referrals: int


EXPIRE_SQL = """
WITH expired AS (
    UPDATE referrals_referral SET status = 'expired', closed_at = %(now)s
    WHERE id IN (SELECT id FROM referrals_referral WHERE status = 'joined' AND qualify_by <= %(now)s
                 ORDER BY id LIMIT %(chunk)s FOR UPDATE SKIP LOCKED)
    RETURNING id
)
INSERT INTO referrals_referralevent (referral_id, status, reason, at, by_id)
SELECT id, 'expired', %(reason)s, %(now)s, NULL FROM expired
"""


def referrals_expire_due(*, now: dt.datetime | None = None, chunk: int = 5000) -> ReferralsResult:
    """Expire referrals whose friend made no qualifying purchase in time, in chunks; a second run finds none."""
    now = now or timezone.now()
    total = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(EXPIRE_SQL, {"now": now, "chunk": chunk, "reason": "No qualifying purchase in time."})
            total += cursor.rowcount
            if cursor.rowcount < chunk:
                return ReferralsResult(referrals=total)


def referrals_settle_due() -> ReferralsResult:
    """Settle inviters' shares left unsettled (their task was lost), each in its own transaction; usually none."""
    unsettled = Referral.objects.filter(
        referrer_settled_at__isnull=True,
        status__in=[Referral.Status.QUALIFIED, Referral.Status.REWARDED, Referral.Status.REJECTED],
    )
    done = sum(
        referral_referrer_settle(referral_id=pk) is not None for pk in unsettled.order_by("pk").values_list("pk", flat=True)
    )
    return ReferralsResult(referrals=done)


def referrals_reward_due(*, now: dt.datetime | None = None) -> ReferralsResult:
    """End the hold of qualified referrals whose time has come; their pending points are released by the points clock."""
    now = now or timezone.now()
    settings = settings_get()
    done = 0
    due = Referral.objects.filter(status=Referral.Status.QUALIFIED, hold_until__lte=now).order_by("pk")
    if settings.friend_reward is None and settings.referrer_reward is None:
        with transaction.atomic():
            ids = list(due.select_for_update(skip_locked=True).values_list("pk", flat=True))
            Referral.objects.filter(pk__in=ids).update(status=Referral.Status.REWARDED, closed_at=now)
            ReferralEvent.objects.bulk_create(
                ReferralEvent(referral_id=pk, status=Referral.Status.REWARDED, at=now) for pk in ids
            )
        return ReferralsResult(referrals=len(ids))
    # Catalog rewards are vouchers, each with its own code and message: issued one referral at a time.
    for pk in list(due.values_list("pk", flat=True)):
        with transaction.atomic():
            referral = (
                Referral.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("referrer", "friend")
                .filter(pk=pk, status=Referral.Status.QUALIFIED)
                .first()
            )
            if referral is not None:
                _reward(referral, settings, now=now)
                done += 1
    return ReferralsResult(referrals=done)


# --- shares -----------------------------------------------------------------------------------


def referral_shared(*, member: Member) -> None:
    """Count a share of the member's link (a share button pressed), for the funnel."""
    ReferralCode.objects.filter(pk=referral_code_for(member).pk).update(shares=F("shares") + 1)


def referral_link_visited(*, code: ReferralCode) -> None:
    ReferralCode.objects.filter(pk=code.pk).update(visits=F("visits") + 1)
