"""Importing history from another system: members with opening balances, and purchases.

Every row is validated first and reported with its line number; nothing is written while any
row is bad unless the caller skips invalid rows. Writes go through the same validation and
set-based twins as the API (`services.purchase_input`, `bulk.purchases_record_bulk`), so a
re-run of the same file changes nothing. Purchases are written a chunk of members per
transaction (`WRITE_CHUNK_ROWS`), so an import never holds a member's account for long.
"""

import csv
import dataclasses
import datetime as dt
import functools
import io
import logging
import uuid
import zoneinfo
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper
from django.db.models import Q
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from members import services as member_services
from members.models import Member, Store, User
from members.tasks import send_after_commit
from rewards import bulk, services
from rewards.models import HistoryImport

logger = logging.getLogger(__name__)

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
    invalid: int = 0
    members_created: int = 0
    members_updated: int = 0
    purchases_created: int = 0
    purchases_replayed: int = 0
    conflicts: int = 0
    points_awarded: int = 0
    written: bool = False


SHAPE = "#shape"  # the key under which a row's malformation is reported


def read_rows(path: Path | str, stream: IO[bytes] | None = None) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """Return the header and (line number, row) pairs of a CSV or XLSX file.

    Values are trimmed; a row that does not fit the header, or holds a NUL character, carries
    the problem under `SHAPE` so the caller reports it with its line number.
    """
    name = str(path).lower()
    if name.endswith(".xlsx"):
        header, rows = _xlsx_rows(stream or open(path, "rb"))  # noqa: SIM115 - the reader owns the file
    elif name.endswith(".csv"):
        reader = csv.reader(io.StringIO(_csv_text(path, stream), newline=""))
        header = [h.strip().lower() for h in next(reader, [])]
        rows = ((n, values) for n, values in enumerate(reader, 2))
    else:
        raise ImportFileError(_("Use a .csv or .xlsx file."))
    if not any(header):
        raise ImportFileError(_("The file is empty: the first row must name the columns."))
    return header, _shaped(header, rows)


def _shaped(header: list[str], rows: Iterable[tuple[int, list[str]]]) -> Iterator[tuple[int, dict[str, str]]]:
    for line, values in rows:
        if not any(v.strip() for v in values):
            continue
        row = dict(zip(header, (v.replace("\x00", "").strip() for v in values), strict=False))
        if len(values) != len(header):
            row[SHAPE] = _("This row has %(found)s values but the header names %(expected)s columns.") % {
                "found": len(values),
                "expected": len(header),
            }
        elif any("\x00" in v for v in values):
            row[SHAPE] = _("This row contains a NUL character.")
        yield line, row


def _csv_text(path: Path | str, stream: IO[bytes] | None) -> str:
    raw = stream.read() if stream else Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")  # Excel writes a byte-order mark
    except UnicodeDecodeError:
        raise ImportFileError(_("The file is not UTF-8 text. Save it as “CSV UTF-8”.")) from None


def _xlsx_rows(stream: IO[bytes]) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    from openpyxl import load_workbook

    try:
        sheet = load_workbook(stream, read_only=True, data_only=True).worksheets[0]
    except Exception as error:  # openpyxl raises many kinds for a damaged file
        raise ImportFileError(_("The spreadsheet cannot be read: %(error)s") % {"error": error}) from None
    values = sheet.iter_rows(values_only=True)
    header = [str(h or "").strip().lower() for h in next(values, ())]

    def cell(value: object) -> str:
        if isinstance(value, dt.datetime | dt.date):
            return value.isoformat()
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return "" if value is None else str(value)

    # A spreadsheet row is as wide as the sheet; only the header's columns count.
    return header, ((n, [cell(v) for v in row[: len(header)]]) for n, row in enumerate(values, 2))


def _require(header: list[str], needed: set[str]) -> None:
    missing = needed - set(header)
    if missing:
        raise ImportFileError(_("Missing columns: %(columns)s") % {"columns": ", ".join(sorted(missing))})


def _require_purchase_columns(header: list[str], *, store: Store | None) -> None:
    _require(header, {"member_ref", "occurred_at", "amount"} | (set() if store else {"store"}))


def _require_member_columns(header: list[str]) -> None:
    if not {"phone", "email", "external_ref"} & set(header):
        raise ImportFileError(_("Missing columns: at least one of external_ref, phone, email"))


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
#
# Purchases stay in PostgreSQL from the file to the ledger: COPY into a staging table, check and
# resolve every row with set-based SQL, then `bulk.stage_sales_from_source` and
# `bulk.write_staged_sales` as for a till's batch. Python touches only the distinct phone numbers.

PHASES = ("reading the file", "checking every row", "recording purchases", "settling old points")

PARSERS = r"""
CREATE OR REPLACE FUNCTION pg_temp.import_moment(value text, zone text) RETURNS timestamptz AS $$
BEGIN
    IF value ~ '^\d{8}$' THEN RETURN to_date(value, 'YYYYMMDD')::timestamp AT TIME ZONE zone; END IF;
    -- Only the documented forms: no eras, no words, nothing PostgreSQL would guess at.
    IF value !~ '^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}(:?\d{2})?)?)?$' THEN RETURN NULL; END IF;
    IF value ~ '(Z|[+-]\d{2}(:?\d{2})?)$' AND length(value) > 10 THEN RETURN value::timestamptz; END IF;
    RETURN value::timestamp AT TIME ZONE zone;
EXCEPTION WHEN others THEN RETURN NULL;
END $$ LANGUAGE plpgsql IMMUTABLE;
CREATE OR REPLACE FUNCTION pg_temp.import_number(value text) RETURNS numeric AS $$
BEGIN
    IF value !~ '^\s*-?\d+(\.\d+)?\s*$' THEN RETURN NULL; END IF;
    RETURN value::numeric;
EXCEPTION WHEN others THEN RETURN NULL;
END $$ LANGUAGE plpgsql IMMUTABLE;
"""

PREPARE_ROWS = r"""
DROP TABLE IF EXISTS pg_temp.import_row;
CREATE TEMP TABLE import_row ON COMMIT DROP AS
WITH raw AS MATERIALIZED (
    SELECT line, shape, {ref} AS ref, {moment} AS moment_text, {amount} AS amount_text, {receipt} AS receipt_given,
           COALESCE(NULLIF({store}, ''), %(default_store)s) AS store_code, {quantity} AS quantity_text, {category} AS category
    FROM import_raw
-- Each distinct date and amount is parsed once: a file of a million rows holds far fewer.
), moments AS (
    SELECT moment_text, pg_temp.import_moment(moment_text, %(tz)s) AS occurred_at FROM raw GROUP BY moment_text
), amounts AS (
    SELECT amount_text, pg_temp.import_number(replace(amount_text, ',', '')) AS amount FROM raw GROUP BY amount_text
)
SELECT line, shape, ref, moment_text, amount_text, receipt_given, store_code, quantity_text, category, occurred_at, amount,
       CASE WHEN quantity_text = '' THEN 1 WHEN quantity_text ~ '^\d{{1,9}}$' THEN quantity_text::int END AS quantity,
       COALESCE(NULLIF(receipt_given, ''), 'IMP-' || left(encode(sha256(convert_to(
           concat_ws('|', ref, moment_text, amount_text, store_code, quantity_text, category)
           || '#' || row_number() OVER (
               PARTITION BY ref, moment_text, amount_text, store_code, quantity_text, category ORDER BY line),
           'UTF8')), 'hex'), 20)) AS receipt_number,
       s.id AS store_id, s.is_active AS store_active
FROM raw JOIN moments USING (moment_text) JOIN amounts USING (amount_text)
LEFT JOIN members_store s ON s.code = raw.store_code;
DROP TABLE IF EXISTS pg_temp.import_ref;
CREATE TEMP TABLE import_ref ON COMMIT DROP AS
SELECT DISTINCT ref, NULL::bigint AS member_id, NULL::text AS member_number, NULL::text AS member_status
FROM import_row WHERE ref <> '';
"""

# Members are resolved once per distinct reference, not once per row: a file of a million
# purchases names far fewer members, and its rows are written once instead of once per step.
RESOLVE_MEMBERS = """
UPDATE import_ref r SET member_id = m.id FROM members_member m WHERE r.member_id IS NULL AND m.external_ref = r.ref;
UPDATE import_ref r SET member_id = m.id FROM members_member m WHERE r.member_id IS NULL AND m.member_number = r.ref;
UPDATE import_ref r SET member_id = m.id FROM members_member m
    WHERE r.member_id IS NULL AND r.ref LIKE '%%@%%' AND m.email <> '' AND lower(m.email) = lower(r.ref);
"""

RESOLVE_BY_PHONE = """
UPDATE import_ref r SET member_id = m.id FROM import_phone p JOIN members_member m ON m.phone = p.e164
    WHERE r.member_id IS NULL AND r.ref = p.ref;
UPDATE import_ref r SET member_number = m.member_number, member_status = m.status FROM members_member m WHERE m.id = r.member_id;
"""

# A row's first problem, in this order, is the one reported; one pass over the rows.
CHECKS = r"""
INSERT INTO import_error (line, code, value)
SELECT line, problem[1], problem[2] FROM (
    SELECT line, CASE
        WHEN shape <> '' THEN ARRAY['shape', shape]
        WHEN store_id IS NULL THEN ARRAY['store', store_code]
        WHEN NOT store_active THEN ARRAY['store_closed', store_code]
        WHEN occurred_at IS NULL OR occurred_at < '1900-01-01' THEN ARRAY['moment', moment_text]
        WHEN occurred_at > %(latest)s THEN ARRAY['future', moment_text]
        WHEN amount IS NULL THEN ARRAY['amount', amount_text]
        WHEN amount <= 0 THEN ARRAY['amount_positive', amount_text]
        WHEN scale(amount) > 2 THEN ARRAY['amount_places', amount_text]
        WHEN amount >= 1e12 THEN ARRAY['amount_large', amount_text]
        WHEN quantity IS NULL OR quantity NOT BETWEEN 1 AND %(max_quantity)s THEN ARRAY['quantity', quantity_text]
        WHEN ref <> '' AND member_id IS NULL THEN ARRAY['member', ref]
        WHEN member_status <> 'active' THEN ARRAY['member_inactive', member_status]
        WHEN length(receipt_number) > 64 THEN ARRAY['receipt_long', receipt_number]
        WHEN body IS DISTINCT FROM first_body THEN ARRAY['receipt_twice', receipt_number]
    END AS problem
    FROM (
        SELECT r.*, m.member_id, m.member_status, row(m.member_id, r.amount, r.occurred_at, r.category) AS body,
               first_value(row(m.member_id, r.amount, r.occurred_at, r.category))
                   OVER (PARTITION BY r.store_id, r.receipt_number ORDER BY r.line) AS first_body
        FROM import_row r LEFT JOIN import_ref m ON m.ref = r.ref
    ) resolved
) checked
WHERE problem IS NOT NULL
"""

ERRORS_STAGING = """
DROP TABLE IF EXISTS pg_temp.import_error;
CREATE TEMP TABLE import_error (line bigint, code text, value text) ON COMMIT DROP
"""

# The good rows, staged for writing a chunk at a time. A member's rows stay in one chunk, and
# chunks follow member ids, so each chunk's transaction locks its own members, in order, for a
# moment: a till selling to one of them waits a second or two, not for the whole file.
STAGE_GOOD = """
INSERT INTO rewards_import_staging
    (run, chunk, line, first_of_key, store_id, receipt_number, member_id, member_number, gross, category, quantity, occurred_at)
SELECT %(run)s,
       div(count(*) OVER (ORDER BY m.member_id NULLS LAST) - count(*) OVER (PARTITION BY m.member_id), %(chunk_rows)s)::int,
       r.line, row_number() OVER (PARTITION BY r.store_id, r.receipt_number ORDER BY r.line) = 1,
       r.store_id, r.receipt_number, m.member_id, m.member_number, r.amount, r.category, r.quantity, r.occurred_at
FROM import_row r LEFT JOIN import_ref m ON m.ref = r.ref
WHERE NOT EXISTS (SELECT 1 FROM import_error e WHERE e.line = r.line)
"""

STAGE_SOURCE = """
INSERT INTO sale_source
SELECT line, first_of_key, store_id, receipt_number, member_id, member_number, gross, category, occurred_at
FROM rewards_import_staging WHERE run = %(run)s AND chunk = %(chunk)s
"""

STAGE_LINES = """
INSERT INTO bulk_line (ord, line_number, sku, name, category, quantity, amount)
SELECT line, 1, '', '', category, quantity, gross
FROM rewards_import_staging WHERE run = %(run)s AND chunk = %(chunk)s AND category <> ''
"""

# About two seconds of writing on a small server: the longest a till may wait on one of its members.
WRITE_CHUNK_ROWS = 25_000


def _error_message(code: str, value: str) -> str:
    messages = {
        "shape": lambda: value,
        "store": lambda: _("No store has the code “%(code)s”.") % {"code": value},
        "store_closed": lambda: _("This store is closed."),
        "receipt_twice": lambda: (
            _("Receipt %(receipt)s appears earlier in the file with different details.") % {"receipt": value}
        ),
        "moment": lambda: _("“%(value)s” is not a date (use 2026-03-01, 2026-03-01T09:30 or 20260301).") % {"value": value},
        "future": lambda: _("The purchase time cannot be in the future."),
        "amount": lambda: _("%(name)s “%(value)s” is not a number.") % {"name": _("amount"), "value": value},
        "amount_positive": lambda: _("The amount must be more than zero."),
        "amount_places": lambda: _("Use at most two decimal places."),
        "amount_large": lambda: _("The amount is too large."),
        "quantity": lambda: _("The quantity must be between 1 and %(max)s.") % {"max": services.MAX_QUANTITY},
        "member": lambda: _("No member matches “%(ref)s”.") % {"ref": value},
        "member_inactive": lambda: (
            _("This membership is %(status)s and cannot earn or spend points.") % {"status": Member.Status(value).label.lower()}
        ),
        "receipt_long": lambda: _("Use at most 64 characters."),
    }
    return str(messages[code]())


def _copy_file(cursor: CursorWrapper, path: Path | str, stream: IO[bytes] | None) -> list[str]:
    """Copy the file's rows into `import_raw` (line, shape, c0, c1, …); return the lower-cased header."""
    header, rows = read_rows(path, stream)
    _require(header, {"member_ref", "occurred_at", "amount"})
    columns = ", ".join(f"c{i} text" for i in range(len(header)))
    cursor.execute("DROP TABLE IF EXISTS pg_temp.import_raw")
    cursor.execute(f"CREATE TEMP TABLE import_raw (line bigint, shape text, {columns}) ON COMMIT DROP")
    names = ", ".join(["line", "shape", *(f"c{i}" for i in range(len(header)))])
    # Rows are sent one by one, never as raw CSV text: a line holding only "\." would end COPY's input.
    with cursor.copy(f"COPY import_raw ({names}) FROM STDIN") as copy:
        for line, row in rows:
            copy.write_row([line, row.get(SHAPE, ""), *(row.get(h, "") for h in header)])
    return header


def _column(header: list[str], name: str) -> str:
    return f"btrim(COALESCE(c{header.index(name)}, ''))" if name in header else "''"


def _resolve_members(cursor: CursorWrapper) -> None:
    """Find the member of every reference not yet resolved: external ref, member number, e-mail, then phone."""
    cursor.execute(RESOLVE_MEMBERS)
    _resolve_phones(cursor)
    cursor.execute(RESOLVE_BY_PHONE)


def _resolve_phones(cursor: CursorWrapper) -> None:
    """Normalise the references still unknown that may be phone numbers."""
    cursor.execute("SELECT ref FROM import_ref WHERE member_id IS NULL AND ref NOT LIKE '%@%'")
    phones = []
    for (ref,) in cursor.fetchall():
        try:
            phones.append((ref, member_services.phone_normalise(ref)))
        except ValidationError:
            continue
    cursor.execute(
        "DROP TABLE IF EXISTS pg_temp.import_phone; CREATE TEMP TABLE import_phone (ref text, e164 text) ON COMMIT DROP"
    )
    with cursor.copy("COPY import_phone (ref, e164) FROM STDIN") as copy:
        for row in phones:
            copy.write_row(row)


class _Rollback(Exception):
    """Leave the import's transaction without writing anything."""


def import_purchases(
    path: Path | str,
    stream: IO[bytes] | None = None,
    *,
    store: Store | None = None,
    create_members: bool = False,
    dry_run: bool = False,
    skip_invalid: bool = False,
    progress: Callable[[str], None] = lambda phase: None,
    written: Callable[[int, int], None] = lambda done, total: None,
) -> ImportReport:
    """Check every row of a purchases file, then record the good ones, set-based, a chunk of members at a time.

    `progress` is told each phase as it begins; `written`, the rows written so far and in all,
    after each chunk.

    Nothing is written unless every row is good (or `skip_invalid`). The checks and any members
    enrolled commit first; then each chunk commits on its own. An import interrupted part way
    is completed by running the same file again: what was written is recognised by its receipt.
    """
    report = ImportReport()
    tz = services.programme_get().timezone
    run = uuid.uuid4()
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(WRITE_SETTINGS)
            progress(PHASES[0])
            header = _copy_file(cursor, path, stream)
            progress(PHASES[1])
            _require_purchase_columns(header, store=store)
            cursor.execute(PARSERS)
            columns = {
                key: _column(header, name)
                for key, name in [
                    ("ref", "member_ref"),
                    ("moment", "occurred_at"),
                    ("amount", "amount"),
                    ("receipt", "receipt_number"),
                    ("store", "store"),
                    ("quantity", "quantity"),
                    ("category", "category"),
                ]
            }
            cursor.execute(PREPARE_ROWS.format(**columns), {"tz": tz, "default_store": store.code if store else ""})
            _resolve_members(cursor)
            if create_members:
                report.members_created = _enrol_unknown(cursor)
                _resolve_members(cursor)
            cursor.execute(ERRORS_STAGING)
            cursor.execute(CHECKS, {"latest": timezone.now() + services.CLOCK_SKEW, "max_quantity": services.MAX_QUANTITY})
            cursor.execute("SELECT count(*) FROM import_row")
            (report.rows,) = cursor.fetchone()
            cursor.execute("SELECT line, code, value FROM import_error ORDER BY line LIMIT 1000")
            report.errors = [RowError(line, _error_message(code, value)) for line, code, value in cursor.fetchall()]
            cursor.execute("SELECT count(*) FROM import_error")
            (report.invalid,) = cursor.fetchone()
            if dry_run or (report.invalid and not skip_invalid):
                raise _Rollback
            cursor.execute(STAGE_GOOD, {"run": run, "chunk_rows": WRITE_CHUNK_ROWS})
            cursor.execute(
                "SELECT chunk, count(*) FROM rewards_import_staging WHERE run = %s GROUP BY chunk ORDER BY chunk", [run]
            )
            chunks = cursor.fetchall()
        progress(PHASES[2])
        total, done = sum(rows for _chunk, rows in chunks), 0
        for chunk, rows in chunks:
            _write_chunk(run, chunk, report)
            done += rows
            written(done, total)
    except _Rollback:
        return report
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM rewards_import_staging WHERE run = %s", [run])
    # Points past their validity were written expired; anything else due (here or elsewhere) is settled now.
    progress(PHASES[3])
    services.points_release_due()
    services.points_expire_due()
    report.written = True
    return report


# Only for the import's transactions: sorts of a whole file stay in memory; and a crash just after
# a commit may lose it, which is safe because re-running the file writes exactly what was lost.
WRITE_SETTINGS = "SET LOCAL work_mem = '256MB'; SET LOCAL synchronous_commit = off"


@transaction.atomic
def _write_chunk(run: uuid.UUID, chunk: int, report: ImportReport) -> None:
    """Record one chunk of the staged rows, in its own transaction, and add what it did to the report."""
    params = {"run": run, "chunk": chunk}
    with connection.cursor() as cursor:
        cursor.execute(WRITE_SETTINGS)
        cursor.execute(bulk.SOURCE_STAGING)
        cursor.execute(STAGE_SOURCE, params)
        bulk.stage_sales_from_source(cursor)
        cursor.execute(STAGE_LINES, params)
        bulk.write_staged_sales(cursor, now=timezone.now(), by=None, via="import", collect=False, expire_due=True)
        cursor.execute(
            "SELECT count(*) FILTER (WHERE created), count(*) FILTER (WHERE NOT created AND NOT conflict), "
            # An anonymous sale's points are worked out but credited to nobody.
            "count(*) FILTER (WHERE conflict), COALESCE(SUM(points) FILTER (WHERE created AND member_id IS NOT NULL), 0) "
            "FROM bulk_sale"
        )
        created, replayed, conflicts, points = cursor.fetchone()
    report.purchases_created += created
    report.purchases_replayed += replayed
    report.conflicts += conflicts
    report.points_awarded += int(points)  # a SQL sum arrives as Decimal


def _enrol_unknown(cursor: CursorWrapper) -> int:
    """Enrol a member for every unknown reference that is a phone number or an e-mail address."""
    cursor.execute("SELECT ref FROM import_ref WHERE member_id IS NULL")
    people: dict[str, dict[str, object]] = {}
    for (ref,) in cursor.fetchall():
        try:
            contact = (
                {"email": member_services.email_normalise(ref)} if "@" in ref else {"phone": member_services.phone_normalise(ref)}
            )
        except ValidationError:
            continue  # neither: reported as an unknown member
        if contact not in people.values():
            people[ref] = contact
    member_services.members_enrol_bulk(people=list(people.values()), channel=Member.Channel.IMPORT)
    return len(people)


# --- members -----------------------------------------------------------------------------

MEMBER_FIELDS = ("external_ref", "phone", "email", "name", "birthday")
MAX_OPENING_POINTS = 10**12


def _member_row(row: dict[str, str], tz: zoneinfo.ZoneInfo) -> tuple[dict[str, object], int, dt.datetime | None]:
    person: dict[str, object] = {}
    if row.get("phone"):
        person["phone"] = member_services.phone_normalise(row["phone"])
    if row.get("email"):
        person["email"] = member_services.email_normalise(row["email"])
    for name, longest in (("external_ref", 64), ("name", 150)):
        if len(row.get(name, "")) > longest:
            raise ValueError(_("%(field)s is longer than %(max)s characters.") % {"field": name, "max": longest})
        if row.get(name):
            person[name] = row[name]
    if row.get("birthday"):
        person["birthday"] = parse_moment(row["birthday"], tz).date()
    try:
        points = int(row.get("opening_points") or 0)
    except ValueError:
        raise ValueError(
            _("%(name)s “%(value)s” is not a number.") % {"name": "opening_points", "value": row["opening_points"]}
        ) from None
    if not 0 <= points <= MAX_OPENING_POINTS:
        raise ValueError(_("opening_points must be between 0 and %(max)s.") % {"max": MAX_OPENING_POINTS})
    earned_on = parse_moment(row["opening_points_earned_on"], tz) if row.get("opening_points_earned_on") else None
    return person, points, earned_on


def import_members(
    rows: Iterable[tuple[int, dict[str, str]]], header: list[str], *, dry_run: bool = False, skip_invalid: bool = False
) -> ImportReport:
    """Create or update members (matched by external ref, phone or e-mail) with opening balances."""
    _require_member_columns(header)
    report = ImportReport()
    tz = services.programme_get().tz
    parsed: list[tuple[int, dict[str, object], int, dt.datetime | None]] = []
    in_file: dict[tuple[str, object], int] = {}
    for line, row in rows:
        report.rows += 1
        if SHAPE in row:
            report.errors.append(RowError(line, row[SHAPE]))
            continue
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
    updated_on: dict[int, int] = {}
    for line, person, points, earned_on in parsed:
        keys = [(key, person[key]) for key in ("external_ref", "phone", "email") if key in person]
        matches = {existing[key] for key in keys if key in existing}
        if len(matches) > 1:
            numbers = ", ".join(sorted(m.member_number for m in matches))
            report.errors.append(RowError(line, _("The row matches several members: %(numbers)s.") % {"numbers": numbers}))
        elif matches:
            member = matches.pop()
            if member.pk in updated_on:
                message = _("This row and line %(line)s are the same member.") % {"line": updated_on[member.pk]}
                report.errors.append(RowError(line, message))
                continue
            updated_on[member.pk] = line
            updates.append((member, person, points, earned_on))
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
    member_services.members_update_bulk(members=changed, fields=MEMBER_FIELDS)
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


# --- in the background ---------------------------------------------------------------------
#
# A file uploaded in the admin is imported by a worker: a million rows take longer than a web
# request may last. The worker claims a run by moving it from queued to running. A run that
# stops part way (a worker killed, a task never delivered) is marked failed, by the worker or by
# the clock; importing the same file again completes it, since what was written is recognised by
# its receipt.


def history_import_request(
    *,
    kind: str,
    upload: File,
    by: User,
    store: Store | None = None,
    create_members: bool = False,
    skip_invalid: bool = False,
    dry_run: bool = True,
) -> HistoryImport:
    """Keep the uploaded file and queue its check or import for a worker."""
    run = HistoryImport(
        kind=kind,
        file_name=(upload.name or "")[-255:],
        store=store,
        create_members=create_members,
        skip_invalid=skip_invalid,
        dry_run=dry_run,
        language=translation.get_language() or settings.LANGUAGE_CODE,
        requested_by=by,
    )
    run.file.save(run.file_name, upload, save=False)
    run.save()
    _queue(run)
    return run


def history_file_check(kind: str, upload: File, *, store: Store | None) -> None:
    """Raise `ImportFileError` now for a file no worker could read, or that lacks a needed column."""
    header, _rows = read_rows(upload.name or "", upload)
    upload.seek(0)
    if kind == HistoryImport.Kind.MEMBERS:
        _require_member_columns(header)
    else:
        _require_purchase_columns(header, store=store)


def history_import_can_follow(run: HistoryImport) -> bool:
    """Whether this run's file may be imported from its page: a clean dry run, or an import that stopped."""
    if not run.file or run.pending:
        return False
    clean_check = run.dry_run and run.status == HistoryImport.Status.DONE and not run.report.get("invalid")
    stopped_import = not run.dry_run and run.status == HistoryImport.Status.FAILED and run.can_retry
    return (clean_check or stopped_import) and run.file.storage.exists(run.file.name)


def history_import_again(run: HistoryImport, *, by: User) -> HistoryImport:
    """Import the file of a clean dry run, or again the file of an import that stopped; the run doing it is returned.

    Clicks on any page of the same file, however close together, queue one run: the later ones get it.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext('rewards.history_import'), hashtext(%s))", [run.file.name])
        already = HistoryImport.objects.filter(file=run.file.name, status__in=HistoryImport.PENDING).exclude(file="").first()
        if already is not None:
            return already
        run.refresh_from_db()
        if not history_import_can_follow(run):
            raise ValueError("only a clean dry run or a stopped import whose file is kept can be imported from its page")
        again = HistoryImport.objects.create(
            kind=run.kind,
            file=run.file.name,
            file_name=run.file_name,
            store=run.store,
            create_members=run.create_members,
            skip_invalid=run.skip_invalid and not run.dry_run,
            dry_run=False,
            language=translation.get_language() or run.language,
            requested_by=by,
        )
        _queue(again)
    return again


def _queue(run: HistoryImport) -> None:
    from rewards.tasks import import_history  # tasks import this module

    message = _("No worker could be reached to run this import. Try again in a few minutes.")

    def not_queued() -> None:
        HistoryImport.objects.filter(pk=run.pk, status=HistoryImport.Status.QUEUED).update(
            status=HistoryImport.Status.FAILED, finished_at=timezone.now(), error=message, can_retry=True
        )

    send_after_commit(import_history, run.pk, failed=not_queued)


# A worker beats at each phase and chunk, seconds apart: silent this long, it is gone.
WORKER_LOST_AFTER = dt.timedelta(minutes=15)


def history_import_run(import_id: int) -> None:
    """Check or import one uploaded file, and keep its report (the worker's side of the admin upload)."""
    now = timezone.now()
    # Claimed by moving it to running: a second delivery finds it taken, unless its worker has gone
    # silent (killed, its task delivered again), when this one takes over and finishes the file.
    silent = Q(status=HistoryImport.Status.RUNNING, heartbeat_at__lt=now - WORKER_LOST_AFTER)
    claimed = (
        HistoryImport.objects.filter(pk=import_id)
        .filter(Q(status=HistoryImport.Status.QUEUED) | silent)
        .update(status=HistoryImport.Status.RUNNING, started_at=now, heartbeat_at=now)
    )
    if not claimed:
        return
    run = HistoryImport.objects.get(pk=import_id)
    with translation.override(run.language):
        try:
            outcome = _history_import_outcome(run)
            HistoryImport.objects.filter(pk=run.pk).update(finished_at=timezone.now(), **outcome)
        except BaseException:
            # Whatever stopped it (a lost database, the worker shutting down), its page must not say "running" for ever.
            HistoryImport.objects.filter(pk=run.pk, status=HistoryImport.Status.RUNNING).update(
                status=HistoryImport.Status.FAILED, finished_at=timezone.now(), error=_stopped_message(), can_retry=True
            )
            raise
    if outcome.get("report", {}).get("written"):
        _files_forget([run.file.name])  # for this run and the dry run before it


def history_import_delete(run: HistoryImport) -> None:
    """Delete a finished run, and its file once no other run uses it."""
    name = run.file.name
    run.delete()
    if name and not HistoryImport.objects.filter(file=name).exists():
        _files_forget([name])


def _files_forget(names: Iterable[str]) -> int:
    """Delete stored files and clear them from every run that named them: they hold phone numbers and e-mails."""
    names = set(names)
    storage = HistoryImport._meta.get_field("file").storage
    for name in names:
        storage.delete(name)
    HistoryImport.objects.filter(file__in=names).update(file="")
    return len(names)


def _stopped_message() -> str:
    return _(
        "The import stopped before the end (logged for the developers). "
        "Importing the same file again is safe: it completes the import, counting nothing twice."
    )


def _history_import_beat(import_id: int, _phase: str) -> None:
    HistoryImport.objects.filter(pk=import_id).update(heartbeat_at=timezone.now())


def _history_import_written(import_id: int, done: int, total: int) -> None:
    HistoryImport.objects.filter(pk=import_id).update(rows_written=done, rows_to_write=total, heartbeat_at=timezone.now())


def _history_import_outcome(run: HistoryImport) -> dict[str, object]:
    options = {"dry_run": run.dry_run, "skip_invalid": run.skip_invalid}
    try:
        with run.file.open("rb") as stream:
            if run.kind == HistoryImport.Kind.MEMBERS:
                header, rows = read_rows(run.file_name, stream)
                report = import_members(rows, header, **options)
            else:
                report = import_purchases(
                    run.file_name,
                    stream,
                    store=run.store,
                    create_members=run.create_members,
                    progress=functools.partial(_history_import_beat, run.pk),
                    written=functools.partial(_history_import_written, run.pk),
                    **options,
                )
    except ImportFileError as error:
        return {"status": HistoryImport.Status.FAILED, "error": str(error)}
    except FileNotFoundError:
        return {"status": HistoryImport.Status.FAILED, "error": _("The file is no longer kept. Upload it again.")}
    except Exception:
        logger.exception("history import %s failed", run.pk)
        return {"status": HistoryImport.Status.FAILED, "error": _stopped_message(), "can_retry": True}
    answer = dataclasses.asdict(report)
    answer["errors"] = [{"line": error.line, "message": error.message} for error in report.errors]
    answer["invalid"] = max(report.invalid, len(report.errors))  # members' checks count only what they list
    return {"status": HistoryImport.Status.DONE, "report": answer}


# A run no worker took up in this long was never delivered.
NEVER_TAKEN_AFTER = dt.timedelta(hours=12)
# Files no import wrote, and the lines to fix (they quote phone numbers and e-mails), are kept
# this long after the last run that used them, for "Import this file now", then deleted.
UNIMPORTED_FILES_KEPT = dt.timedelta(days=7)
# Staged rows outlive their import only if its worker was killed outright.
STAGED_ROWS_KEPT = dt.timedelta(days=1)

FORGET_ERRORS = """
UPDATE rewards_historyimport SET report = jsonb_set(report, '{errors}', '[]'::jsonb)
WHERE requested_at < %s AND report @? '$.errors[0]'
"""


def imports_tidy(*, now: dt.datetime | None = None) -> dict[str, int]:
    """Fail abandoned runs, forget week-old unimported files and listed lines, and drop stray staged rows (hourly)."""
    now = now or timezone.now()
    abandoned = HistoryImport.objects.filter(
        Q(status=HistoryImport.Status.QUEUED, requested_at__lt=now - NEVER_TAKEN_AFTER)
        | Q(status=HistoryImport.Status.RUNNING, heartbeat_at__lt=now - WORKER_LOST_AFTER)
    )
    failed = 0
    for language in set(abandoned.values_list("language", flat=True)):
        with translation.override(language):
            failed += abandoned.filter(language=language).update(
                status=HistoryImport.Status.FAILED, finished_at=now, error=_stopped_message(), can_retry=True
            )
    # A file goes once no run used it for a week, and none waits for it.
    cutoff = now - UNIMPORTED_FILES_KEPT
    files = HistoryImport.objects.exclude(file="")
    names = set(files.filter(requested_at__lt=cutoff).values_list("file", flat=True)) - set(
        files.filter(Q(requested_at__gte=cutoff) | Q(status__in=HistoryImport.PENDING)).values_list("file", flat=True)
    )
    forgotten = _files_forget(names)
    with connection.cursor() as cursor:
        cursor.execute(FORGET_ERRORS, [cutoff])
        reports = cursor.rowcount
        cursor.execute("DELETE FROM rewards_import_staging WHERE staged_at < %s", [now - STAGED_ROWS_KEPT])
        staged_rows = cursor.rowcount
    return {"abandoned": failed, "files": forgotten, "reports": reports, "staged_rows": staged_rows}
