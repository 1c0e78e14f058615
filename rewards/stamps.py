"""Stamp cards: stamps earned on purchases fill a member's card; a full card issues its reward.

Stamps move only through the purchase and return hooks (registered in `RewardsConfig.ready`),
inside the transaction that recorded the purchase or return, so they commit or roll back with
it. Locking order, as everywhere: the member's `PointsAccount` row, then their open card of each
programme (in programme id order), then whatever issuing the voucher locks. A card's stamps
always equal the sum of its events; each event keeps the figures its explanation is written from.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from django.db.models import Prefetch
from django.utils import timezone

from members.models import Member
from rewards import catalog, config, hooks, services
from rewards.explanations import explain_stamps
from rewards.models import (
    Purchase,
    PurchaseLine,
    Return,
    ReturnLine,
    Reward,
    StampCard,
    StampEvent,
    StampProgramme,
    StampRule,
)


def _money(amount: Decimal) -> str:
    return str(amount.quantize(Decimal("0.01")))


def _earned(programme: StampProgramme, purchase: Purchase, lines: Sequence[PurchaseLine]) -> dict[str, object] | None:
    """Return the figures of the stamps a purchase earns on a programme's card, or None if it earns none."""
    figures: dict[str, object] = {"receipt": purchase.receipt_number, "rule": programme.rule}
    if programme.rule == StampRule.PURCHASE_OVER:
        if purchase.net < programme.min_amount:
            return None
        return {
            **figures,
            "earned": 1,
            "currency": purchase.rules.programme.currency,
            "amount": _money(purchase.net),
            "minimum": _money(programme.min_amount),
        }
    if programme.rule == StampRule.CATEGORY_ITEM:
        category = programme.category.strip().lower()
        matched = [line for line in lines if line.category.strip().lower() == category]
        label = programme.category.strip()
    else:
        matched = [line for line in lines if line.sku.strip() == programme.sku.strip()]
        label = next((line.name for line in matched if line.name), programme.sku.strip())
    items = sum(line.quantity for line in matched)
    if not items:
        return None
    # The lines that counted, so a return by lines takes back exactly their stamps.
    counted = [[line.line_number, line.quantity] for line in matched]
    return {**figures, "earned": items, "items": items, "label": label, "lines": counted}


def _open_card_locked(programme: StampProgramme, member: Member) -> StampCard:
    """Lock the member's open card of a programme, starting one if they have none."""
    cards = StampCard.objects.select_for_update().filter(programme=programme, member=member, completed_at__isnull=True)
    card = cards.first()
    if card is None:
        # A twin transaction may be starting the same card: the partial unique index makes us
        # wait for it and then skip ours, and the second read finds the card it started.
        StampCard.objects.bulk_create([StampCard(programme=programme, member=member)], ignore_conflicts=True)
        card = cards.get()
    card.programme, card.member = programme, member
    return card


def _card_complete(card: StampCard) -> StampCard:
    """Mark a full card completed, issue its reward's voucher and start the member's next card."""
    now = timezone.now()
    # Read now, not from the programme's snapshot (rewards.config): the reward as it stands is what is issued.
    card.voucher = catalog.voucher_issue(member=card.member, reward=Reward.objects.get(pk=card.programme.reward_id))
    card.completed_at = now
    card.save(update_fields=["stamps", "completed_at", "voucher"])
    return StampCard.objects.create(programme=card.programme, member=card.member, created_at=now)


def _stamps_add(*, programme: StampProgramme, purchase: Purchase, figures: dict[str, object]) -> None:
    """Stamp the member's card for a purchase, completing as many cards as the stamps fill; once per purchase.

    Call with the member's points account locked.
    """
    card = _open_card_locked(programme, purchase.member)  # type: ignore[arg-type]
    if StampEvent.objects.filter(card__programme=programme, purchase=purchase, return_record__isnull=True).exists():
        return  # the hook ran twice for this purchase
    left, carried = int(figures["earned"]), False  # type: ignore[call-overload]
    while left:
        # A card already at or over a target lowered since it started takes one stamp and completes.
        stamps = min(left, max(programme.stamps_needed - card.stamps, 1))
        card.stamps += stamps
        left -= stamps
        full = card.stamps >= programme.stamps_needed
        detail = {**figures, "carried_over": carried, "completed": full}
        StampEvent.objects.create(card=card, purchase=purchase, stamps=stamps, detail=detail)
        if full:
            card = _card_complete(card)
            carried = True
        else:
            card.save(update_fields=["stamps"])


def _stamps_due(figures: dict, purchase: Purchase, returns: Sequence[Return]) -> int:
    """Return how many of a purchase's stamps these returns together take back."""
    earned = int(figures["earned"])
    refunded = sum((r.amount for r in returns), Decimal(0))
    if figures["rule"] == StampRule.PURCHASE_OVER:
        # What is left of the amount paid, in proportion to what was refunded of the gross.
        left = (Decimal(figures["amount"]) * (purchase.gross - refunded) / purchase.gross).quantize(Decimal("0.01"))
        return earned if refunded >= purchase.gross or left < Decimal(figures["minimum"]) else 0
    counted = {number for number, _quantity in figures["lines"]}
    by_lines = sum(line.quantity for r in returns for line in r.lines.all() if line.purchase_line.line_number in counted)
    # A return by amount names no lines: it takes back stamps in proportion, as it does points.
    by_amount = sum((r.amount for r in returns if not r.lines.all()), Decimal(0))
    share = int((earned * by_amount / purchase.gross).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return min(earned, by_lines + share)


def _stamps_remove(*, programme: StampProgramme, return_record: Return) -> None:
    """Take back the stamps a return's part of the purchase earned, from the member's open card; once per return.

    Stamps are fungible, so they always come off the card being filled, never below zero. When
    some of the purchase's stamps were on a card already completed, its voucher stays as issued
    (used or not): taking a reward back at the counter over a returned coffee costs more goodwill
    than the stamp is worth. What the open card could not give is forgiven and recorded in the
    event with the voucher concerned, for staff to see. Call with the member's points account locked.
    """
    purchase = return_record.purchase
    stamped = list(
        StampEvent.objects.filter(card__programme=programme, purchase=purchase, return_record__isnull=True)
        .select_related("card__voucher")
        .order_by("pk")
    )
    if not stamped:
        return
    card = _open_card_locked(programme, purchase.member)  # type: ignore[arg-type]
    if StampEvent.objects.filter(card__programme=programme, return_record=return_record).exists():
        return  # the hook ran twice for this return
    returns = list(
        purchase.returns.filter(pk__lte=return_record.pk)
        .prefetch_related(Prefetch("lines", queryset=ReturnLine.objects.select_related("purchase_line")))
        .order_by("pk")
    )
    figures = stamped[0].detail
    due = _stamps_due(figures, purchase, returns) - _stamps_due(figures, purchase, returns[:-1])
    stamps = min(due, card.stamps)
    if stamps <= 0:
        # An event cannot hold zero stamps: with nothing left on the open card, the stamps are forgiven.
        return
    detail: dict[str, object] = {
        "receipt": purchase.receipt_number,
        "return": return_record.return_number,
        "rule": figures["rule"],
        "due": due,
        "short": due - stamps,
    }
    completed = next((e.card for e in stamped if e.card.completed_at), None)
    if detail["short"] and completed is not None:
        detail["completed_card"] = completed.pk
        if completed.voucher is not None:
            detail["voucher"] = completed.voucher.code
            detail["voucher_status"] = completed.voucher.status
    card.stamps -= stamps
    card.save(update_fields=["stamps"])
    StampEvent.objects.create(card=card, purchase=purchase, return_record=return_record, stamps=-stamps, detail=detail)


# --- the hooks --------------------------------------------------------------------------


def on_purchases(events: Sequence[hooks.PurchaseRecorded]) -> None:
    """Stamp the members' cards of every active programme each purchase earns on."""
    if all(event.purchase.member_id is None for event in events):
        return  # an anonymous sale stamps when it is claimed
    programmes = config.current().stamp_programmes
    if not programmes:
        return
    for event in events:
        purchase = event.purchase
        if purchase.member_id is None:
            continue
        lines = list(purchase.lines.all()) if any(p.rule != StampRule.PURCHASE_OVER for p in programmes) else []
        earned = [(p, figures) for p in programmes if (figures := _earned(p, purchase, lines))]
        if not earned:
            continue
        services._account_locked(purchase.member)  # type: ignore[arg-type]
        for programme, figures in earned:
            _stamps_add(programme=programme, purchase=purchase, figures=figures)


def on_return(event: hooks.ReturnRecorded) -> None:
    """Take back the stamps the returned part of a purchase earned, on every programme it stamped."""
    return_record = event.return_record
    purchase = return_record.purchase
    if purchase.member_id is None:
        return
    # Also programmes deactivated since: their stamps were earned by what is now returned.
    programme_ids = StampEvent.objects.filter(purchase=purchase, return_record__isnull=True).values("card__programme")
    programmes = list(StampProgramme.objects.filter(pk__in=programme_ids).order_by("pk"))
    if not programmes:
        return
    services._account_locked(purchase.member)  # type: ignore[arg-type]
    for programme in programmes:
        _stamps_remove(programme=programme, return_record=return_record)


# --- selectors --------------------------------------------------------------------------


@dataclass(frozen=True)
class CardView:
    programme: StampProgramme
    name: str
    stamps: int
    needed: int
    reward: Reward


def stamp_cards_for(member: Member) -> list[CardView]:
    """Return the member's open card of each active programme, with no stamps where none is started."""
    programmes = StampProgramme.objects.filter(active=True).select_related("reward").order_by("pk")
    stamps = dict(
        member.stamp_cards.filter(completed_at__isnull=True, programme__in=programmes).values_list("programme_id", "stamps")
    )
    return [
        CardView(programme=p, name=p.name, stamps=stamps.get(p.pk, 0), needed=p.stamps_needed, reward=p.reward)
        for p in programmes
    ]


@dataclass(frozen=True)
class StampLine:
    event: StampEvent
    programme: str
    stamps: int
    explanation: str


def stamp_history(member: Member, *, limit: int = 100) -> list[StampLine]:
    """Return the member's stamps, newest first, each explained in the language being shown."""
    events = (
        StampEvent.objects.filter(card__member=member)
        .select_related("card__programme", "card__voucher__reward")
        .order_by("-created_at", "-pk")[:limit]
    )
    return [StampLine(event=e, programme=e.card.programme.name, stamps=e.stamps, explanation=explain_stamps(e)) for e in events]
