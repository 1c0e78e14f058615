"""The one way higher apps react to purchases and returns without `rewards` importing them.

Referrals may qualify a friend on a purchase, campaigns may add bonus points. Handlers of
higher apps are registered at the composition root (`loyalty_site.apps`); those of `rewards`
itself (stamp cards, the points-earned message) in `rewards.apps`. They run inside the transaction that
recorded the purchase or return (so they commit or roll back with it), and run only when it
was newly recorded, never on an idempotent replay. A handler with slow work enqueues a task
with `delay_on_commit`.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rewards.models import LedgerEntry, Purchase, Return


@dataclass(frozen=True)
class PurchaseRecorded:
    purchase: "Purchase"
    entry: "LedgerEntry | None"


@dataclass(frozen=True)
class ReturnRecorded:
    return_record: "Return"
    entry: "LedgerEntry | None"


PurchaseHandler = Callable[[PurchaseRecorded], None]
PurchasesHandler = Callable[[Sequence[PurchaseRecorded]], None]
ReturnHandler = Callable[[ReturnRecorded], None]

_purchase_handlers: list[PurchaseHandler] = []
_purchases_handlers: list[PurchasesHandler] = []
_return_handlers: list[ReturnHandler] = []


def on_purchase_recorded(handler: PurchaseHandler) -> PurchaseHandler:
    """Register a handler for newly recorded purchases (a member's, or an anonymous one claimed)."""
    if handler not in _purchase_handlers:
        _purchase_handlers.append(handler)
    return handler


def on_purchases_recorded(handler: PurchasesHandler) -> PurchasesHandler:
    """Register a handler that takes newly recorded purchases together (one, or a till's batch).

    For handlers with set-up worth sharing, such as reading their settings once per batch.
    """
    if handler not in _purchases_handlers:
        _purchases_handlers.append(handler)
    return handler


def on_return_recorded(handler: ReturnHandler) -> ReturnHandler:
    """Register a handler for newly recorded returns."""
    if handler not in _return_handlers:
        _return_handlers.append(handler)
    return handler


def unregister(handler: Callable[..., None]) -> None:
    for handlers in (_purchase_handlers, _purchases_handlers, _return_handlers):
        if handler in handlers:
            handlers.remove(handler)  # type: ignore[arg-type]


def purchase_recorded(event: PurchaseRecorded) -> None:
    purchases_recorded([event])


def purchases_recorded(events: Sequence[PurchaseRecorded]) -> None:
    for many in list(_purchases_handlers):
        many(events)
    for event in events:
        for handler in list(_purchase_handlers):
            handler(event)


def return_recorded(event: ReturnRecorded) -> None:
    for handler in list(_return_handlers):
        handler(event)
