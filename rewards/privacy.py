"""A member's own data: everything held about them as a download, and closing their account for good.

Here in `rewards` because the data spans both apps (`members` may not read points); the
personal data itself is erased by `members.services.member_close`.
"""

import csv
import datetime as dt
import io
import json
import zipfile
from collections import Counter
from decimal import Decimal

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from members import services as member_services
from members.models import Member, User
from rewards import explanations, selectors, services
from rewards.models import LedgerEntry, LotAllocation, PointsLot, Return, Reward, StampEvent, Voucher

ACCOUNT_CLOSED = "Account closed"


def _plain(value: object) -> object:
    """Return a value as JSON writes it: dates in ISO 8601, amounts as exact strings."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _rows(fields: list[str], rows: list[dict[str, object]]) -> tuple[list[str], list[dict[str, object]]]:
    return fields, [{field: _plain(row[field]) for field in fields} for row in rows]


def _profile(member: Member) -> tuple[list[str], list[dict[str, object]]]:
    fields = [
        "member_number",
        "card_code",
        "name",
        "phone",
        "email",
        "birthday",
        "gender",
        "language",
        "preferred_store",
        "favourite_categories",
        "status",
        "enrolled_at",
        "enrolment_channel",
        "enrolled_store",
        "email_consent",
        "email_consent_at",
        "sms_consent",
        "sms_consent_at",
        "login_email",
    ]
    # Staff notes are left out: the model promises they are never shown to the member.
    row = {field: getattr(member, field) for field in fields[:-1]}
    row.update(
        preferred_store=member.preferred_store.name if member.preferred_store else None,
        favourite_categories=", ".join(category.code for category in member.favourite_categories.all()),
        enrolled_store=member.enrolled_store.name if member.enrolled_store else None,
        login_email=member.user.email if member.user else None,
    )
    return _rows(fields, [row])


def _points(member: Member) -> tuple[list[str], list[dict[str, object]]]:
    account = selectors.account_for(member)
    fields = ["available", "pending", "owed", "lifetime_earned", "lifetime_spent"]
    return _rows(fields, [{field: getattr(account, field) for field in fields}])


def _purchases(member: Member) -> dict[str, tuple[list[str], list[dict[str, object]]]]:
    purchases = list(member.purchases.select_related("store").prefetch_related("lines").order_by("occurred_at", "pk"))
    fields = ["receipt_number", "store", "occurred_at", "channel", "gross", "discount", "tax", "net", "points_earned"]
    line_fields = ["receipt_number", "store", "line_number", "sku", "name", "category", "quantity", "amount"]
    lines = [
        {"receipt_number": p.receipt_number, "store": p.store.name, **{f: getattr(line, f) for f in line_fields[2:]}}
        for p in purchases
        for line in p.lines.all()
    ]
    returns = Return.objects.filter(purchase__member=member).select_related("purchase__store", "store")
    returns = returns.order_by("recorded_at", "pk")
    return_fields = ["return_number", "receipt_number", "store", "recorded_at", "amount", "points_clawed_back"]
    return {
        "purchases": _rows(fields, [{**{f: getattr(p, f) for f in fields}, "store": p.store.name} for p in purchases]),
        "purchase_lines": _rows(line_fields, lines),
        "returns": _rows(
            return_fields,
            [
                {
                    "return_number": r.return_number,
                    "receipt_number": r.purchase.receipt_number,
                    "store": (r.store or r.purchase.store).name,
                    "recorded_at": r.recorded_at,
                    "amount": r.amount,
                    "points_clawed_back": r.points_clawed_back,
                }
                for r in returns
            ],
        ),
    }


def _ledger(member: Member) -> tuple[list[str], list[dict[str, object]]]:
    fields = ["occurred_at", "kind", "points", "explanation", "receipt_number", "recorded_at"]
    entries = selectors.ledger_entries(member).order_by("occurred_at", "id")
    return _rows(
        fields,
        [
            {
                "occurred_at": e.occurred_at,
                "kind": e.get_kind_display(),
                "points": e.points,
                "explanation": e.explanation,
                "receipt_number": e.purchase.receipt_number if e.purchase else None,
                "recorded_at": e.created_at,
            }
            for e in entries
        ],
    )


def _catalog(member: Member) -> dict[str, tuple[list[str], list[dict[str, object]]]]:
    vouchers = member.vouchers.select_related("reward", "used_store").order_by("issued_at", "pk")
    voucher_fields = ["code", "reward", "status", "issued_at", "expires_at", "used_at", "used_store", "closed_at"]
    redemptions = member.redemptions.select_related("reward").order_by("created_at", "pk")
    redemption_fields = ["created_at", "reward", "points", "status", "cancelled_at"]
    return {
        "vouchers": _rows(
            voucher_fields,
            [
                {
                    **{f: getattr(v, f) for f in voucher_fields},
                    "reward": v.reward.title,
                    "status": v.get_status_display(),
                    "used_store": v.used_store.name if v.used_store else None,
                }
                for v in vouchers
            ],
        ),
        "redemptions": _rows(
            redemption_fields,
            [
                {**{f: getattr(r, f) for f in redemption_fields}, "reward": r.reward.title, "status": r.get_status_display()}
                for r in redemptions
            ],
        ),
    }


def _history(member: Member) -> dict[str, tuple[list[str], list[dict[str, object]]]]:
    changes = member.tier_changes.select_related("from_tier", "to_tier").order_by("created_at", "pk")
    stamps = (
        StampEvent.objects.filter(card__member=member)
        .select_related("card__programme", "card__voucher__reward")
        .order_by("created_at", "pk")
    )
    acceptances = member.terms_acceptances.select_related("terms").order_by("accepted_at", "pk")
    return {
        "tier_changes": _rows(
            ["created_at", "from_tier", "to_tier", "reason"],
            [
                {
                    "created_at": c.created_at,
                    "from_tier": c.from_tier.name if c.from_tier else None,
                    "to_tier": c.to_tier.name if c.to_tier else None,
                    "reason": c.get_reason_display(),
                }
                for c in changes
            ],
        ),
        "stamp_events": _rows(
            ["created_at", "stamp_card", "stamps", "explanation"],
            [
                {
                    "created_at": e.created_at,
                    "stamp_card": e.card.programme.name,
                    "stamps": e.stamps,
                    "explanation": explanations.explain_stamps(e),
                }
                for e in stamps
            ],
        ),
        "terms_acceptances": _rows(
            ["version", "accepted_at", "channel"],
            [{"version": a.terms.version, "accepted_at": a.accepted_at, "channel": a.get_channel_display()} for a in acceptances],
        ),
    }


def _messages(member: Member) -> dict[str, tuple[list[str], list[dict[str, object]]]]:
    consent_fields = ["recorded_at", "channel", "granted", "source"]
    notification_fields = ["created_at", "kind", "subject", "body", "read_at", "email_status", "sms_status"]
    consents = member.consent_records.order_by("recorded_at", "pk").values(*consent_fields)
    notifications = member.notifications.order_by("created_at", "pk").values(*notification_fields)
    return {
        "consent_records": _rows(consent_fields, list(consents)),
        "notifications": _rows(notification_fields, list(notifications)),
    }


def _csv(fields: list[str], rows: list[dict[str, object]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    # With a byte-order mark, spreadsheet programs read Chinese and Korean text as UTF-8.
    return out.getvalue().encode("utf-8-sig")


def member_data_export(member: Member) -> bytes:
    """Return a zip of everything held about the member: all of it in one JSON file, and a CSV file per kind.

    Explanations and labels are written in the active language.
    """
    member = Member.objects.select_related("preferred_store", "enrolled_store", "user").get(pk=member.pk)
    tables = {
        "profile": _profile(member),
        "points": _points(member),
        **_messages(member),
        **_purchases(member),
        "ledger": _ledger(member),
        **_catalog(member),
        **_history(member),
    }
    document = {name: rows if name not in ("profile", "points") else rows[0] for name, (_fields, rows) in tables.items()}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("my-data.json", json.dumps(document, ensure_ascii=False, indent=2))
        for name, (fields, rows) in tables.items():
            archive.writestr(f"{name}.csv", _csv(fields, rows))
    return buffer.getvalue()


@transaction.atomic
def member_account_close(*, member: Member, user: User) -> Member:
    """Close the member's account for good: forfeit their points, cancel their unused vouchers, erase their personal data.

    Purchases and the ledger stay for accounting; the points are taken through the ledger with
    an explained entry, so the books still balance.
    """
    now = timezone.now()
    # The account first, as every writer locks; settling expires and releases what fell due.
    account = services._account_settled(member, now)
    member.refresh_from_db(fields=["status"])
    if member.status == Member.Status.CLOSED:
        return member
    points = account.available + account.pending
    if points:
        entry = LedgerEntry.objects.create(
            account=account,
            kind=LedgerEntry.Kind.ADJUSTMENT,
            points=-points,
            occurred_at=now,
            created_at=now,
            reason=ACCOUNT_CLOSED,
            detail={"why": "account_closed", "available": account.available, "pending": account.pending},
        )
        held = [PointsLot.Status.AVAILABLE, PointsLot.Status.PENDING]
        lots = account.lots.filter(status__in=held, remaining__gt=0).order_by("pk")
        # Taken as expired: a later return of an old purchase then owes nothing for these points.
        taken = services._take(account, lots, points, LotAllocation.Kind.EXPIRE, entry, now)
        if taken != points:  # the balances were read under the lock; this would be a bug
            raise RuntimeError(f"account {account.pk}: lots hold {taken} of {points} cached points")
        services._save_account(account)
    issued = list(
        Voucher.objects.select_for_update()
        .filter(member=member, status=Voucher.Status.ISSUED)
        .order_by("pk")
        .values_list("pk", "reward_id", "redemption_id")
    )
    cancelled = [pk for pk, _reward, _redemption in issued]
    Voucher.objects.filter(pk__in=cancelled).update(status=Voucher.Status.CANCELLED, closed_at=now)
    # The goods were never handed over: a redeemed reward's stock comes back (its points do not).
    for reward_id, count in sorted(Counter(reward for _pk, reward, redemption in issued if redemption).items()):
        Reward.objects.filter(pk=reward_id, stock__isnull=False).update(stock=F("stock") + count)
    return member_services.member_close(member=member, by=user)
