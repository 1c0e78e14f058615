"""Importing history from another system: members with opening balances, and purchases.

Every row is validated first and reported with its line number; nothing is written while any
row is bad unless the caller skips invalid rows. Writes go through the same validation and
set-based twins as the API (`services.purchase_input`, `bulk.purchases_record_bulk`), so a
re-run of the same file changes nothing.
"""

import csv
import datetime as dt
import hashlib
import io
import zoneinfo
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q, Sum
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.translation import gettext as _

from members import services as member_services
from members.models import Member, Store
from rewards import bulk, services
from rewards.models import Purchase

CHUNK = 5000


class ImportFileError(Exception):
    """The file cannot be read at all (wrong format, missing columns)."""


@dataclass
class RowError:
    line: int
    message: str

    def __str__(self) -> str:
        return _("line %(line)s: %(message)s") % {"line": self.line, "message": self.message}


@dataclass
class ImportReport:
    rows: int = 0
    errors: list[RowError] = field(default_factory=list)
    members_created: int = 0
    members_updated: int = 0
    purchases_created: int = 0
    purchases_replayed: int = 0
    conflicts: int = 0
    points_awarded: int = 0
    written: bool = False


def read_rows(path: Path | str, stream: IO[bytes] | None = None) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """Return the header and (line number, row) pairs of a CSV or XLSX file."""
    name = str(path).lower()
    if name.endswith(".xlsx"):
        return _xlsx_rows(stream or open(path, "rb"))
    if name.endswith(".csv"):
        raw = stream.read() if stream else Path(path).read_bytes()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ImportFileError(_("The file is not UTF-8 text. Save it as “CSV UTF-8”.")) from None
        reader = csv.reader(io.StringIO(text, newline=""))
        header = [h.strip().lower() for h in next(reader, [])]
        return header, (
            (n, dict(zip(header, (v.strip() for v in row), strict=False))) for n, row in enumerate(reader, 2) if any(row)
        )
    raise ImportFileError(_("Use a .csv or .xlsx file."))


def _xlsx_rows(stream: IO[bytes]) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    from openpyxl import load_workbook

    try:
        sheet = load_workbook(stream, read_only=True, data_only=True).worksheets[0]
    except Exception as error:  # openpyxl raises many kinds for a damaged file
        raise ImportFileError(_("The spreadsheet cannot be read: %(error)s") % {"error": error}) from None
    values = sheet.iter_rows(values_only=True)
    header = [str(h or "").strip().lower() for h in next(values, ())]

    def cell(value: object) -> str:
        if isinstance(value, dt.datetime):
            return value.isoformat()
        if isinstance(value, dt.date):
            return value.isoformat()
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return "" if value is None else str(value).strip()

    rows = (
        (n, dict(zip(header, map(cell, row), strict=False))) for n, row in enumerate(values, 2) if any(v is not None for v in row)
    )
    return header, rows


def _require(header: list[str], needed: set[str]) -> None:
    missing = needed - set(header)
    if missing:
        raise ImportFileError(_("Missing columns: %(columns)s") % {"columns": ", ".join(sorted(missing))})


def parse_moment(value: str, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    """Read an ISO date or datetime, or YYYYMMDD; a date alone is local midnight."""
    value = value.strip()
    try:
        if len(value) == 8 and value.isdigit():
            moment = dt.datetime.strptime(value, "%Y%m%d")  # noqa: DTZ007 - made aware just below
        else:
            moment = dt.datetime.fromisoformat(value.replace(" ", "T") if len(value) > 10 else value)
    except ValueError:
        raise ValueError(
            _("“%(value)s” is not a date (use 2026-03-01, 2026-03-01T09:30 or 20260301).") % {"value": value}
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=tz)


def _decimal(value: str, name: str) -> Decimal:
    try:
        return Decimal(value.replace(",", ""))
    except InvalidOperation:
        raise ValueError(_("%(name)s “%(value)s” is not a number.") % {"name": name, "value": value}) from None


def _messages(error: ValidationError) -> str:
    if hasattr(error, "error_dict"):
        return "; ".join(f"{k}: {' '.join(v)}" for k, v in error.message_dict.items())
    return " ".join(error.messages)


# --- purchases ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _PurchaseRow:
    line: int
    member_ref: str
    occurred_at: dt.datetime
    amount: Decimal
    receipt_number: str
    store_code: str
    quantity: int
    category: str


def _derived_receipt(row: dict[str, str], seen: Counter[str]) -> str:
    # The same content twice in a file (two coffees on one day) are two sales: count them.
    content = "|".join(row.get(k, "") for k in ("member_ref", "occurred_at", "amount", "store", "quantity", "category"))
    seen[content] += 1
    return "IMP-" + hashlib.sha256(f"{content}#{seen[content]}".encode()).hexdigest()[:20]


def _resolve_members(refs: set[str]) -> dict[str, Member]:
    """Match references to members by external ref, member number, e-mail or phone."""
    found: dict[str, Member] = {}
    emails = {r.lower() for r in refs if "@" in r}
    for member in Member.objects.annotate(email_lower=Lower("email")).filter(
        Q(external_ref__in=refs) | Q(member_number__in=refs) | Q(email_lower__in=emails)
    ):
        for ref in (member.external_ref, member.member_number, member.email):
            if ref:
                found.setdefault(ref if ref in refs else ref.lower(), member)
    for ref in refs:
        if ref.lower() in found and ref not in found:
            found[ref] = found[ref.lower()]
    phones: dict[str, str] = {}
    for ref in refs - found.keys():
        if "@" not in ref:
            try:
                phones[member_services.phone_normalise(ref)] = ref
            except ValidationError:
                continue
    for member in Member.objects.filter(phone__in=list(phones)):
        found[phones[str(member.phone)]] = member
    return found


def import_purchases(
    rows: Iterable[tuple[int, dict[str, str]]],
    header: list[str],
    *,
    store: Store | None = None,
    create_members: bool = False,
    dry_run: bool = False,
    skip_invalid: bool = False,
    progress: Callable[[int], None] = lambda n: None,
) -> ImportReport:
    """Validate every row, then record the good ones in set-based chunks."""
    _require(header, {"member_ref", "occurred_at", "amount"} | (set() if store else {"store"}))
    report = ImportReport()
    tz = services.programme_get().tz
    stores = {s.code: s for s in Store.objects.all()}
    parsed: list[_PurchaseRow] = []
    seen: Counter[str] = Counter()
    for line, row in rows:
        report.rows += 1
        try:
            code = row.get("store") or (store.code if store else "")
            if code not in stores:
                raise ValueError(_("No store has the code “%(code)s”.") % {"code": code})
            quantity = int(row.get("quantity") or 1)
            parsed.append(
                _PurchaseRow(
                    line=line,
                    member_ref=row["member_ref"],
                    occurred_at=parse_moment(row["occurred_at"], tz),
                    amount=_decimal(row["amount"], _("amount")),
                    receipt_number=row.get("receipt_number") or _derived_receipt(row, seen),
                    store_code=code,
                    quantity=quantity,
                    category=row.get("category", ""),
                )
            )
        except (ValueError, KeyError) as error:
            report.errors.append(RowError(line, str(error)))
    members = _resolve_members({r.member_ref for r in parsed if r.member_ref})
    if create_members:
        report.members_created = _create_missing_members(
            {r.member_ref for r in parsed if r.member_ref} - members.keys(), members, dry_run
        )
    sales: list[services.PurchaseInput] = []
    for row in parsed:
        member = members.get(row.member_ref) if row.member_ref else None
        if row.member_ref and member is None:
            report.errors.append(RowError(row.line, _("No member matches “%(ref)s”.") % {"ref": row.member_ref}))
            continue
        try:
            lines = (services.LineInput(amount=row.amount, quantity=row.quantity, category=row.category),) if row.category else ()
            sales.append(
                services.purchase_input(
                    store=stores[row.store_code],
                    receipt_number=row.receipt_number,
                    amount=row.amount,
                    occurred_at=row.occurred_at,
                    channel=Purchase.Channel.IMPORT,
                    member=member,
                    lines=lines,
                )
            )
        except ValidationError as error:
            report.errors.append(RowError(row.line, _messages(error)))
    report.errors.sort(key=lambda e: e.line)
    if dry_run or (report.errors and not skip_invalid):
        return report
    for start in range(0, len(sales), CHUNK):
        chunk = sales[start : start + CHUNK]
        outcomes = bulk.purchases_record_bulk(chunk, via="import", fire_hooks=False)
        created = [o.purchase_id for o in outcomes if o.created]
        report.conflicts += sum(o.conflict for o in outcomes)
        report.purchases_created += len(created)
        report.purchases_replayed += len(outcomes) - len(created) - sum(o.conflict for o in outcomes)
        report.points_awarded += Purchase.objects.filter(pk__in=created).aggregate(s=Sum("points_earned"))["s"] or 0
        progress(len(chunk))
    # Old purchases are past their return window or their validity: settle them now.
    services.points_release_due()
    services.points_expire_due()
    report.written = True
    return report


def _create_missing_members(refs: set[str], members: dict[str, Member], dry_run: bool) -> int:
    """Enrol a member for every reference that is a phone number or an e-mail address."""
    people: dict[str, dict[str, object]] = {}
    for ref in sorted(refs):
        try:
            people[ref] = (
                {"email": member_services.email_normalise(ref)} if "@" in ref else {"phone": member_services.phone_normalise(ref)}
            )
        except ValidationError:
            continue  # neither: reported as an unknown member
    if dry_run:
        members.update({ref: Member(member_number="(new)", status=Member.Status.ACTIVE) for ref in people})
    else:
        created = member_services.members_enrol_bulk(people=list(people.values()), channel=Member.Channel.IMPORT)
        members.update(zip(people, created, strict=True))
    return len(people)


# --- members -----------------------------------------------------------------------------

MEMBER_FIELDS = ("external_ref", "phone", "email", "name", "birthday")


def _member_row(row: dict[str, str], tz: zoneinfo.ZoneInfo) -> tuple[dict[str, object], int, dt.datetime | None]:
    person: dict[str, object] = {}
    if row.get("phone"):
        person["phone"] = member_services.phone_normalise(row["phone"])
    if row.get("email"):
        person["email"] = member_services.email_normalise(row["email"])
    for name in ("external_ref", "name"):
        if row.get(name):
            person[name] = row[name][:150]
    if row.get("birthday"):
        person["birthday"] = parse_moment(row["birthday"], tz).date()
    points = int(row.get("opening_points") or 0)
    if points < 0:
        raise ValueError(_("opening_points cannot be negative."))
    earned_on = parse_moment(row["opening_points_earned_on"], tz) if row.get("opening_points_earned_on") else None
    return person, points, earned_on


def import_members(
    rows: Iterable[tuple[int, dict[str, str]]], header: list[str], *, dry_run: bool = False, skip_invalid: bool = False
) -> ImportReport:
    """Create or update members (matched by external ref, phone or e-mail) with opening balances."""
    if not {"phone", "email", "external_ref"} & set(header):
        raise ImportFileError(_("Missing columns: at least one of external_ref, phone, email"))
    report = ImportReport()
    tz = services.programme_get().tz
    parsed: list[tuple[int, dict[str, object], int, dt.datetime | None]] = []
    in_file: dict[tuple[str, object], int] = {}
    for line, row in rows:
        report.rows += 1
        try:
            person, points, earned_on = _member_row(row, tz)
            for key in ("external_ref", "phone", "email"):
                if key in person and (key, person[key]) in in_file:
                    raise ValueError(
                        _("%(field)s is also on line %(line)s.") % {"field": key, "line": in_file[(key, person[key])]}
                    )
            in_file.update({(key, person[key]): line for key in ("external_ref", "phone", "email") if key in person})
            parsed.append((line, person, points, earned_on))
        except ValidationError as error:
            report.errors.append(RowError(line, _messages(error)))
        except ValueError as error:
            report.errors.append(RowError(line, str(error)))
    existing = _existing_members(parsed)
    creates: list[tuple[int, dict[str, object], int, dt.datetime | None]] = []
    updates: list[tuple[Member, dict[str, object], int, dt.datetime | None]] = []
    for line, person, points, earned_on in parsed:
        keys = [(key, person[key]) for key in ("external_ref", "phone", "email") if key in person]
        matches = {existing[key] for key in keys if key in existing}
        if len(matches) > 1:
            numbers = ", ".join(sorted(m.member_number for m in matches))
            report.errors.append(RowError(line, _("The row matches several members: %(numbers)s.") % {"numbers": numbers}))
        elif matches:
            updates.append((matches.pop(), person, points, earned_on))
        elif "phone" not in person and "email" not in person:
            report.errors.append(RowError(line, _("A new member needs a phone number or an e-mail address.")))
        else:
            creates.append((line, person, points, earned_on))
    report.errors.sort(key=lambda e: e.line)
    report.members_created, report.members_updated = len(creates), len(updates)
    if dry_run or (report.errors and not skip_invalid):
        return report
    _write_members(creates, updates, report)
    report.written = True
    return report


def _existing_members(parsed: list[tuple[int, dict[str, object], int, dt.datetime | None]]) -> dict[tuple[str, object], Member]:
    values = {key: {p[key] for _l, p, _pt, _e in parsed if key in p} for key in ("external_ref", "phone", "email")}
    found: dict[tuple[str, object], Member] = {}
    query = Q(external_ref__in=values["external_ref"]) | Q(phone__in=values["phone"]) | Q(email__in=values["email"])
    for member in Member.objects.filter(query):
        for key in ("external_ref", "phone", "email"):
            value = str(getattr(member, key)) if key == "phone" and member.phone else getattr(member, key)
            if value and value in values[key]:
                found[(key, value)] = member
    return found


@transaction.atomic
def _write_members(
    creates: list[tuple[int, dict[str, object], int, dt.datetime | None]],
    updates: list[tuple[Member, dict[str, object], int, dt.datetime | None]],
    report: ImportReport,
) -> None:
    created = member_services.members_enrol_bulk(people=[person for _l, person, _p, _e in creates], channel=Member.Channel.IMPORT)
    changed = []
    for member, person, _points, _earned in updates:
        for key, value in person.items():
            setattr(member, key, value)
        changed.append(member)
    Member.objects.bulk_update(changed, list(MEMBER_FIELDS), batch_size=2000)
    now = timezone.now()
    targets = [(member, points, earned) for member, (_l, _p, points, earned) in zip(created, creates, strict=True)]
    targets += [(member, points, earned) for member, _p, points, earned in updates]
    report.points_awarded = bulk.opening_balances_grant(
        [
            bulk.OpeningBalance(member_id=m.pk, points=points, earned_at=earned or now)
            for m, points, earned in targets
            if points > 0
        ]
    )
    services.points_expire_due()
