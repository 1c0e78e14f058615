"""Reads of referrals shaped for the marketer page, the counter's member panel and the API.

Figures are counted by the database in one aggregate each, never by looping over referrals.
"""

import datetime as dt
from dataclasses import dataclass, field

from django.db.models import Count, Prefetch, Q, QuerySet, Sum
from django.db.models.functions import Coalesce

from members.models import Member
from referrals.models import Referral, ReferralCode, ReferralEvent
from referrals.services import member_display_name
from rewards.models import LedgerEntry

PAID = [Referral.Status.QUALIFIED, Referral.Status.REWARDED]


@dataclass(frozen=True)
class Funnel:
    """Links shared and visited (all time, as the codes count them), then what became of the friends who joined in a period."""

    shared: int
    visits: int
    joined: int
    waiting: int  # joined, no qualifying purchase yet
    review: int
    qualified: int  # rewards held until the hold is over
    rewarded: int
    expired: int
    rejected: int
    purchased: int  # made a qualifying purchase, whatever came of it after


def funnel(*, start: dt.datetime, end: dt.datetime) -> Funnel:
    """Count the funnel for friends who joined from `start` until (not including) `end`."""
    codes = ReferralCode.objects.aggregate(shared=Coalesce(Sum("shares"), 0), visits=Coalesce(Sum("visits"), 0))
    by_status = {status: Count("pk", filter=Q(status=status)) for status in Referral.Status.values}
    cohort = Referral.objects.filter(joined_at__gte=start, joined_at__lt=end).aggregate(
        total=Count("pk"), purchased=Count("pk", filter=Q(qualified_at__isnull=False)), **by_status
    )
    return Funnel(
        shared=codes["shared"],
        visits=codes["visits"],
        joined=cohort["total"],
        waiting=cohort[Referral.Status.JOINED],
        review=cohort[Referral.Status.REVIEW],
        qualified=cohort[Referral.Status.QUALIFIED],
        rewarded=cohort[Referral.Status.REWARDED],
        expired=cohort[Referral.Status.EXPIRED],
        rejected=cohort[Referral.Status.REJECTED],
        purchased=cohort["purchased"],
    )


@dataclass(frozen=True)
class TopReferrer:
    member: Member
    name: str
    joined: int
    rewarded: int
    points: int  # given to the inviter for these friends, held or released


def top_referrers(*, start: dt.datetime, end: dt.datetime, limit: int = 10) -> list[TopReferrer]:
    """Return the members whose friends joined most in the period, with how many were rewarded and the points they earned."""
    rows = list(
        Referral.objects.filter(joined_at__gte=start, joined_at__lt=end)
        .values("referrer_id")
        .annotate(
            joined=Count("pk"),
            rewarded=Count("pk", filter=Q(status=Referral.Status.REWARDED)),
            points=Coalesce(Sum("referrer_points", filter=Q(status__in=PAID)), 0),
        )
        .order_by("-rewarded", "-joined", "referrer_id")[:limit]
    )
    members = Member.objects.in_bulk([row["referrer_id"] for row in rows])
    return [
        TopReferrer(
            member=members[row["referrer_id"]],
            name=member_display_name(members[row["referrer_id"]]),
            joined=row["joined"],
            rewarded=row["rewarded"],
            points=row["points"],
        )
        for row in rows
    ]


@dataclass(frozen=True)
class ReferralItem:
    """A referral as reviewers read it: who, why it was flagged, and what happened so far."""

    referral: Referral
    referrer_name: str
    friend_name: str
    flags: list[str] = field(default_factory=list)


def _item(referral: Referral) -> ReferralItem:
    return ReferralItem(
        referral=referral,
        referrer_name=member_display_name(referral.referrer),
        friend_name=member_display_name(referral.friend),
        flags=[str(Referral.Flag(flag).label) for flag in referral.flags],
    )


def _with_history(referrals: "QuerySet[Referral]") -> "QuerySet[Referral]":
    events = ReferralEvent.objects.select_related("by").order_by("at", "pk")
    return referrals.select_related("referrer", "friend", "purchase__store").prefetch_related(Prefetch("events", queryset=events))


@dataclass(frozen=True)
class ReviewQueue:
    items: list[ReferralItem]
    total: int


def review_queue(*, limit: int = 50) -> ReviewQueue:
    """Return the referrals waiting for a reviewer, the longest waiting first, each with its flags' labels and history."""
    waiting = Referral.objects.filter(status=Referral.Status.REVIEW)
    items = [_item(referral) for referral in _with_history(waiting).order_by("qualified_at", "pk")[:limit]]
    return ReviewQueue(items=items, total=len(items) if len(items) < limit else waiting.count())


def referral_detail(referral_id: int) -> ReferralItem | None:
    """Return one referral with its history, or None."""
    referral = _with_history(Referral.objects.filter(pk=referral_id)).first()
    return _item(referral) if referral is not None else None


@dataclass(frozen=True)
class MemberSummary:
    """What the counter shows: who invited the member, and the friends they brought."""

    referred_by: Referral | None
    referrer_name: str
    friends_joined: int
    friends_rewarded: int


def member_summary(member: Member) -> MemberSummary:
    """Return who invited the member (named as little as possible) and how many friends they brought, in two queries."""
    referred_by = Referral.objects.select_related("referrer").filter(friend=member).first()
    friends = Referral.objects.filter(referrer=member).aggregate(
        joined=Count("pk"), rewarded=Count("pk", filter=Q(status=Referral.Status.REWARDED))
    )
    return MemberSummary(
        referred_by=referred_by,
        referrer_name=member_display_name(referred_by.referrer) if referred_by else "",
        friends_joined=friends["joined"],
        friends_rewarded=friends["rewarded"],
    )


FRIENDS_LISTED = 100


@dataclass(frozen=True)
class FriendRow:
    name: str
    status: str
    joined_at: dt.datetime
    qualified_at: dt.datetime | None


@dataclass(frozen=True)
class MemberReferrals:
    """A member's own view of referrals: their code, who invited them, their friends and the points it earned them."""

    code: ReferralCode
    referred_by: Referral | None
    referrer_name: str
    friends: list[FriendRow]
    counts: dict[str, int]
    points_earned: int


def member_referrals(member: Member, code: ReferralCode) -> MemberReferrals:
    """Return the member's referrals: the friends most recent first (masked), counts by status and net points earned."""
    referred_by = Referral.objects.select_related("referrer").filter(friend=member).first()
    made = Referral.objects.filter(referrer=member)
    counts = made.aggregate(**{status: Count("pk", filter=Q(status=status)) for status in Referral.Status.values})
    friends = [
        FriendRow(name=member_display_name(r.friend), status=r.status, joined_at=r.joined_at, qualified_at=r.qualified_at)
        for r in made.select_related("friend").order_by("-joined_at", "-pk")[:FRIENDS_LISTED]
    ]
    return MemberReferrals(
        code=code,
        referred_by=referred_by,
        referrer_name=member_display_name(referred_by.referrer) if referred_by else "",
        friends=friends,
        counts=counts,
        points_earned=points_earned(member),
    )


def points_earned(member: Member, *, role: str | None = None) -> int:
    """Sum the referral points given to the member, less those taken back while still held.

    `role="referrer"` counts only their rewards for inviting friends (not their own welcome as a friend).
    """
    entries = LedgerEntry.objects.filter(
        account_id=member.pk,
        kind__in=[LedgerEntry.Kind.REFERRAL, LedgerEntry.Kind.WITHDRAWAL],
        detail__has_key="referral",
        **({"detail__role": role} if role else {}),
    )
    return entries.aggregate(total=Coalesce(Sum("points"), 0))["total"]
