"""Writes to the programme and the points ledger: the only code that changes balances.

Locking order, everywhere: purchase row, then the member's `PointsAccount` row, then that
account's lots. Whoever holds the account row may change its lots; bulk jobs lock a chunk of
accounts in id order first. Every write is idempotent by a natural key.
"""

import datetime as dt
import hashlib
import json
import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Sum
from django.db.models.functions import Abs
from django.utils import timezone
from django.utils.translation import gettext as _

from members.models import Member, Store, User
from members.services import fingerprint_digest
from rewards import config, hooks, tiers
from rewards.models import (
    LedgerEntry,
    LotAllocation,
    PointsAccount,
    PointsLot,
    Programme,
    ProgrammeRules,
    Purchase,
    PurchaseLine,
    Return,
    ReturnLine,
    TermsAcceptance,
    TermsVersion,
    Tier,
)
from rewards.money import format_money, quantize

# A till's clock may run a little ahead of ours.
CLOCK_SKEW = dt.timedelta(minutes=5)
BULK_CHUNK = 5000
MAX_LINES = 500
MAX_QUANTITY = 100_000


class RewardsError(Exception):
    """A request the programme's rules refuse; `field` names the input at fault."""

    code = "refused"
    field = "non_field_errors"

    def __init__(self, message: str, *, field: str | None = None, **facts: object):
        super().__init__(message)
        self.message = message
        self.facts = facts
        if field:
            self.field = field


class InsufficientPoints(RewardsError):
    code = "insufficient_points"
    field = "points"


class PointsOwed(RewardsError):
    code = "points_owed"
    field = "points"


class ReplayConflict(RewardsError):
    """The same natural key was sent before with a different body."""

    code = "conflict"


class ProgrammeNotConfigured(RewardsError):
    code = "programme_not_configured"


class AdjustLimitExceeded(RewardsError):
    """The adjustment would take the staff member past the points they may adjust today."""

    code = "adjust_limit_exceeded"
    field = "points"


@dataclass(frozen=True)
class LineInput:
    amount: Decimal
    quantity: int = 1
    sku: str = ""
    name: str = ""
    category: str = ""


@dataclass(frozen=True)
class PurchaseResult:
    purchase: Purchase
    created: bool
    entry: LedgerEntry | None


@dataclass(frozen=True)
class ReturnResult:
    return_record: Return
    created: bool
    entry: LedgerEntry | None


# --- programme and terms ---------------------------------------------------------------


def programme_get() -> Programme:
    programme = config.current().programme
    if programme is None:
        raise ProgrammeNotConfigured(_("The loyalty programme has not been set up yet."))
    return programme


def rules_in_force(*, at: dt.datetime | None = None) -> ProgrammeRules:
    rules = config.current().rules_at(at or timezone.now())
    if rules is None:
        raise ProgrammeNotConfigured(_("The loyalty programme has no rules yet."))
    return rules


def terms_current(*, at: dt.datetime | None = None) -> TermsVersion | None:
    return TermsVersion.objects.filter(published_at__lte=at or timezone.now()).order_by("-published_at").first()


def terms_accept(*, member: Member, channel: str, terms: TermsVersion | None = None) -> TermsAcceptance:
    """Record that the member accepted the current terms; accepting twice is a no-op."""
    terms = terms or terms_current()
    if terms is None:
        raise RewardsError(_("There are no published terms to accept."))
    acceptance, _created = TermsAcceptance.objects.get_or_create(member=member, terms=terms, defaults={"channel": channel})
    return acceptance


# --- input parsing ---------------------------------------------------------------------


def _amount(value: object, field: str, errors: dict[str, str], *, allow_zero: bool = False) -> Decimal:
    try:
        amount = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        errors[field] = _("Enter an amount such as 42.50.")
        return Decimal(0)
    if not amount.is_finite():
        errors[field] = _("Enter an amount such as 42.50.")
    elif amount.as_tuple().exponent < -2:  # type: ignore[operator]
        errors[field] = _("Use at most two decimal places.")
    elif amount < 0 or (amount == 0 and not allow_zero):
        errors[field] = _("The amount must be more than zero.") if not allow_zero else _("The amount cannot be negative.")
    elif amount >= Decimal("1e12"):
        errors[field] = _("The amount is too large.")
    else:
        return amount
    return Decimal(0)


def _canonical(amount: Decimal) -> str:
    return str(amount.quantize(Decimal("0.01")))


def _canonical_or_raw(amount: object) -> str | None:
    """Write an amount the same way however it was sent ("30", 30, "30.00"), or as given if not one."""
    if amount is None:
        return None
    try:
        return _canonical(Decimal(str(amount).strip()))
    except (InvalidOperation, ValueError):
        return str(amount)


def _fingerprint(payload: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _receipt(value: str, field: str, errors: dict[str, str]) -> str:
    value = (value or "").strip()
    if not value:
        errors[field] = _("This field is required.")
    elif len(value) > 64:
        errors[field] = _("Use at most 64 characters.")
    return value


def _check_member(member: Member | None, errors: dict[str, str]) -> None:
    if member is not None and member.status != Member.Status.ACTIVE:
        errors["member"] = _("This membership is %(status)s and cannot earn or spend points.") % {
            "status": member.get_status_display().lower()
        }


# --- the ledger's moving parts (call with the account row locked) ------------------------


def _account_locked(member: Member) -> PointsAccount:
    try:
        return PointsAccount.objects.select_for_update().get(member=member)
    except PointsAccount.DoesNotExist:  # a member's first points: create the account, or wait for a twin creating it
        PointsAccount.objects.bulk_create([PointsAccount(member=member)], ignore_conflicts=True)
        return PointsAccount.objects.select_for_update().get(member=member)


def account_lock(member: Member) -> None:
    """Lock the member's points account, as every writer does first, before taking other locks in the fixed order."""
    _account_locked(member)


def _account_settled(member: Member, now: dt.datetime) -> PointsAccount:
    """Lock the account and bring its lots up to date before points leave it.

    The clock releases and expires lots on a schedule; between two runs a member could
    otherwise spend points past their validity, or wait for points already due.
    """
    account = _account_locked(member)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM rewards_pointslot WHERE account_id = %(id)s AND status IN ('pending', 'available') "
            "AND remaining > 0 AND (available_at <= %(now)s AND status = 'pending' OR expires_at <= %(now)s))",
            {"id": account.pk, "now": now},
        )
        (due,) = cursor.fetchone()
        if not due:
            return account
        cursor.execute(RELEASE_SQL, {"ids": [account.pk], "now": now})
        cursor.execute(EXPIRE_SQL, {"ids": [account.pk], "now": now, "tz": programme_get().timezone})
    account.refresh_from_db()
    return account


def _save_account(account: PointsAccount) -> None:
    account.save(update_fields=["available", "pending", "owed", "lifetime_earned", "lifetime_spent", "updated_at"])


def _take(
    account: PointsAccount, lots: Iterable[PointsLot], points: int, kind: str, entry: LedgerEntry | None, now: dt.datetime
) -> int:
    """Take up to `points` from the given lots in order; return how many were taken."""
    taken = 0
    changed, allocations = [], []
    for lot in lots:
        if taken == points:
            break
        part = min(lot.remaining, points - taken)
        if part <= 0:
            continue
        lot.remaining -= part
        taken += part
        if lot.status == PointsLot.Status.PENDING:
            account.pending -= part
        else:
            account.available -= part
        changed.append(lot)
        allocations.append(LotAllocation(lot=lot, entry=entry, kind=kind, points=part, created_at=now))
    PointsLot.objects.bulk_update(changed, ["remaining"])
    LotAllocation.objects.bulk_create(allocations)
    return taken


def _repay_owed(account: PointsAccount, now: dt.datetime) -> None:
    if account.owed and account.available:
        repaid = _take(account, account.lots.spendable(), min(account.owed, account.available), "repay", None, now)
        account.owed -= repaid


# A credit's lot, its explained entry and the balances, in one statement: two round trips fewer
# on every sale than three ORM writes. The rows are the ones `_credit` builds; the ORM writes them
# when the points repay a debt, which takes lots apart.
CREDIT_SQL = """
WITH lot AS (
    INSERT INTO rewards_pointslot (account_id, points, remaining, status, available_at, expires_at, purchase_id, earned_at)
    VALUES (%(account)s, %(points)s, %(points)s, %(status)s, %(available_at)s, %(expires_at)s, %(purchase)s, %(earned_at)s)
    RETURNING id
), entry AS (
    INSERT INTO rewards_ledgerentry (account_id, kind, points, occurred_at, created_at, purchase_id, return_record_id, lot_id,
                                     actor_id, source_ref, reason, detail, owed_points, idempotency_key)
    SELECT %(account)s, %(kind)s, %(points)s, %(earned_at)s, %(now)s, %(purchase)s, NULL, lot.id,
           %(actor)s, %(source_ref)s, %(reason)s, %(detail)s, 0, %(idempotency_key)s
    FROM lot
    RETURNING id, lot_id
)
UPDATE rewards_pointsaccount
SET pending = pending + %(pending)s, available = available + %(available)s,
    lifetime_earned = lifetime_earned + %(points)s, updated_at = %(now)s
WHERE member_id = %(account)s
RETURNING (SELECT lot_id FROM entry), (SELECT id FROM entry), available, pending, lifetime_earned
"""


def _credit(
    account: PointsAccount,
    *,
    points: int,
    kind: str,
    earned_at: dt.datetime,
    rules: ProgrammeRules,
    now: dt.datetime,
    return_window: bool = False,
    hold_until: dt.datetime | None = None,
    purchase: Purchase | None = None,
    **entry_fields: object,
) -> LedgerEntry:
    available_at, expires_at = rules.lot_dates(earned_at, return_window=return_window)
    if hold_until is not None:  # held by the rule that gave them, never past their expiry
        available_at = min(hold_until, expires_at) if expires_at else hold_until
    pending = available_at > now
    lot = PointsLot(
        account=account,
        points=points,
        remaining=points,
        status=PointsLot.Status.PENDING if pending else PointsLot.Status.AVAILABLE,
        available_at=available_at,
        expires_at=expires_at,
        purchase=purchase,
        earned_at=earned_at,
    )
    entry = LedgerEntry(account=account, kind=kind, points=points, lot=lot, purchase=purchase, **entry_fields)
    entry.occurred_at, entry.created_at = earned_at, now
    if not pending and account.owed:
        lot.save(force_insert=True)
        entry.save(force_insert=True)  # takes the lot's new id
        account.available += points
        _repay_owed(account, now)
        account.lifetime_earned += points
        _save_account(account)
        return entry
    with connection.cursor() as cursor:
        cursor.execute(
            CREDIT_SQL,
            {
                "account": account.pk,
                "points": points,
                "status": lot.status,
                "available_at": available_at,
                "expires_at": expires_at,
                "purchase": purchase.pk if purchase else None,
                "earned_at": earned_at,
                "kind": kind,
                "now": now,
                "actor": entry.actor_id,
                "source_ref": entry.source_ref,
                "reason": entry.reason,
                "detail": LedgerEntry._meta.get_field("detail").get_db_prep_save(entry.detail, connection),
                "idempotency_key": entry.idempotency_key,
                "pending": points if pending else 0,
                "available": 0 if pending else points,
            },
        )
        lot.pk, entry.pk, account.available, account.pending, account.lifetime_earned = cursor.fetchone()
    for row in (lot, entry):  # as if the ORM had saved them
        row._state.adding, row._state.db = False, connection.alias
    account.updated_at = now
    entry.lot = lot  # the lot's id is known only now
    return entry


def _debit(account: PointsAccount, *, points: int, kind: str, now: dt.datetime, **entry_fields: object) -> LedgerEntry:
    entry = LedgerEntry.objects.create(
        account=account, kind=kind, points=-points, occurred_at=now, created_at=now, **entry_fields
    )
    taken = _take(account, account.lots.spendable(), points, LotAllocation.Kind.SPEND, entry, now)
    if taken != points:  # the balance was checked under the lock; this would be a bug
        raise RuntimeError(f"account {account.pk}: lots hold {taken} of {points} cached available points")
    if kind == LedgerEntry.Kind.SPEND:
        account.lifetime_spent += points
    _save_account(account)
    return entry


# --- purchases -------------------------------------------------------------------------


def _before_exclusions(rules: ProgrammeRules, *, net: Decimal, tax: Decimal) -> Decimal:
    return net if rules.earn_base == ProgrammeRules.EarnBase.NET_WITH_TAX else net - tax


def _multiplier(tier: Tier | None) -> Decimal:
    return tier.earn_multiplier if tier is not None else Decimal(1)


def _points(rules: ProgrammeRules, base: Decimal, tier: Tier | None) -> int:
    return rules.points_for(base, _multiplier(tier)) if base >= rules.minimum_purchase else 0


def _earning(
    rules: ProgrammeRules, *, net: Decimal, tax: Decimal, lines: Sequence[LineInput], tier: Tier | None = None
) -> tuple[Decimal, int]:
    """Return the amount that earns points, after tax and excluded categories, and its points at the tier's rate."""
    base = _before_exclusions(rules, net=net, tax=tax)
    excluded_categories = {c.strip().lower() for c in rules.excluded_categories}
    lines_total = sum((Decimal(line.amount) for line in lines), Decimal(0))
    if excluded_categories and lines_total:
        excluded = sum(
            (Decimal(line.amount) for line in lines if line.category.strip().lower() in excluded_categories), Decimal(0)
        )
        base -= quantize(base * excluded / lines_total, rules.programme.currency)
    return base, _points(rules, base, tier)


def earn_detail(purchase: Purchase, tier: Tier | None = None) -> dict[str, object]:
    """Return the figures a purchase's earn entry is explained from, with the tier it earned at."""
    rules = purchase.rules
    excluded = _before_exclusions(rules, net=purchase.net, tax=purchase.tax) - purchase.earn_base
    detail: dict[str, object] = {
        "receipt": purchase.receipt_number,
        "store": purchase.store.name,
        "currency": rules.programme.currency,
        "base": _canonical(purchase.earn_base),
        "excluded": _canonical(excluded),
        "rate": str(rules.points_per_unit),
    }
    if _multiplier(tier) > 1:
        # The name in every language, so the sentence reads right whatever the reader's language.
        detail.update(multiplier=_canonical(_multiplier(tier)), tier=tiers.tier_names(tier))  # type: ignore[arg-type]
    return detail


def _award_purchase(purchase: Purchase, now: dt.datetime, actor: User | None, tier: Tier | None = None) -> LedgerEntry | None:
    if purchase.member is None or purchase.points_earned <= 0:
        return None
    return _credit(
        _account_locked(purchase.member),
        points=purchase.points_earned,
        kind=LedgerEntry.Kind.EARN,
        earned_at=purchase.occurred_at,
        return_window=True,
        rules=purchase.rules,
        now=now,
        purchase=purchase,
        actor=actor,
        detail=earn_detail(purchase, tier),
    )


def _earn_entry(purchase: Purchase) -> LedgerEntry | None:
    return purchase.entries.filter(kind=LedgerEntry.Kind.EARN).first()


@dataclass(frozen=True)
class PurchaseInput:
    """A sale that passed validation, ready to be written alone or in bulk."""

    store: Store
    receipt_number: str
    gross: Decimal
    discount: Decimal
    tax: Decimal
    occurred_at: dt.datetime | None
    channel: str
    member: Member | None
    lines: tuple[LineInput, ...]
    payment_fingerprint: str = ""

    @property
    def net(self) -> Decimal:
        return self.gross - self.discount

    @property
    def fingerprint(self) -> str:
        """Hash what the sender said, to tell a replay from a different sale under the same receipt."""
        return _fingerprint(
            {
                "member": self.member.member_number if self.member else None,
                "amount": _canonical(self.gross),
                "discount": _canonical(self.discount),
                "tax": _canonical(self.tax),
                "occurred_at": self.occurred_at.isoformat() if self.occurred_at else None,
                "channel": self.channel,
                "lines": [[ln.sku, ln.name, ln.category, ln.quantity, _canonical(Decimal(ln.amount))] for ln in self.lines],
            }
        )


def purchase_input(
    *,
    store: Store,
    receipt_number: str,
    amount: object,
    discount: object = 0,
    tax: object = 0,
    occurred_at: dt.datetime | None = None,
    channel: str = Purchase.Channel.STORE,
    member: Member | None = None,
    lines: Sequence[LineInput] = (),
    payment_fingerprint: str = "",
    now: dt.datetime | None = None,
) -> PurchaseInput:
    """Validate a sale; raise ValidationError naming every field at fault.

    `payment_fingerprint` is the till's opaque token for the card paid with; only its keyed hash is kept.
    """
    now = now or timezone.now()
    errors: dict[str, str] = {}
    receipt_number = _receipt(receipt_number, "receipt_number", errors)
    gross = _amount(amount, "amount", errors)
    discount_amount = _amount(discount, "discount", errors, allow_zero=True)
    tax_amount = _amount(tax, "tax", errors, allow_zero=True)
    if "amount" not in errors and discount_amount > gross:
        errors["discount"] = _("The discount cannot be more than the amount.")
    if not errors and tax_amount > gross - discount_amount:
        errors["tax"] = _("The tax cannot be more than the amount paid.")
    if occurred_at is not None and occurred_at > now + CLOCK_SKEW:
        errors["occurred_at"] = _("The purchase time cannot be in the future.")
    if channel not in Purchase.Channel.values:
        errors["channel"] = _("Choose a valid channel.")
    if not store.is_active:
        errors["store"] = _("This store is closed.")
    _check_member(member, errors)
    for i, line in enumerate(lines):
        line_errors: dict[str, str] = {}
        _amount(line.amount, "amount", line_errors, allow_zero=True)
        if not 1 <= line.quantity <= MAX_QUANTITY:
            line_errors["quantity"] = _("The quantity must be between 1 and %(max)s.") % {"max": MAX_QUANTITY}
        for key, message in line_errors.items():
            errors[f"lines[{i}].{key}"] = message
    if len(lines) > MAX_LINES:
        errors["lines"] = _("A purchase can have at most %(max)s lines.") % {"max": MAX_LINES}
    if lines and not errors and sum(Decimal(line.amount) for line in lines) != gross:
        errors["lines"] = _("The lines add up to %(lines)s but the amount is %(amount)s.") % {
            "lines": sum(Decimal(line.amount) for line in lines),
            "amount": gross,
        }
    if errors:
        raise ValidationError(errors)
    return PurchaseInput(
        store=store,
        receipt_number=receipt_number,
        gross=gross,
        discount=discount_amount,
        tax=tax_amount,
        occurred_at=occurred_at,
        channel=channel,
        member=member,
        lines=tuple(lines),
        payment_fingerprint=fingerprint_digest("payment", payment_fingerprint),
    )


def unsaved_purchase(
    data: PurchaseInput, *, rules: ProgrammeRules, now: dt.datetime, by: User | None, via: str, tier: Tier | None = None
) -> Purchase:
    """Build the purchase row for a validated sale, its points worked out by the given rules at the member's tier."""
    earn_base, points = _earning(rules, net=data.net, tax=data.tax, lines=data.lines, tier=tier)
    return Purchase(
        store=data.store,
        receipt_number=data.receipt_number,
        member=data.member,
        channel=data.channel,
        gross=data.gross,
        discount=data.discount,
        tax=data.tax,
        net=data.net,
        occurred_at=data.occurred_at or now,
        recorded_at=now,
        recorded_by=by,
        recorded_via=via,
        rules=rules,
        earn_base=earn_base,
        points_earned=max(points, 0),
        fingerprint=data.fingerprint,
        payment_fingerprint=data.payment_fingerprint,
    )


def purchase_lines(purchase: Purchase, lines: Sequence[LineInput]) -> list[PurchaseLine]:
    return [
        PurchaseLine(
            purchase=purchase,
            line_number=i,
            sku=line.sku,
            name=line.name,
            category=line.category.strip(),
            quantity=line.quantity,
            amount=Decimal(line.amount),
        )
        for i, line in enumerate(lines, start=1)
    ]


def replay_conflict(receipt_number: str, purchase_id: int) -> ReplayConflict:
    return ReplayConflict(
        _("Receipt %(receipt)s was already recorded at this store with different details.") % {"receipt": receipt_number},
        field="receipt_number",
        purchase_id=purchase_id,
    )


def purchase_record(*, by: User | None = None, via: str = "", **sale: Any) -> PurchaseResult:
    """Record a sale and award its points; a replay of the same receipt returns the original.

    Takes the arguments of `purchase_input`. Refusals leave a caller's transaction usable; an
    unexpected error (a failing hook) leaves it to be rolled back whole.
    """
    now = timezone.now()
    data = purchase_input(now=now, **sale)
    result = _purchase_write(data, rules=rules_in_force(at=data.occurred_at or now), now=now, by=by, via=via)
    if isinstance(result, Purchase):  # another sale recorded under this receipt
        raise replay_conflict(data.receipt_number, result.pk)
    return result


# No savepoint when called inside a transaction (the API stores its answer in the same one): a
# round trip fewer on every sale. Refusals are raised before or after it, never from inside, so a
# caller is never left in a transaction that can only be rolled back.
@transaction.atomic(savepoint=False)
def _purchase_write(
    data: PurchaseInput, *, rules: ProgrammeRules, now: dt.datetime, by: User | None, via: str
) -> PurchaseResult | Purchase:
    """Write a validated sale; return the result, or the purchase a different sale already holds the receipt of."""
    # The tier held before this sale: one that takes the member up earns at the old rate.
    tier = tiers.tier_current(data.member, today=timezone.localdate(now, rules.programme.tz)) if data.member else None
    purchase = unsaved_purchase(data, rules=rules, now=now, by=by, via=via, tier=tier)
    try:
        with transaction.atomic():
            purchase.save(force_insert=True)
    except IntegrityError:
        # The unique (store, receipt) index made us wait for a concurrent twin: a replay.
        original = Purchase.objects.filter(store=data.store, receipt_number=data.receipt_number).first()
        if original is None:
            raise
        if original.fingerprint != data.fingerprint:
            return original
        return PurchaseResult(purchase=original, created=False, entry=_earn_entry(original))
    PurchaseLine.objects.bulk_create(purchase_lines(purchase, data.lines))
    entry = _award_purchase(purchase, now, actor=by, tier=tier)
    tiers.tier_upgrade_after_purchase(purchase=purchase, now=now, held=tier)
    hooks.purchase_recorded(hooks.PurchaseRecorded(purchase=purchase, entry=entry))
    return PurchaseResult(purchase=purchase, created=True, entry=entry)


@transaction.atomic
def purchase_claim(*, purchase: Purchase, member: Member, by: User | None = None) -> PurchaseResult:
    """Attach a sale recorded without a card to a member and award its points once."""
    purchase = Purchase.objects.select_for_update(of=("self",)).select_related("rules__programme", "store").get(pk=purchase.pk)
    if purchase.member_id == member.pk:
        return PurchaseResult(purchase=purchase, created=False, entry=_earn_entry(purchase))
    errors: dict[str, str] = {}
    _check_member(member, errors)
    if purchase.member_id is not None:
        errors["purchase"] = _("This purchase already belongs to another member.")
    elif purchase.occurred_at + dt.timedelta(days=purchase.rules.claim_days) < timezone.now():
        errors["purchase"] = _("Sales can only be claimed within %(days)s days.") % {"days": purchase.rules.claim_days}
    elif purchase.returns.exists():
        errors["purchase"] = _("A purchase with a return cannot be claimed.")
    if errors:
        raise ValidationError(errors)
    now = timezone.now()
    # Earned at the tier of the member who claims it, as if the card had been shown.
    tier = tiers.tier_current(member, today=timezone.localdate(now, purchase.rules.programme.tz))
    purchase.member = member
    purchase.claimed_at = now
    purchase.points_earned = _points(purchase.rules, purchase.earn_base, tier)
    purchase.save(update_fields=["member", "claimed_at", "points_earned"])
    entry = _award_purchase(purchase, now, actor=by, tier=tier)
    tiers.tier_upgrade_after_purchase(purchase=purchase, now=now, held=tier)
    hooks.purchase_recorded(hooks.PurchaseRecorded(purchase=purchase, entry=entry))
    return PurchaseResult(purchase=purchase, created=True, entry=entry)


# --- returns ---------------------------------------------------------------------------


def _line_share(line: PurchaseLine, quantity: int) -> Decimal:
    return (line.amount * quantity / line.quantity).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _return_lines(
    purchase: Purchase, lines: Sequence[tuple[int, int]], errors: dict[str, str]
) -> tuple[Decimal, list[ReturnLine]]:
    by_number = {line.line_number: line for line in purchase.lines.all()}
    returned = dict(
        ReturnLine.objects.filter(purchase_line__purchase=purchase)
        .values_list("purchase_line__line_number")
        .annotate(total=Sum("quantity"))
        .values_list("purchase_line__line_number", "total")
    )
    total, records = Decimal(0), []
    for i, (line_number, quantity) in enumerate(lines):
        line = by_number.get(line_number)
        if line is None:
            errors[f"lines[{i}].line_number"] = _("This purchase has no line %(n)s.") % {"n": line_number}
            continue
        left = line.quantity - returned.get(line_number, 0)
        if quantity < 1:
            errors[f"lines[{i}].quantity"] = _("The quantity must be at least 1.")
        elif quantity > left:
            errors[f"lines[{i}].quantity"] = _("Only %(left)s of this line can still be returned.") % {"left": left}
        else:
            # From the running total, so returning a line unit by unit refunds exactly what it cost.
            before = line.quantity - left
            amount = _line_share(line, before + quantity) - _line_share(line, before)
            total += amount
            records.append(ReturnLine(purchase_line=line, quantity=quantity, amount=amount))
    if len({n for n, _q in lines}) != len(lines):
        errors["lines"] = _("List each line once.")
    return total, records


def _clawback(purchase: Purchase, return_record: Return, points: int, now: dt.datetime) -> LedgerEntry | None:
    """Take back a return's share of points: from the purchase's own lot, then other
    available points, and owe what was already spent. Points that expired are not owed."""
    account = _account_settled(purchase.member, now)  # type: ignore[arg-type]
    lot = purchase.lots.first()
    if lot is None:
        return None
    expired = lot.allocations.filter(kind=LotAllocation.Kind.EXPIRE).aggregate(s=Sum("points"))["s"] or 0
    clawed = -(purchase.entries.filter(kind=LedgerEntry.Kind.CLAWBACK).aggregate(s=Sum("points"))["s"] or 0)
    points = min(points, lot.points - expired - clawed)
    if points <= 0:
        return None
    entry = LedgerEntry.objects.create(
        account=account,
        kind=LedgerEntry.Kind.CLAWBACK,
        points=-points,
        occurred_at=now,
        created_at=now,
        purchase=purchase,
        return_record=return_record,
        actor=return_record.recorded_by,
        detail={
            "receipt": purchase.receipt_number,
            "return": return_record.return_number,
            "currency": purchase.rules.programme.currency,
            "refunded": _canonical(return_record.amount),
            "gross": _canonical(purchase.gross),
            "earned": purchase.points_earned,
        },
    )
    taken = _take(account, [lot], points, LotAllocation.Kind.CLAWBACK, entry, now)
    taken += _take(account, account.lots.spendable(), points - taken, LotAllocation.Kind.CLAWBACK, entry, now)
    owed = points - taken
    if owed:
        account.owed += owed
        entry.owed_points = owed
        entry.save(update_fields=["owed_points"])
    _save_account(account)
    return entry


@transaction.atomic
def purchase_return(
    *,
    purchase: Purchase,
    return_number: str,
    amount: object | None = None,
    lines: Sequence[tuple[int, int]] = (),
    by: User | None = None,
    via: str = "",
    store: Store | None = None,
) -> ReturnResult:
    """Record a return by amount or by (line number, quantity) and take back its points.

    `store` is where the goods came back (the sale's own store when not given).
    """
    purchase = Purchase.objects.select_for_update(of=("self",)).select_related("member", "rules__programme").get(pk=purchase.pk)
    errors: dict[str, str] = {}
    return_number = _receipt(return_number, "return_number", errors)
    if errors:
        raise ValidationError(errors)
    fingerprint = _fingerprint({"amount": _canonical_or_raw(amount), "lines": sorted(lines)})
    original = purchase.returns.filter(return_number=return_number).first()
    if original is not None:
        if original.fingerprint != fingerprint:
            raise ReplayConflict(_("Return %(number)s was already recorded with different details.") % {"number": return_number})
        return ReturnResult(return_record=original, created=False, entry=original.entries.first())

    if (amount is None) == (not lines):
        raise ValidationError({"amount": _("Give either an amount or the lines returned.")})
    line_records: list[ReturnLine] = []
    if lines:
        refund, line_records = _return_lines(purchase, lines, errors)
    else:
        refund = _amount(amount, "amount", errors)
    if lines and not errors and refund <= 0:
        errors["lines"] = _("The refund for these lines comes to nothing, so there is nothing to return.")
    already = purchase.returns.aggregate(s=Sum("amount"))["s"] or Decimal(0)
    left = purchase.gross - already
    if not errors and refund > left:
        errors["amount"] = _("Only %(left)s of this purchase is left to return.") % {
            "left": format_money(left, purchase.rules.programme.currency)
        }
    if errors:
        raise ValidationError(errors)

    now = timezone.now()
    return_record = Return.objects.create(
        purchase=purchase,
        return_number=return_number,
        amount=refund,
        recorded_by=by,
        recorded_via=via,
        store=store or purchase.store,
        fingerprint=fingerprint,
    )
    for record in line_records:
        record.return_record = return_record
    ReturnLine.objects.bulk_create(line_records)
    entry = None
    if purchase.member_id and purchase.points_earned:
        # Work from the running total so rounding never leaves a point behind: a full return
        # takes back exactly what was earned.
        target = int((purchase.points_earned * (already + refund) / purchase.gross).quantize(Decimal(1), rounding=ROUND_HALF_UP))
        clawed = -(purchase.entries.filter(kind=LedgerEntry.Kind.CLAWBACK).aggregate(s=Sum("points"))["s"] or 0)
        if target > clawed:
            entry = _clawback(purchase, return_record, target - clawed, now)
    if entry is not None:
        return_record.points_clawed_back = -entry.points
        return_record.save(update_fields=["points_clawed_back"])
    hooks.return_recorded(hooks.ReturnRecorded(return_record=return_record, entry=entry))
    return ReturnResult(return_record=return_record, created=True, entry=entry)


# --- spending and adjustments ----------------------------------------------------------


def _replayed(idempotency_key: str | None, account: PointsAccount, points: int, kind: str) -> LedgerEntry | None:
    if not idempotency_key:
        return None
    original = LedgerEntry.objects.filter(account=account, idempotency_key=idempotency_key).first()
    if original is not None and (original.points, original.kind) == (points, kind):
        return original
    if original is not None:
        raise ReplayConflict(_("This request was already made with different details."), field="idempotency_key")
    return None


@transaction.atomic
def points_spend(
    *,
    member: Member,
    points: int,
    reason: str,
    by: User | None = None,
    source_ref: str = "",
    idempotency_key: str | None = None,
) -> LedgerEntry:
    """Spend available points, soonest-expiring first; later issues redeem rewards with it."""
    if not isinstance(points, int) or points <= 0:
        raise ValidationError({"points": _("Enter a whole number of points above zero.")})
    errors: dict[str, str] = {}
    _check_member(member, errors)
    if errors:
        raise ValidationError(errors)
    now = timezone.now()
    account = _account_settled(member, now)
    if replay := _replayed(idempotency_key, account, -points, LedgerEntry.Kind.SPEND):
        return replay
    if account.owed:
        raise PointsOwed(
            _("%(owed)s points are owed from a return; they must be repaid before spending.") % {"owed": account.owed},
            owed=account.owed,
        )
    minimum = rules_in_force().min_redemption_points
    if points < minimum:
        raise RewardsError(_("At least %(min)s points must be spent at a time.") % {"min": minimum}, minimum=minimum)
    if points > account.available:
        raise InsufficientPoints(
            _("%(needed)s more points are needed: %(available)s are available.")
            % {"needed": points - account.available, "available": account.available},
            available=account.available,
            needed=points - account.available,
        )
    return _debit(
        account,
        points=points,
        kind=LedgerEntry.Kind.SPEND,
        now=now,
        reason=reason,
        actor=by,
        source_ref=source_ref,
        idempotency_key=idempotency_key,
    )


def _adjust_limit(by: User, rules: ProgrammeRules) -> int | None:
    """Return the points the staff member may adjust a day; None when the rules set no limit or they run the programme."""
    if not rules.adjust_daily_limit or by.has_perm("rewards.change_programmerules"):
        return None
    return rules.adjust_daily_limit


def _adjusted_on_day(by: User, now: dt.datetime, tz: zoneinfo.ZoneInfo) -> int:
    """Return the points the staff member added and removed by adjustments on the programme's day of a moment."""
    day = timezone.localdate(now, tz)
    start = dt.datetime.combine(day, dt.time(), tzinfo=tz)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tzinfo=tz)
    adjusted = LedgerEntry.objects.filter(kind=LedgerEntry.Kind.ADJUSTMENT, actor=by, created_at__gte=start, created_at__lt=end)
    return adjusted.aggregate(total=Sum(Abs("points")))["total"] or 0


def adjust_allowance_left(*, by: User, now: dt.datetime | None = None) -> int | None:
    """Return how many points the staff member may still adjust today; None when no limit applies."""
    now = now or timezone.now()
    rules = rules_in_force(at=now)
    limit = _adjust_limit(by, rules)
    return None if limit is None else max(0, limit - _adjusted_on_day(by, now, rules.programme.tz))


@transaction.atomic
def points_adjust(*, member: Member, points: int, reason: str, by: User, idempotency_key: str | None = None) -> LedgerEntry:
    """Correct a balance by hand: needs the adjust permission and a reason the member will read."""
    if not by.has_perm("rewards.adjust_points"):
        raise PermissionDenied(_("You are not allowed to adjust points."))
    errors: dict[str, str] = {}
    if not isinstance(points, int) or points == 0:
        errors["points"] = _("Enter a whole number of points other than zero.")
    if not reason.strip():
        errors["reason"] = _("Give a reason: the member will see it.")
    _check_member(member, errors)
    if errors:
        raise ValidationError(errors)
    now = timezone.now()
    account = _account_settled(member, now)
    if replay := _replayed(idempotency_key, account, points, LedgerEntry.Kind.ADJUSTMENT):
        return replay
    rules = rules_in_force(at=now)
    if (limit := _adjust_limit(by, rules)) is not None:
        # Adjustments of different members hold different account locks: the staff member's own row
        # makes theirs wait for each other, so two cannot both pass the limit on the same sum.
        list(User.objects.select_for_update(no_key=True).filter(pk=by.pk).values_list("pk", flat=True))
        left = max(0, limit - _adjusted_on_day(by, now, rules.programme.tz))
        if abs(points) > left:
            raise AdjustLimitExceeded(
                _("This is more than you may adjust today: %(limit)s points a day, %(left)s left.")
                % {"limit": limit, "left": left},
                limit=limit,
                left=left,
            )
    fields = {"reason": reason.strip(), "actor": by, "idempotency_key": idempotency_key}
    if points > 0:
        return _credit(account, points=points, kind=LedgerEntry.Kind.ADJUSTMENT, earned_at=now, rules=rules, now=now, **fields)
    if -points > account.available:
        raise InsufficientPoints(
            _("Only %(available)s points are available to take away.") % {"available": account.available},
            available=account.available,
            needed=-points - account.available,
        )
    return _debit(account, points=-points, kind=LedgerEntry.Kind.ADJUSTMENT, now=now, **fields)


# --- points a programme rule gives (referrals, campaigns) ---------------------------------

GRANT_KINDS = (LedgerEntry.Kind.BONUS, LedgerEntry.Kind.REFERRAL)


@transaction.atomic
def points_grant(
    *,
    member: Member,
    points: int,
    kind: str,
    idempotency_key: str,
    detail: dict[str, object],
    reason: str = "",
    hold_until: dt.datetime | None = None,
    by: User | None = None,
) -> LedgerEntry:
    """Give points a programme rule earned, pending until `hold_until` (if later than now); once per key.

    The detail holds the figures the explanation is written from.
    """
    if kind not in GRANT_KINDS:
        raise ValueError(f"points_grant gives {GRANT_KINDS}, not {kind!r}")
    errors: dict[str, str] = {}
    if not isinstance(points, int) or points <= 0:
        errors["points"] = _("Enter a whole number of points above zero.")
    _check_member(member, errors)
    if errors:
        raise ValidationError(errors)
    now = timezone.now()
    account = _account_settled(member, now)
    if replay := _replayed(idempotency_key, account, points, kind):
        return replay
    return _credit(
        account,
        points=points,
        kind=kind,
        earned_at=now,
        rules=rules_in_force(at=now),
        now=now,
        hold_until=hold_until,
        reason=reason,
        detail=detail,
        actor=by,
        idempotency_key=idempotency_key,
    )


@transaction.atomic
def points_grant_cancel(
    *, entry: LedgerEntry, idempotency_key: str, detail: dict[str, object], reason: str = "", by: User | None = None
) -> LedgerEntry | None:
    """Take back what is still pending of granted points, as a withdrawal; None when nothing is pending any more.

    Points already released stay with the member: the hold is the window in which a grant can be undone.
    """
    if entry.kind not in GRANT_KINDS or entry.lot_id is None:
        raise ValueError(f"entry {entry.pk} is not a grant")
    now = timezone.now()
    account = _account_settled(entry.account.member, now)
    original = LedgerEntry.objects.filter(account=account, idempotency_key=idempotency_key).first()
    if original is not None:
        return original
    lot = PointsLot.objects.get(pk=entry.lot_id)  # read under the account's lock, after settling released it or not
    if lot.status != PointsLot.Status.PENDING or lot.remaining <= 0:
        return None
    withdrawal = LedgerEntry.objects.create(
        account=account,
        kind=LedgerEntry.Kind.WITHDRAWAL,
        points=-lot.remaining,
        occurred_at=now,
        created_at=now,
        reason=reason,
        detail=detail,
        actor=by,
        idempotency_key=idempotency_key,
    )
    _take(account, [lot], lot.remaining, LotAllocation.Kind.CLAWBACK, withdrawal, now)
    _save_account(account)
    return withdrawal


# --- the clock: set-based jobs, in chunks of accounts locked in id order ------------------


RELEASE_SQL = """
WITH due AS (
    SELECT l.id, l.account_id, l.remaining, a.owed,
           SUM(l.remaining) OVER (PARTITION BY l.account_id ORDER BY l.expires_at NULLS LAST, l.id) - l.remaining AS before
    FROM rewards_pointslot l JOIN rewards_pointsaccount a ON a.member_id = l.account_id
    WHERE l.account_id = ANY(%(ids)s) AND l.status = 'pending' AND l.available_at <= %(now)s
      -- Points past their validity are never released (nor used to repay): they expire.
      AND (l.expires_at IS NULL OR l.expires_at > %(now)s)
), plan AS (
    SELECT id, account_id, remaining, GREATEST(0, LEAST(remaining, owed - before)) AS repay FROM due
), released AS (
    UPDATE rewards_pointslot l SET status = 'available', remaining = l.remaining - plan.repay
    FROM plan WHERE l.id = plan.id
    RETURNING plan.id, plan.account_id, plan.remaining, plan.repay
), repaid AS (
    INSERT INTO rewards_lotallocation (lot_id, entry_id, kind, points, created_at)
    SELECT id, NULL, 'repay', repay, %(now)s FROM released WHERE repay > 0
), sums AS (
    SELECT account_id, SUM(remaining) AS released, SUM(repay) AS repaid, COUNT(*) AS lots
    FROM released GROUP BY account_id
)
UPDATE rewards_pointsaccount a
SET pending = a.pending - s.released, available = a.available + s.released - s.repaid,
    owed = a.owed - s.repaid, updated_at = %(now)s
FROM sums s WHERE a.member_id = s.account_id
RETURNING s.lots, s.released
"""

EXPIRE_SQL = """
WITH due AS (
    SELECT id, account_id, remaining, status, expires_at, earned_at FROM rewards_pointslot
    WHERE account_id = ANY(%(ids)s) AND status IN ('pending', 'available') AND remaining > 0 AND expires_at <= %(now)s
), expired AS (
    UPDATE rewards_pointslot l SET status = 'expired', remaining = 0
    FROM due WHERE l.id = due.id
    RETURNING due.*
), entries AS (
    INSERT INTO rewards_ledgerentry
        (account_id, kind, points, occurred_at, created_at, lot_id, source_ref, reason, detail, owed_points)
    SELECT account_id, 'expire', -remaining, expires_at, %(now)s, id, '', '',
           jsonb_build_object('earned_on', to_char(earned_at AT TIME ZONE %(tz)s, 'YYYY-MM-DD')), 0
    FROM expired
    RETURNING id, lot_id, -points AS points
), allocations AS (
    INSERT INTO rewards_lotallocation (lot_id, entry_id, kind, points, created_at)
    SELECT lot_id, id, 'expire', points, %(now)s FROM entries
), sums AS (
    SELECT account_id,
           COALESCE(SUM(remaining) FILTER (WHERE status = 'available'), 0) AS available,
           COALESCE(SUM(remaining) FILTER (WHERE status = 'pending'), 0) AS pending,
           COUNT(*) AS lots
    FROM expired GROUP BY account_id
)
UPDATE rewards_pointsaccount a
SET available = a.available - s.available, pending = a.pending - s.pending, updated_at = %(now)s
FROM sums s WHERE a.member_id = s.account_id
RETURNING s.lots, s.available + s.pending
"""


@dataclass(frozen=True)
class JobResult:
    lots: int = 0
    points: int = 0
    accounts: int = 0


def _run_chunks(due_lots_sql: str, statement: str, params: dict[str, object], chunk: int) -> JobResult:
    """Run a job over every account with due lots, a chunk of accounts per transaction.

    The due accounts are found once, through the partial index, then locked chunk by chunk in
    id order (the order every writer locks in); the statement re-checks each lot, so a lot
    spent or settled meanwhile is left alone and one that fell due meanwhile waits for next time.
    """
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT DISTINCT account_id FROM rewards_pointslot WHERE {due_lots_sql} ORDER BY account_id", params)
        due = [row[0] for row in cursor.fetchall()]
    lots = points = accounts = 0
    for start in range(0, len(due), chunk):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT member_id FROM rewards_pointsaccount WHERE member_id = ANY(%(ids)s) ORDER BY member_id FOR UPDATE",
                {"ids": due[start : start + chunk]},
            )
            ids = [row[0] for row in cursor.fetchall()]
            cursor.execute(statement, {**params, "ids": ids})
            rows = cursor.fetchall()
        lots += sum(row[0] for row in rows)
        points += sum(row[1] for row in rows)
        accounts += len(rows)
    return JobResult(lots=lots, points=points, accounts=accounts)


def points_release_due(*, now: dt.datetime | None = None, chunk: int = BULK_CHUNK) -> JobResult:
    """Make pending points whose return window has passed spendable, repaying any owed first."""
    params = {"now": now or timezone.now()}
    return _run_chunks("status = 'pending' AND available_at <= %(now)s", RELEASE_SQL, params, chunk)


def points_expire_due(*, now: dt.datetime | None = None, chunk: int = BULK_CHUNK) -> JobResult:
    """Expire every lot past its expiry date with an explained entry; safe to run twice."""
    params = {"now": now or timezone.now(), "tz": programme_get().timezone}
    due_lots = "status IN ('pending', 'available') AND remaining > 0 AND expires_at <= %(now)s"
    return _run_chunks(due_lots, EXPIRE_SQL, params, chunk)
