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
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F, Q, Sum
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from modeltranslation.utils import build_localized_fieldname

from members.models import Member, Store, User
from members.notifications import notify
from rewards import services, tiers
from rewards.models import (
    LedgerEntry,
    LotAllocation,
    PointsAccount,
    PointsLot,
    ProgrammeRules,
    Redemption,
    Reward,
    Tier,
    Voucher,
)
from rewards.services import InsufficientPoints, PointsOwed, ReplayConflict, RewardsError

# Crockford's base32: no I, L, O or U, so a code read aloud or typed from paper cannot be mistaken.
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 12  # 60 random bits: guessing one live code is hopeless
CODE_GROUP = 4
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


def voucher_qr_svg(code: str, *, scale: int = 4) -> str:
    """Draw a code (a voucher's, a member card's) as an inline SVG QR image; `scale` is pixels a module."""
    return segno.make(code, error="m", micro=False).svg_inline(scale=scale, title=code)


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


def voucher_find(code: str) -> Voucher | None:
    """Return the voucher a code typed loosely or scanned names, with its reward, member and where it was used."""
    normalised = voucher_code_normalise(code)
    if not normalised:
        return None
    return Voucher.objects.select_related("reward", "member", "used_store").filter(code=normalised).first()


# --- stock edited by the merchant ---------------------------------------------------------


def reward_stock_check(*, reward: Reward, seen: int | None, wanted: int | None) -> int | None:
    """Check a merchant's stock edit and return the stock it leads to, locking the reward's row until the transaction ends."""
    current = Reward.objects.select_for_update(no_key=True).values_list("stock", flat=True).get(pk=reward.pk)
    if wanted == seen:
        return current
    if wanted is None or seen is None or current is None:
        # Between unlimited and a number there is no difference to apply: the merchant's choice stands.
        return wanted
    # Relative to the page the merchant saw, so redemptions made meanwhile are not undone.
    stock = current + (wanted - seen)
    if stock < 0:
        raise ValidationError(
            {
                "stock": _("Only %(left)s left in stock now (%(seen)s when the page was opened): the stock cannot go below 0.")
                % {"left": current, "seen": seen}
            }
        )
    return stock


@transaction.atomic
def reward_stock_set(*, reward: Reward, seen: int | None, wanted: int | None) -> Reward:
    """Apply a merchant's stock edit as a change from the stock they saw to whatever is left now."""
    stock = reward_stock_check(reward=reward, seen=seen, wanted=wanted)
    Reward.objects.filter(pk=reward.pk).update(stock=stock)
    reward.stock = stock
    return reward


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
    """Mark a voucher used by whom, where and when; a second use is refused, saying when and where."""
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
        # Never taken for a retry, even from the same till a moment later: a screenshot shown twice would
        # get two rewards. A till retrying a request sends its Idempotency-Key and gets the first answer.
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


def _points_give_back(account: PointsAccount, *, redemption: Redemption, now: dt.datetime, **entry_fields: object) -> LedgerEntry:
    """Give a redemption's points back with the validity they had, a lot for each lot its spend took from."""
    # Fresh lots would let a member redeem and cancel to turn points about to expire into new ones, so
    # each lot keeps the earned_at and expires_at of the one it replaces.
    spent = (
        LotAllocation.objects.filter(entry_id=redemption.spend_entry_id, kind=LotAllocation.Kind.SPEND)
        .values("lot_id", "lot__earned_at", "lot__available_at", "lot__expires_at")
        .annotate(taken=Sum("points"))
        .order_by(F("lot__expires_at").asc(nulls_last=True), "lot_id")
    )
    # Pending for an instant: the settle below releases them, repaying points owed first, and
    # expires those past their date, as the clock would (a debt is never repaid with expired points).
    lots = PointsLot.objects.bulk_create(
        PointsLot(
            account=account,
            points=row["taken"],
            remaining=row["taken"],
            status=PointsLot.Status.PENDING,
            available_at=min(row["lot__available_at"], now),
            expires_at=row["lot__expires_at"],
            earned_at=row["lot__earned_at"],
        )
        for row in spent
    )
    points = sum(lot.points for lot in lots)
    if points != redemption.points:  # the spend took exactly these points under the lock; this would be a bug
        raise RuntimeError(f"redemption {redemption.pk}: its spend took {points} of {redemption.points} points")
    # One reversal entry for the whole sum, naming the soonest-expiring lot: ledger_check matches balances
    # with the sum of entries and each lot with its allocations, so the other lots need no entry of their
    # own, and the member reads one line for one cancellation.
    entry = LedgerEntry.objects.create(
        account=account,
        kind=LedgerEntry.Kind.REVERSAL,
        points=points,
        lot=lots[0],
        occurred_at=now,
        created_at=now,
        **entry_fields,
    )
    account.pending += points
    account.lifetime_earned += points
    services._save_account(account)
    services._account_settled(redemption.member, now)
    entry.lot.refresh_from_db(fields=["status", "remaining"])
    return entry


@transaction.atomic
def redemption_cancel(*, redemption: Redemption, by: User | None = None, reason: str = "") -> Redemption:
    """Cancel a redemption whose voucher is unused and valid: the points come back with their validity, the stock too."""
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
    redemption.refund_entry = _points_give_back(
        account,
        redemption=redemption,
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

# The set-based twin of `_points_give_back`: a lot for each lot a refunded spend took from, with its
# earned_at and expires_at; one reversal entry per redemption, naming its soonest-expiring lot.
REFUND_STAGING = """
DROP TABLE IF EXISTS pg_temp.refund_lot;
CREATE TEMP TABLE refund_lot (
    redemption_id bigint NOT NULL, member_id bigint NOT NULL, lot_id bigint NOT NULL, entry_id bigint,
    first boolean NOT NULL, points bigint NOT NULL CHECK (points > 0), earned_at timestamptz NOT NULL,
    available_at timestamptz NOT NULL, expires_at timestamptz, detail jsonb NOT NULL, idempotency_key text NOT NULL
) ON COMMIT DROP;
"""

# Lot and entry ids are drawn first so each entry names its lot and each redemption its entry.
STAGE_REFUNDS_SQL = """
INSERT INTO refund_lot
    (redemption_id, member_id, lot_id, first, points, earned_at, available_at, expires_at, detail, idempotency_key)
SELECT r.id, r.member_id, nextval(pg_get_serial_sequence('rewards_pointslot', 'id')),
       row_number() OVER (PARTITION BY r.id ORDER BY l.expires_at NULLS LAST, l.id) = 1,
       s.points, l.earned_at, LEAST(l.available_at, %(now)s), l.expires_at,
       jsonb_build_object('redemption', r.id, 'reward', COALESCE(e.detail -> 'reward', '{}'::jsonb),
                          'voucher', v.code, 'why', 'expired'),
       'voucher-expired:' || v.id
FROM rewards_voucher v
JOIN rewards_redemption r ON r.id = v.redemption_id
JOIN rewards_ledgerentry e ON e.id = r.spend_entry_id
CROSS JOIN LATERAL (
    SELECT a.lot_id, SUM(a.points) AS points FROM rewards_lotallocation a
    WHERE a.entry_id = r.spend_entry_id AND a.kind = 'spend' GROUP BY a.lot_id
) s
JOIN rewards_pointslot l ON l.id = s.lot_id
WHERE v.id = ANY(%(ids)s) AND r.status = 'redeemed' AND r.refund_entry_id IS NULL;
UPDATE refund_lot f SET entry_id = n.entry_id
FROM (SELECT redemption_id, nextval(pg_get_serial_sequence('rewards_ledgerentry', 'id')) AS entry_id
      FROM refund_lot WHERE first) n
WHERE f.redemption_id = n.redemption_id;
"""

# Pending for an instant, as in `_points_give_back`: the release and expiry that follow repay points
# owed first and expire the points already past their date, each with its explained entry.
APPLY_REFUNDS_SQL = """
WITH lots AS (
    INSERT INTO rewards_pointslot (id, account_id, points, remaining, status, available_at, expires_at, purchase_id, earned_at)
    SELECT lot_id, member_id, points, points, 'pending', available_at, expires_at, NULL, earned_at FROM refund_lot
), refunds AS (
    SELECT redemption_id, member_id, entry_id, lot_id, detail, idempotency_key,
           SUM(points) OVER (PARTITION BY redemption_id) AS points, first
    FROM refund_lot
), entries AS (
    INSERT INTO rewards_ledgerentry
        (id, account_id, kind, points, occurred_at, created_at, lot_id, source_ref, reason, detail, owed_points, idempotency_key)
    SELECT entry_id, member_id, 'reversal', points, %(now)s, %(now)s, lot_id, 'redemption:' || redemption_id, '', detail, 0,
           idempotency_key
    FROM refunds WHERE first
    RETURNING points
), redemptions AS (
    UPDATE rewards_redemption r SET refund_entry_id = f.entry_id
    FROM refund_lot f WHERE f.first AND r.id = f.redemption_id
), sums AS (
    SELECT member_id, SUM(points) AS points FROM refund_lot GROUP BY member_id
), accounts AS (
    UPDATE rewards_pointsaccount a
    SET pending = a.pending + s.points, lifetime_earned = a.lifetime_earned + s.points, updated_at = %(now)s
    FROM sums s WHERE a.member_id = s.member_id
)
SELECT points FROM entries
"""


def vouchers_expire_due(*, now: dt.datetime | None = None, chunk: int = CHUNK) -> VoucherExpiry:
    """Expire every issued voucher past its date; give the points back only if the rules in force say so."""
    now = now or timezone.now()
    rules = services.rules_in_force(at=now)
    due = list(
        Voucher.objects.filter(status=Voucher.Status.ISSUED, expires_at__lte=now).order_by("pk").values_list("pk", flat=True)
    )
    vouchers = refunded = points = 0
    for start in range(0, len(due), chunk):
        params = {"ids": due[start : start + chunk], "now": now}
        with transaction.atomic(), connection.cursor() as cursor:
            if rules.refund_expired_vouchers:
                # Accounts before vouchers, in id order: the order every writer locks in.
                cursor.execute(LOCK_REFUNDED_ACCOUNTS_SQL, params)
                accounts = [row[0] for row in cursor.fetchall()]
            cursor.execute(EXPIRE_VOUCHERS_SQL, params)
            expired = [row[0] for row in cursor.fetchall()]
            vouchers += len(expired)
            if not (rules.refund_expired_vouchers and expired):
                continue
            cursor.execute(REFUND_STAGING)
            cursor.execute(STAGE_REFUNDS_SQL, {**params, "ids": expired})
            cursor.execute(APPLY_REFUNDS_SQL, params)
            credited = [row[0] for row in cursor.fetchall()]
            cursor.execute(services.RELEASE_SQL, {**params, "ids": accounts})
            cursor.execute(services.EXPIRE_SQL, {**params, "ids": accounts, "tz": rules.programme.timezone})
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
