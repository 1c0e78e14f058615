"""The reward catalog: redeeming rewards for points, and the vouchers members show at the counter.

Locking order, as everywhere in the ledger: the member's `PointsAccount` row first, then the
reward row (for its stock), then the redemption and its voucher. Using a voucher locks the
voucher row alone; the expiry job locks a chunk of accounts in id order before their vouchers.
"""

import datetime as dt
import secrets
import zoneinfo
from dataclasses import dataclass

import segno
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F, Q
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from modeltranslation.utils import build_localized_fieldname

from members.models import Member, Store, User
from members.notifications import notify
from rewards import bulk, services, tiers
from rewards.models import LedgerEntry, PointsAccount, ProgrammeRules, Redemption, Reward, Tier, Voucher
from rewards.services import InsufficientPoints, PointsOwed, ReplayConflict, RewardsError

# Crockford's base32: no I, L, O or U, so a code read aloud or typed from paper cannot be mistaken.
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 12  # 60 random bits: guessing one live code is hopeless
CODE_GROUP = 4
# A till that retries a use (a timeout, a double scan) gets the voucher back instead of an error.
USE_REPLAY_WINDOW = dt.timedelta(minutes=10)
CHUNK = 5000


class CatalogError(RewardsError):
    """A refusal with a `reason` in one word, for tills and pages to act on."""

    def __init__(self, message: str, *, reason: str, field: str | None = None, **facts: object):
        super().__init__(message, field=field, reason=reason, **facts)
        self.reason = reason


class RewardUnavailable(CatalogError):
    """The member may not redeem this reward now."""

    code = "reward_unavailable"
    field = "reward"


class VoucherUnusable(CatalogError):
    """The voucher cannot be used: unknown, expired or cancelled."""

    code = "voucher_unusable"
    field = "code"


class VoucherAlreadyUsed(VoucherUnusable):
    """The voucher was used before, by another request."""

    code = "voucher_used"


class RedemptionNotCancellable(CatalogError):
    code = "not_cancellable"
    field = "redemption"


# --- codes and QR images ---------------------------------------------------------------


def _code_format(raw: str) -> str:
    return "-".join(raw[i : i + CODE_GROUP] for i in range(0, len(raw), CODE_GROUP))


def voucher_code_new() -> str:
    """Draw a random voucher code, e.g. 7KQ2-M9XD-4HTA."""
    return _code_format("".join(secrets.choice(CODE_ALPHABET) for _i in range(CODE_LENGTH)))


def voucher_code_normalise(code: str) -> str:
    """Read a code as typed (any case, spaces or dashes, O for 0, I or L for 1); '' if it cannot be one."""
    raw = "".join(ch for ch in code.upper() if ch not in " -").translate(str.maketrans("OIL", "011"))
    if len(raw) != CODE_LENGTH or any(ch not in CODE_ALPHABET for ch in raw):
        return ""
    return _code_format(raw)


def voucher_qr_svg(code: str) -> str:
    """Draw a voucher's code as an inline SVG QR image for the member's phone screen."""
    return segno.make(code, error="m", micro=False).svg_inline(scale=4, title=code)


# --- reading a member's standing ---------------------------------------------------------


def _tier_rank(member: Member, at: dt.datetime, tz: zoneinfo.ZoneInfo) -> int | None:
    """Return the rank of the member's tier on the day of a moment; None at the base level."""
    tier = tiers.tier_current(member, today=timezone.localdate(at, tz))
    return tier.rank if tier else None


def _titles(reward: Reward) -> dict[str, str]:
    """Return the reward's title in every language it has, so the ledger reads in each."""
    titles = {code: getattr(reward, build_localized_fieldname("title", code)) for code, _name in settings.LANGUAGES}
    return {code: title for code, title in titles.items() if title}


def _local(moment: dt.datetime, tz: zoneinfo.ZoneInfo) -> str:
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M")


def _wall_clock(moment: dt.datetime, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    """Return the programme's local time without a zone, so a template's `date` filter shows it as is."""
    return moment.astimezone(tz).replace(tzinfo=None)


@dataclass(frozen=True)
class CatalogItem:
    """A reward as one member sees it; the member's fields are None when nobody is asking."""

    reward: Reward
    sold_out: bool
    not_yet_redeemable: bool
    no_longer_redeemable: bool
    affordable: bool | None = None
    points_needed: int | None = None
    locked_by_tier: bool | None = None
    limit_reached: bool | None = None

    @property
    def required_tier(self) -> Tier | None:
        return self.reward.min_tier

    @property
    def can_redeem(self) -> bool | None:
        if self.affordable is None:
            return None
        blocked = self.sold_out or self.not_yet_redeemable or self.no_longer_redeemable
        return self.affordable and not (blocked or self.locked_by_tier or self.limit_reached)


def catalog_for(member: Member | None, *, at: dt.datetime | None = None) -> list[CatalogItem]:
    """Return the rewards shown at a moment, with what stands between the member and each one."""
    at = at or timezone.now()
    rewards = list(Reward.objects.visible(at).select_related("min_tier", "programme"))
    account = rank = None
    redeemed: dict[int, int] = {}
    if member is not None:
        account = PointsAccount.objects.filter(member=member).first() or PointsAccount(member=member)
        if any(r.min_tier_id for r in rewards):
            rank = _tier_rank(member, at, rewards[0].programme.tz)
        if limited := [r.pk for r in rewards if r.limit_per_member is not None]:
            redeemed = dict(
                member.redemptions.filter(reward_id__in=limited)
                .exclude(status=Redemption.Status.CANCELLED)
                .values("reward_id")
                .annotate(n=Count("pk"))
                .values_list("reward_id", "n")
            )
    items = []
    for reward in rewards:
        general = {
            "reward": reward,
            "sold_out": reward.stock is not None and reward.stock <= 0,
            "not_yet_redeemable": reward.available_from is not None and reward.available_from > at,
            "no_longer_redeemable": reward.available_until is not None and reward.available_until <= at,
        }
        if account is None:
            items.append(CatalogItem(**general))
            continue
        spendable = 0 if account.owed else account.available
        items.append(
            CatalogItem(
                **general,
                affordable=spendable >= reward.points_cost,
                points_needed=max(0, reward.points_cost - spendable),
                locked_by_tier=reward.min_tier is not None and (rank is None or rank < reward.min_tier.rank),
                limit_reached=reward.limit_per_member is not None and redeemed.get(reward.pk, 0) >= reward.limit_per_member,
            )
        )
    return items


def voucher_status(voucher: Voucher, *, at: dt.datetime | None = None) -> str:
    """Return the status a voucher has now: an issued one past its date is expired, job or no job."""
    if voucher.status == Voucher.Status.ISSUED and voucher.expires_at <= (at or timezone.now()):
        return Voucher.Status.EXPIRED
    return voucher.status


# --- issuing vouchers ---------------------------------------------------------------------


def _voucher_create(
    *, member: Member, reward: Reward, redemption: Redemption | None, now: dt.datetime, tz: zoneinfo.ZoneInfo
) -> Voucher:
    voucher = Voucher(
        member=member,
        reward=reward,
        redemption=redemption,
        issued_at=now,
        expires_at=now + dt.timedelta(days=reward.voucher_valid_days),
    )
    for attempt in range(5):
        voucher.code = voucher_code_new()
        try:
            with transaction.atomic():
                voucher.save(force_insert=True)
            break
        except IntegrityError:
            # Two codes drawn alike: one chance in 2**60 per live voucher, so retry with another.
            if attempt == 4 or not Voucher.objects.filter(code=voucher.code).exists():
                raise
    notify(
        member=member,
        kind="voucher_issued",
        key=f"voucher:{voucher.code}",
        context={"voucher": voucher, "reward": reward, "valid_until": _wall_clock(voucher.expires_at, tz)},
    )
    return voucher


@transaction.atomic
def voucher_issue(
    *, member: Member, reward: Reward, redemption: Redemption | None = None, now: dt.datetime | None = None
) -> Voucher:
    """Issue a voucher for a reward with a fresh code, valid for the reward's days, and tell the member."""
    return _voucher_create(
        member=member, reward=reward, redemption=redemption, now=now or timezone.now(), tz=services.programme_get().tz
    )


# --- redeeming ----------------------------------------------------------------------------


def _check_redeemable(*, member: Member, reward: Reward, account: PointsAccount, rules: ProgrammeRules, now: dt.datetime) -> None:
    """Raise the first reason the member cannot redeem the reward now; the account and reward are locked."""
    if member.status != Member.Status.ACTIVE:
        raise RewardUnavailable(
            _("This membership is %(status)s and cannot redeem rewards.") % {"status": member.get_status_display().lower()},
            field="member",
            reason="member_not_active",
        )
    if not Reward.objects.visible(now).filter(pk=reward.pk).exists():
        raise RewardUnavailable(_("This reward is not offered at the moment."), reason="not_offered")
    if reward.available_from is not None and reward.available_from > now:
        raise RewardUnavailable(
            _("This reward can be redeemed from %(date)s.") % {"date": _local(reward.available_from, rules.programme.tz)},
            reason="not_yet_redeemable",
            available_from=reward.available_from.isoformat(),
        )
    if reward.available_until is not None and reward.available_until <= now:
        raise RewardUnavailable(_("This reward can no longer be redeemed."), reason="no_longer_redeemable")
    if reward.min_tier is not None:
        rank = _tier_rank(member, now, rules.programme.tz)
        if rank is None or rank < reward.min_tier.rank:
            raise RewardUnavailable(
                _("This reward is for %(tier)s members and above.") % {"tier": reward.min_tier.name},
                reason="tier",
                required_tier=reward.min_tier.code,
            )
    if reward.stock is not None and reward.stock <= 0:
        raise RewardUnavailable(_("This reward is sold out."), reason="sold_out")
    if reward.limit_per_member is not None:
        redeemed = member.redemptions.filter(reward=reward).exclude(status=Redemption.Status.CANCELLED).count()
        if redeemed >= reward.limit_per_member:
            raise RewardUnavailable(
                ngettext(
                    "This reward can be redeemed %(limit)s time per member.",
                    "This reward can be redeemed %(limit)s times per member.",
                    reward.limit_per_member,
                )
                % {"limit": reward.limit_per_member},
                reason="limit_reached",
                limit=reward.limit_per_member,
            )
    if reward.points_cost < rules.min_redemption_points:
        raise RewardUnavailable(
            _("The programme's rules ask for at least %(min)s points per redemption.") % {"min": rules.min_redemption_points},
            reason="below_minimum",
            minimum=rules.min_redemption_points,
        )
    if account.owed:
        raise PointsOwed(
            _("%(owed)s points are owed from a return; they must be repaid before spending.") % {"owed": account.owed},
            owed=account.owed,
        )
    if reward.points_cost > account.available:
        needed = reward.points_cost - account.available
        raise InsufficientPoints(
            _("%(needed)s more points are needed: %(available)s are available.")
            % {"needed": needed, "available": account.available},
            available=account.available,
            points_needed=needed,
        )


def _next_redemption_id() -> int:
    # Drawn first so the spend entry can name its redemption, which in turn points at the entry.
    with connection.cursor() as cursor:
        cursor.execute("SELECT nextval(pg_get_serial_sequence('rewards_redemption', 'id'))")
        return cursor.fetchone()[0]


@transaction.atomic
def redemption_create(
    *,
    member: Member,
    reward: Reward,
    by: User | None = None,
    store: Store | None = None,
    via: str = "",
    idempotency_key: str | None = None,
) -> Redemption:
    """Spend the member's points on a reward, soonest-expiring first, take one from stock and issue its voucher.

    A retry with the same idempotency key returns the first redemption.
    """
    now = timezone.now()
    # Settled first: points past their validity are never spent, even before the clock's run.
    account = services._account_settled(member, now)
    if idempotency_key:
        original = member.redemptions.filter(idempotency_key=idempotency_key).first()
        if original is not None:
            if original.reward_id != reward.pk:
                raise ReplayConflict(_("This request was already made with different details."), field="idempotency_key")
            return original
    reward = Reward.objects.select_for_update(of=("self",), no_key=True).select_related("min_tier").get(pk=reward.pk)
    rules = services.rules_in_force(at=now)
    _check_redeemable(member=member, reward=reward, account=account, rules=rules, now=now)

    redemption_id = _next_redemption_id()
    with translation.override(member.language):
        reason = _("Redeemed: %(title)s") % {"title": reward.title}
    entry = services._debit(
        account,
        points=reward.points_cost,
        kind=LedgerEntry.Kind.SPEND,
        now=now,
        reason=reason,
        actor=by,
        source_ref=f"redemption:{redemption_id}",
        detail={"redemption": redemption_id, "reward": _titles(reward)},
    )
    redemption = Redemption(
        pk=redemption_id,
        member=member,
        reward=reward,
        points=reward.points_cost,
        spend_entry=entry,
        store=store,
        created_by=by,
        created_via=via,
        created_at=now,
        idempotency_key=idempotency_key or None,
    )
    redemption.save(force_insert=True)
    if reward.stock is not None:
        Reward.objects.filter(pk=reward.pk).update(stock=F("stock") - 1)
        reward.stock -= 1
    _voucher_create(member=member, reward=reward, redemption=redemption, now=now, tz=rules.programme.tz)
    return redemption


@transaction.atomic
def voucher_use(*, code: str, by: User | None = None, store: Store | None = None, via: str = "") -> Voucher:
    """Mark a voucher used by whom, where and when; the same till retrying gets it back unchanged."""
    normalised = voucher_code_normalise(code)
    voucher = (
        Voucher.objects.select_for_update(of=("self",))
        .select_related("reward", "member", "used_store")
        .filter(code=normalised)
        .first()
        if normalised
        else None
    )
    if voucher is None:
        raise VoucherUnusable(_("No voucher has this code."), reason="not_found")
    now = timezone.now()
    if voucher.status == Voucher.Status.USED:
        same_request = (voucher.used_store_id, voucher.used_by_id, voucher.used_via) == (
            store.pk if store else None,
            by.pk if by else None,
            via,
        )
        if same_request and now - voucher.used_at <= USE_REPLAY_WINDOW:  # type: ignore[operator]
            return voucher
        where = voucher.used_store.name if voucher.used_store else _("an unknown store")
        raise VoucherAlreadyUsed(
            _("This voucher was already used on %(date)s at %(store)s.")
            % {"date": _local(voucher.used_at, services.programme_get().tz), "store": where},  # type: ignore[arg-type]
            reason="used",
            used_at=voucher.used_at.isoformat(),  # type: ignore[union-attr]
            used_store=voucher.used_store.code if voucher.used_store else None,
        )
    if voucher.status == Voucher.Status.CANCELLED:
        raise VoucherUnusable(_("This voucher was cancelled."), reason="cancelled")
    if voucher_status(voucher, at=now) == Voucher.Status.EXPIRED:
        raise VoucherUnusable(
            _("This voucher expired on %(date)s.") % {"date": _local(voucher.expires_at, services.programme_get().tz)},
            reason="expired",
        )
    voucher.status = Voucher.Status.USED
    voucher.used_at, voucher.used_by, voucher.used_store, voucher.used_via = now, by, store, via
    voucher.save(update_fields=["status", "used_at", "used_by", "used_store", "used_via"])
    return voucher


@transaction.atomic
def redemption_cancel(*, redemption: Redemption, by: User | None = None, reason: str = "") -> Redemption:
    """Cancel a redemption whose voucher is unused and valid: the points come back as a new lot, the stock too."""
    account = services._account_locked(redemption.member)
    redemption = Redemption.objects.select_for_update(of=("self",)).select_related("reward", "spend_entry").get(pk=redemption.pk)
    if redemption.status == Redemption.Status.CANCELLED:
        return redemption
    voucher = Voucher.objects.select_for_update().get(redemption=redemption)
    now = timezone.now()
    rules = services.rules_in_force(at=now)
    if voucher.status == Voucher.Status.USED:
        raise RedemptionNotCancellable(
            _("The voucher was already used on %(date)s, so this redemption cannot be cancelled.")
            % {"date": _local(voucher.used_at, rules.programme.tz)},  # type: ignore[arg-type]
            reason="used",
        )
    if voucher_status(voucher, at=now) == Voucher.Status.EXPIRED:
        raise RedemptionNotCancellable(_("The voucher has expired, so this redemption cannot be cancelled."), reason="expired")
    voucher.status, voucher.closed_at = Voucher.Status.CANCELLED, now
    voucher.save(update_fields=["status", "closed_at"])
    note = reason.strip()[:300]
    redemption.refund_entry = services._credit(
        account,
        points=redemption.points,
        kind=LedgerEntry.Kind.REVERSAL,
        earned_at=now,
        rules=rules,
        now=now,
        actor=by,
        source_ref=f"redemption:{redemption.pk}",
        reason=note,
        detail={
            "redemption": redemption.pk,
            "reward": redemption.spend_entry.detail.get("reward", {}),
            "voucher": voucher.code,
            "why": "cancelled",
        },
    )
    redemption.status, redemption.cancelled_at = Redemption.Status.CANCELLED, now
    redemption.save(update_fields=["status", "cancelled_at", "refund_entry"])
    if redemption.reward.stock is not None:
        Reward.objects.filter(pk=redemption.reward_id).update(stock=F("stock") + 1)
    return redemption


# --- the clock ----------------------------------------------------------------------------


@dataclass(frozen=True)
class VoucherExpiry:
    vouchers: int = 0
    refunded: int = 0
    points: int = 0


# Vouchers are locked in id order, so two runs at once queue up instead of deadlocking; the
# re-check skips a voucher used or cancelled since it was found due.
EXPIRE_VOUCHERS_SQL = """
WITH due AS (
    SELECT id FROM rewards_voucher
    WHERE id = ANY(%(ids)s) AND status = 'issued' AND expires_at <= %(now)s
    ORDER BY id FOR UPDATE
)
UPDATE rewards_voucher v SET status = 'expired', closed_at = %(now)s
FROM due WHERE v.id = due.id
RETURNING v.id
"""

LOCK_REFUNDED_ACCOUNTS_SQL = """
SELECT member_id FROM rewards_pointsaccount
WHERE member_id IN (SELECT member_id FROM rewards_voucher WHERE id = ANY(%(ids)s) AND redemption_id IS NOT NULL)
ORDER BY member_id FOR UPDATE
"""

# Staged for `bulk._apply_credits`, which writes the lots, entries and balances as `_credit` does.
STAGE_REFUNDS_SQL = """
INSERT INTO bulk_credit (member_id, kind, points, earned_at, available_at, expires_at, detail, idempotency_key)
SELECT r.member_id, 'reversal', r.points, %(now)s, %(available_at)s, %(expires_at)s,
       jsonb_build_object('redemption', r.id, 'reward', COALESCE(e.detail -> 'reward', '{}'::jsonb),
                          'voucher', v.code, 'why', 'expired'),
       'voucher-expired:' || v.id
FROM rewards_voucher v
JOIN rewards_redemption r ON r.id = v.redemption_id
JOIN rewards_ledgerentry e ON e.id = r.spend_entry_id
WHERE v.id = ANY(%(ids)s) AND r.status = 'redeemed' AND r.refund_entry_id IS NULL
"""

LINK_REFUNDS_SQL = """
WITH entries AS (
    UPDATE rewards_ledgerentry e SET source_ref = 'redemption:' || (c.detail ->> 'redemption')
    FROM bulk_credit c
    WHERE e.account_id = c.member_id AND e.idempotency_key = c.idempotency_key
    RETURNING e.id, (c.detail ->> 'redemption')::bigint AS redemption_id, e.points
)
UPDATE rewards_redemption r SET refund_entry_id = entries.id
FROM entries WHERE r.id = entries.redemption_id
RETURNING entries.points
"""


def vouchers_expire_due(*, now: dt.datetime | None = None, chunk: int = CHUNK) -> VoucherExpiry:
    """Expire every issued voucher past its date; give the points back only if the rules in force say so."""
    now = now or timezone.now()
    rules = services.rules_in_force(at=now)
    due = list(
        Voucher.objects.filter(status=Voucher.Status.ISSUED, expires_at__lte=now).order_by("pk").values_list("pk", flat=True)
    )
    available_at, expires_at = rules.lot_dates(now, return_window=False)
    vouchers = refunded = points = 0
    for start in range(0, len(due), chunk):
        params = {"ids": due[start : start + chunk], "now": now, "available_at": available_at, "expires_at": expires_at}
        with transaction.atomic(), connection.cursor() as cursor:
            if rules.refund_expired_vouchers:
                # Accounts before vouchers, in id order: the order every writer locks in.
                cursor.execute(LOCK_REFUNDED_ACCOUNTS_SQL, params)
            cursor.execute(EXPIRE_VOUCHERS_SQL, params)
            expired = [row[0] for row in cursor.fetchall()]
            vouchers += len(expired)
            if not (rules.refund_expired_vouchers and expired):
                continue
            cursor.execute(bulk.CREDIT_STAGING)
            cursor.execute(STAGE_REFUNDS_SQL, {**params, "ids": expired})
            bulk._apply_credits(cursor, now=now, by=None)
            cursor.execute(LINK_REFUNDS_SQL)
            credited = [row[0] for row in cursor.fetchall()]
        refunded += len(credited)
        points += sum(credited)
    return VoucherExpiry(vouchers=vouchers, refunded=refunded, points=points)


@dataclass(frozen=True)
class VoucherReminders:
    reminded: int = 0


def vouchers_remind_due(*, now: dt.datetime | None = None, chunk: int = CHUNK) -> VoucherReminders:
    """Remind members of vouchers expiring within the programme's reminder days, once per voucher."""
    now = now or timezone.now()
    rules = services.rules_in_force(at=now)
    days = dt.timedelta(days=rules.voucher_reminder_days)
    if not days:
        return VoucherReminders()
    due_filter = Q(status=Voucher.Status.ISSUED, reminded_at__isnull=True, expires_at__gt=now, expires_at__lte=now + days)
    # A voucher issued inside the reminder window was announced with its date: no second message.
    due_filter &= Q(issued_at__lte=F("expires_at") - days)
    due = list(Voucher.objects.filter(due_filter).order_by("pk").values_list("pk", flat=True))
    reminded = 0
    for start in range(0, len(due), chunk):
        with transaction.atomic():
            # A voucher being used this very moment is skipped; if it is still unused, the next run reminds.
            batch = list(
                Voucher.objects.filter(due_filter, pk__in=due[start : start + chunk])
                .select_for_update(of=("self",), skip_locked=True)
                .select_related("member", "reward")
            )
            for voucher in batch:
                notify(
                    member=voucher.member,
                    kind="voucher_expiring",
                    key=f"voucher-expiring:{voucher.code}",
                    context={
                        "voucher": voucher,
                        "reward": voucher.reward,
                        "valid_until": _wall_clock(voucher.expires_at, rules.programme.tz),
                    },
                )
            Voucher.objects.filter(pk__in=[v.pk for v in batch]).update(reminded_at=now)
        reminded += len(batch)
    return VoucherReminders(reminded=reminded)
