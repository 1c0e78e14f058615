"""The one way higher apps react to a new member without `members` importing them.

Referrals record who invited the friend. Handlers are registered at the composition root
(`loyalty_site.apps`) and run inside the enrolment's transaction: a handler that raises
ValidationError (an unknown referral code) undoes the enrolment, so bad input changes nothing.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from members.models import Member, User


@dataclass(frozen=True)
class MemberEnrolled:
    member: "Member"
    referral_code: str = ""
    ip: str | None = None
    device: str = ""  # the portal's or the till's device fingerprint, raw
    by: "User | None" = None


EnrolledHandler = Callable[[MemberEnrolled], None]

_enrolled_handlers: list[EnrolledHandler] = []


def on_member_enrolled(handler: EnrolledHandler) -> EnrolledHandler:
    """Register a handler for newly enrolled members."""
    if handler not in _enrolled_handlers:
        _enrolled_handlers.append(handler)
    return handler


def member_enrolled(event: MemberEnrolled) -> None:
    for handler in list(_enrolled_handlers):
        handler(event)
