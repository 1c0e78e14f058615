"""`make bench`: measure the programme at a chain's scale, each figure next to raw SQL doing the same.

Starts its own embedded PostgreSQL (in .data/bench) and gunicorn, generates the data set with
set-based SQL, runs every measurement, prints a table and writes bench/results/<time>.json.
"""

import argparse
import csv
import datetime as dt
import http.client
import json
import multiprocessing
import os
import random
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV = {
    "LOYALTY_ENV": "production",
    # A second bench can run beside the first with its own database (BENCH_DATA_DIR=.data/bench-2).
    "LOYALTY_DATA_DIR": os.environ.get("BENCH_DATA_DIR", str(ROOT / ".data" / "bench")),
    "SECRET_KEY": "bench-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "SECURE_TLS": "0",
    # In production the rate-limit counters live in Redis; a per-process cache keeps Redis out of the figures.
    "CACHE_URL": "locmemcache://",
    "LOG_LEVEL": "WARNING",
}
os.environ.update(ENV)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "loyalty_site.settings")
sys.path.insert(0, str(ROOT))

import django  # noqa: E402 - the environment above must be set first

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from members import services as member_services  # noqa: E402
from members.models import Store  # noqa: E402
from rewards import services  # noqa: E402
from rewards.models import Programme, ProgrammeRules, Tier  # noqa: E402
from rewards.selectors import ledger_drift  # noqa: E402

PORT = 8791
STORE = "bench-01"

GENERATE = """
INSERT INTO members_member (member_number, card_code, phone, email, name, notes, gender, language, external_ref, status,
    enrolled_at, enrolment_channel, email_consent, sms_consent, updated_at, enrolled_store_id, preferred_store_id)
SELECT (2000000000 + g)::text, upper(substr(md5(g::text), 1, 16)), '+86139' || lpad(g::text, 8, '0'), '', 'Member ' || g,
       '', '', 'zh-hans', '', 'active', now() - (g %% 700) * interval '1 day', 'import', false, false, now(), %(store)s, %(store)s
FROM generate_series(1, %(members)s) g;

INSERT INTO rewards_purchase (store_id, receipt_number, member_id, channel, gross, discount, tax, net, occurred_at,
    recorded_at, recorded_by_id, recorded_via, rules_id, earn_base, points_earned, claimed_at, fingerprint)
SELECT %(store)s, 'GEN-' || m.id || '-' || k, m.id, 'store', p.amount, 0, 0, p.amount,
       now() - ((m.id * 7 + k * 31) %% 330) * interval '1 day', now(), NULL, 'bench', %(rules)s, p.amount,
       floor(p.amount)::bigint, NULL, md5(m.id || '-' || k)
FROM members_member m CROSS JOIN generate_series(1, %(per_member)s) k
CROSS JOIN LATERAL (SELECT (10 + (m.id * 13 + k * 17) %% 90)::numeric(14, 2) AS amount) p;

INSERT INTO rewards_pointsaccount (member_id, available, pending, owed, lifetime_earned, lifetime_spent, updated_at)
SELECT id, 0, 0, 0, 0, 0, now() FROM members_member;

INSERT INTO rewards_pointslot (account_id, points, remaining, status, available_at, expires_at, purchase_id, earned_at)
SELECT member_id, points_earned, points_earned,
       CASE WHEN occurred_at + interval '14 days' <= now() THEN 'available' ELSE 'pending' END,
       occurred_at + interval '14 days', date_trunc('day', occurred_at) + interval '1 year 1 day', id, occurred_at
FROM rewards_purchase;

INSERT INTO rewards_ledgerentry (account_id, kind, points, occurred_at, created_at, purchase_id, lot_id, actor_id,
    source_ref, reason, detail, owed_points, idempotency_key)
SELECT l.account_id, 'earn', l.points, l.earned_at, now(), l.purchase_id, l.id, NULL, '', '',
       jsonb_build_object('receipt', p.receipt_number, 'store', 'Bench', 'currency', 'CNY', 'base', p.gross::text,
                          'excluded', '0.00', 'rate', '1.0000'), 0, NULL
FROM rewards_pointslot l JOIN rewards_purchase p ON p.id = l.purchase_id;

INSERT INTO rewards_membertier (member_id, tier_id, since, invited_until, missed_since, evaluated_on)
SELECT id, CASE WHEN id %% 20 = 0 THEN %(gold)s ELSE %(silver)s END, now() - interval '90 days', NULL, NULL, NULL
FROM members_member WHERE id %% 5 = 0;

UPDATE rewards_pointsaccount a SET
    available = s.available, pending = s.pending, lifetime_earned = s.earned
FROM (SELECT account_id, SUM(remaining) FILTER (WHERE status = 'available') AS available,
             COALESCE(SUM(remaining) FILTER (WHERE status = 'pending'), 0) AS pending, SUM(points) AS earned
      FROM rewards_pointslot GROUP BY account_id) s
WHERE a.member_id = s.account_id;
ANALYZE;
"""

# Points past their validity, as a year without the clock would leave them: available lots whose
# expiry (a local midnight in the last 30 days) has passed, each with the entry that granted it.
GENERATE_DUE = """
WITH lots AS (
    INSERT INTO rewards_pointslot (account_id, points, remaining, status, available_at, expires_at, purchase_id, earned_at)
    SELECT m.id, 5 + (m.id + k) %% 40, 5 + (m.id + k) %% 40, 'available', now() - interval '400 days',
           date_trunc('day', now()) - ((m.id * 7 + k) %% 30) * interval '1 day', NULL, now() - interval '400 days'
    FROM members_member m CROSS JOIN generate_series(1, %(per_member)s) k
    RETURNING id, account_id, points, earned_at
), entries AS (
    INSERT INTO rewards_ledgerentry (account_id, kind, points, occurred_at, created_at, purchase_id, lot_id, actor_id,
        source_ref, reason, detail, owed_points, idempotency_key)
    SELECT account_id, 'bonus', points, earned_at, now(), NULL, id, NULL, '', 'Bench bonus', '{}'::jsonb, 0, NULL FROM lots
)
UPDATE rewards_pointsaccount a
SET available = a.available + s.points, lifetime_earned = a.lifetime_earned + s.points
FROM (SELECT account_id, SUM(points) AS points FROM lots GROUP BY account_id) s
WHERE a.member_id = s.account_id;
ANALYZE rewards_pointslot, rewards_ledgerentry, rewards_pointsaccount;
"""

# The transaction one API purchase performs, written by hand: the ceiling the API is measured against.
RAW_EARN = [
    """INSERT INTO rewards_purchase (store_id, receipt_number, member_id, channel, gross, discount, tax, net, occurred_at,
        recorded_at, recorded_by_id, recorded_via, rules_id, earn_base, points_earned, claimed_at, fingerprint)
       VALUES (%(store)s, %(receipt)s, %(member)s, 'store', %(amount)s, 0, 0, %(amount)s, now(), now(), NULL, 'raw',
               %(rules)s, %(amount)s, %(points)s, NULL, md5(%(receipt)s)) RETURNING id""",
    "SELECT owed FROM rewards_pointsaccount WHERE member_id = %(member)s FOR UPDATE",
    """INSERT INTO rewards_pointslot (account_id, points, remaining, status, available_at, expires_at, purchase_id, earned_at)
       VALUES (%(member)s, %(points)s, %(points)s, 'pending', now() + interval '14 days', now() + interval '1 year',
               %(purchase)s, now()) RETURNING id""",
    """INSERT INTO rewards_ledgerentry (account_id, kind, points, occurred_at, created_at, purchase_id, lot_id, actor_id,
        source_ref, reason, detail, owed_points, idempotency_key)
       VALUES (%(member)s, 'earn', %(points)s, now(), now(), %(purchase)s, %(lot)s, NULL, '', '',
               jsonb_build_object('receipt', %(receipt)s::text), 0, NULL)""",
    """UPDATE rewards_pointsaccount SET pending = pending + %(points)s, lifetime_earned = lifetime_earned + %(points)s,
        updated_at = now() WHERE member_id = %(member)s""",
]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] if ordered else 0.0


def _http_worker(args: tuple[str, str, int, int, list[str], str]) -> tuple[list[float], int]:
    kind, key, worker, count, members, prefix = args
    rng = random.Random(worker)
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    headers = {"Authorization": f"Api-Key {key}", "Content-Type": "application/json"}
    latencies, errors = [], 0
    for i in range(count):
        member = rng.choice(members)
        if kind == "earn":
            body = {"member_number": member, "receipt_number": f"{prefix}-{worker}-{i}", "amount": f"{rng.randint(10, 99)}.50"}
            method, path, payload = "POST", "/api/v1/purchases", json.dumps(body)
        elif kind == "batch":
            items = [
                {"member_number": rng.choice(members), "receipt_number": f"{prefix}-{worker}-{i}-{j}", "amount": "25.00"}
                for j in range(1000)
            ]
            method, path, payload = "POST", "/api/v1/purchases/batch", json.dumps({"purchases": items})
        else:
            method, path, payload = "GET", f"/api/v1/members/{member}", None
        started = time.perf_counter()
        try:
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            response.read()
            ok = response.status in (200, 201)
        except (OSError, http.client.HTTPException):
            ok = False
            conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
        latencies.append(time.perf_counter() - started)
        errors += not ok
    return latencies, errors


def _raw_worker(args: tuple[int, int, list[int], int, int]) -> tuple[list[float], int]:
    import psycopg

    worker, count, members, store, rules = args
    rng = random.Random(worker)
    settings = connection.settings_dict
    with psycopg.connect(
        host=settings["HOST"],
        port=settings["PORT"] or None,
        dbname=settings["NAME"],
        user=settings["USER"],
        cursor_factory=psycopg.ClientCursor,  # client-side binding, as Django uses
    ) as conn:
        latencies = []
        for i in range(count):
            amount = rng.randint(10, 99)
            params = {"store": store, "rules": rules, "member": rng.choice(members), "receipt": f"RAW-{worker}-{i}"}
            params |= {"amount": amount, "points": amount}
            started = time.perf_counter()
            with conn.transaction(), conn.cursor() as cursor:
                cursor.execute(RAW_EARN[0], params)
                params["purchase"] = cursor.fetchone()[0]
                cursor.execute(RAW_EARN[1], params)
                cursor.execute(RAW_EARN[2], params)
                params["lot"] = cursor.fetchone()[0]
                cursor.execute(RAW_EARN[3], params)
                cursor.execute(RAW_EARN[4], params)
            latencies.append(time.perf_counter() - started)
    return latencies, 0


def _run(worker, jobs: list) -> tuple[float, list[float], int]:
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(len(jobs)) as pool:
        results = pool.map(worker, jobs)
    seconds = time.perf_counter() - started
    return seconds, [lat for r in results for lat in r[0]], sum(r[1] for r in results)


def setup(members: int, per_member: int) -> tuple[str, int, int]:
    call_command("migrate", verbosity=0)
    call_command("createcachetable", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE members_member, members_store, rewards_programme, members_apikey, members_idempotentrequest CASCADE"
        )
    programme = Programme.objects.create(name="Bench", currency="CNY", timezone="Asia/Shanghai")
    rules = ProgrammeRules.objects.create(
        programme=programme, effective_from=dt.datetime(2020, 1, 1, tzinfo=dt.UTC), pending_days=14, expiry_months=12
    )
    # Tiers as a coffee chain has them: each sale applies the member's multiplier and, below the
    # top, checks for an upgrade. One member in five holds one: Gold for one in twenty, else Silver.
    silver, gold = (
        Tier.objects.create(
            programme=programme,
            code=code,
            name=code.title(),
            rank=rank,
            entry_threshold=threshold,
            retain_threshold=threshold / 2,
            earn_multiplier=multiplier,
        )
        for code, rank, threshold, multiplier in (
            ("silver", 1, Decimal(2000), Decimal("1.25")),
            ("gold", 2, Decimal(5000), Decimal("1.5")),
        )
    )
    store = Store.objects.create(code=STORE, name="Bench store")
    _key, raw_key = member_services.api_key_create(store=store, name="bench", requests_per_minute=10_000_000)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            GENERATE,
            {"store": store.pk, "rules": rules.pk, "members": members, "per_member": per_member}
            | {"silver": silver.pk, "gold": gold.pk},
        )
    seconds = time.perf_counter() - started
    print(f"generated {members:,} members and {members * per_member:,} purchases, lots and entries in {seconds:.0f} s")
    # As pgbench does before a run: the generated rows vacuumed and their pages written out, so
    # neither the portal's nor the raw figures pay for the load that made them.
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
        cursor.execute("CHECKPOINT")
    return raw_key, store.pk, rules.pk


def start_gunicorn(spec: str) -> subprocess.Popen:
    worker_class, workers, threads = spec.split(":")
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "gunicorn", "loyalty_site.wsgi", "--bind", f"127.0.0.1:{PORT}", "--log-level", "warning"),
            *("--worker-class", worker_class, "--workers", workers, "--threads", threads),
        ],
        cwd=ROOT,
        env={**os.environ},
    )
    for _ in range(100):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("gunicorn did not start")


def bench_import(rows: int, member_numbers: list[str]) -> dict[str, float]:
    rng = random.Random(7)
    today = dt.datetime.now(dt.UTC).date()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "purchases.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["member_ref", "occurred_at", "amount", "receipt_number"])
            for i in range(rows):
                when = today - dt.timedelta(days=rng.randint(0, 500))
                writer.writerow([rng.choice(member_numbers), when.strftime("%Y%m%d"), f"{rng.randint(5, 200)}.00", f"IMPB-{i}"])
        # The target's baseline is a temporary table (no WAL); an ordinary logged table is shown beside it.
        raw_seconds, logged_seconds = (_copy_seconds(path, kind) for kind in ("TEMP", ""))
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "manage.py", "import_purchases", str(path), "--store", STORE],
            cwd=ROOT,
            env={**os.environ},
            check=True,
            stdout=subprocess.DEVNULL,
        )
        seconds = time.perf_counter() - started
    return {
        "rows": rows,
        "rows_per_s": rows / seconds,
        "raw_copy_rows_per_s": rows / raw_seconds,
        "ratio": raw_seconds / seconds,
        "logged_copy_rows_per_s": rows / logged_seconds,
        "logged_ratio": logged_seconds / seconds,
    }


def _copy_seconds(path: Path, kind: str) -> float:
    """Time a raw COPY of the file into a new table with its columns (`kind` "TEMP" or "" for a logged one)."""
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE {kind} TABLE raw_copy (member_ref text, occurred_at text, amount numeric, receipt_number text)")
        started = time.perf_counter()
        with path.open("rb") as handle, cursor.copy("COPY raw_copy FROM STDIN WITH (FORMAT csv, HEADER true)") as copy:
            while data := handle.read(1 << 20):
                copy.write(data)
        seconds = time.perf_counter() - started
        cursor.execute("DROP TABLE raw_copy")
    return seconds


def bench_expire(due_lots: int, members: int) -> dict[str, float]:
    """Time the clock's expiry job over at least `due_lots` lots past their validity."""
    per_member = -(-due_lots // members)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(GENERATE_DUE, {"per_member": per_member})
    print(f"generated {members * per_member:,} lots past their expiry in {time.perf_counter() - started:.0f} s")
    started = time.perf_counter()
    result = services.points_expire_due()
    seconds = time.perf_counter() - started
    return {"lots": int(result.lots), "points": int(result.points), "accounts": int(result.accounts), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--per-member", type=int, default=10, help="purchases (and ledger entries) per member")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=1000, help="per client (earn; twice as many reads)")
    parser.add_argument("--import-rows", type=int, default=1_000_000)
    parser.add_argument("--due-lots", type=int, default=1_000_000, help="lots past their expiry for the expire part")
    parser.add_argument("--only", choices=["api", "import", "expire"], help="run one part only")
    # Sync workers, one per core: here the database and the load share the machine's cores, so a
    # worker waiting on PostgreSQL leaves no core idle, and more workers only switch and contend.
    # On 2 cores, 2 workers made 1.4x the sales of 8 and halved the balance read's p99.
    parser.add_argument("--server", default=f"sync:{os.cpu_count() or 1}:1", help="gunicorn worker class:workers:threads")
    options = parser.parse_args()

    key, store, rules = setup(options.members, options.per_member)
    member_numbers = [str(2000000000 + g) for g in range(1, options.members + 1)]
    with connection.cursor() as cursor:
        cursor.execute("SELECT min(id) FROM members_member")
        first = cursor.fetchone()[0]
    connection.close()
    results: dict[str, dict[str, float]] = {}
    if options.only in (None, "api"):
        results.update(bench_api(options, key, store, rules, first, member_numbers))
    if options.only in (None, "import"):
        results["import"] = bench_import(options.import_rows, member_numbers)
    if options.only in (None, "expire"):
        results["expire"] = bench_expire(options.due_lots, options.members)
    drift = ledger_drift()
    results["ledger_check"] = {"problems": len(drift)}
    report(results, options)


def bench_api(
    options: argparse.Namespace, key: str, store: int, rules: int, first: int, member_numbers: list[str]
) -> dict[str, dict[str, float]]:
    member_ids = [first + i for i in range(options.members)]
    results: dict[str, dict[str, float]] = {}
    server = start_gunicorn(options.server)
    try:
        n, c = options.requests, options.clients
        # Warm every worker (its connection, prepared statements, the programme's snapshot) with
        # sales and reads that are not measured, as a till's first minutes of the day would.
        _run(_http_worker, [(kind, key, 100 + w, 25, member_numbers, "WARM") for w in range(c) for kind in ("earn", "read")])
        seconds, lat, errors = _run(_http_worker, [("earn", key, w, n, member_numbers, "API") for w in range(c)])
        raw_seconds, raw_lat, _ = _run(_raw_worker, [(w, n, member_ids, store, rules) for w in range(c)])
        results["earn"] = {
            "clients": c,
            "per_s": len(lat) / seconds,
            "p50_ms": percentile(lat, 50) * 1000,
            "p99_ms": percentile(lat, 99) * 1000,
            "errors": errors,
            "raw_per_s": len(raw_lat) / raw_seconds,
            "ratio": (len(lat) / seconds) / (len(raw_lat) / raw_seconds),
        }
        batches = max(2, n // 100)
        seconds, lat, errors = _run(_http_worker, [("batch", key, w, batches, member_numbers, "BATCH") for w in range(4)])
        batch_rows = len(lat) * 1000
        raw_started = time.perf_counter()
        with connection.cursor() as cursor:
            for b in range(len(lat)):
                cursor.execute(
                    RAW_BATCH,
                    {"store": store, "rules": rules, "prefix": f"RAWB-{b}-", "first": first, "members": options.members},
                )
        raw_seconds = time.perf_counter() - raw_started
        results["batch_earn"] = {
            "rows_per_s": batch_rows / seconds,
            "errors": errors,
            "raw_rows_per_s": batch_rows / raw_seconds,
            "ratio": raw_seconds / seconds,
        }
        seconds, lat, errors = _run(_http_worker, [("read", key, w, n * 2, member_numbers, "") for w in range(c)])
        results["balance_read"] = {
            "clients": c,
            "per_s": len(lat) / seconds,
            "p50_ms": percentile(lat, 50) * 1000,
            "p99_ms": percentile(lat, 99) * 1000,
            "errors": errors,
        }
    finally:
        server.terminate()
        server.wait(timeout=30)
    return results


RAW_BATCH = """
WITH p AS (
    INSERT INTO rewards_purchase (store_id, receipt_number, member_id, channel, gross, discount, tax, net, occurred_at,
        recorded_at, recorded_by_id, recorded_via, rules_id, earn_base, points_earned, claimed_at, fingerprint)
    SELECT %(store)s, %(prefix)s || g, %(first)s + (g * 7919) %% %(members)s, 'store', 25, 0, 0, 25, now(), now(), NULL, 'raw',
           %(rules)s, 25, 25, NULL, md5(g::text)
    FROM generate_series(1, 1000) g RETURNING id, member_id
), l AS (
    INSERT INTO rewards_pointslot (account_id, points, remaining, status, available_at, expires_at, purchase_id, earned_at)
    SELECT member_id, 25, 25, 'pending', now() + interval '14 days', now() + interval '1 year', id, now() FROM p
    RETURNING id, account_id, purchase_id
), e AS (
    INSERT INTO rewards_ledgerentry (account_id, kind, points, occurred_at, created_at, purchase_id, lot_id, actor_id,
        source_ref, reason, detail, owed_points, idempotency_key)
    SELECT account_id, 'earn', 25, now(), now(), purchase_id, id, NULL, '', '', '{}'::jsonb, 0, NULL FROM l
)
UPDATE rewards_pointsaccount a SET pending = pending + s.points, lifetime_earned = lifetime_earned + s.points
FROM (SELECT member_id, 25 * count(*) AS points FROM p GROUP BY member_id) s WHERE a.member_id = s.member_id
"""


def report(results: dict[str, dict[str, float]], options: argparse.Namespace) -> None:
    rows = []
    if "earn" in results:
        earn, batch, read = results["earn"], results["batch_earn"], results["balance_read"]
        rows += [
            (
                f"earn (API, {earn['clients']} clients)",
                f"{earn['per_s']:,.0f} purchases/s",
                f"{earn['raw_per_s']:,.0f} /s",
                f"{earn['ratio']:.2f}",
                "≥ 0.10",
                earn["ratio"] >= 0.10,
            ),
            ("earn p99", f"{earn['p99_ms']:.1f} ms (p50 {earn['p50_ms']:.1f})", "", "", "≤ 50 ms", earn["p99_ms"] <= 50),
            ("earn errors", f"{earn['errors']:.0f}", "", "", "0", earn["errors"] == 0),
            (
                "batch earn",
                f"{batch['rows_per_s']:,.0f} rows/s",
                f"{batch['raw_rows_per_s']:,.0f} rows/s",
                f"{batch['ratio']:.2f}",
                "",
                batch["errors"] == 0,
            ),
            (
                "balance read p99",
                f"{read['p99_ms']:.1f} ms (p50 {read['p50_ms']:.1f}, {read['per_s']:,.0f}/s)",
                "",
                "",
                "≤ 20 ms",
                read["p99_ms"] <= 20,
            ),
        ]
    if "import" in results:
        imp = results["import"]
        rows.append(
            (
                "import",
                f"{imp['rows_per_s']:,.0f} rows/s",
                f"{imp['raw_copy_rows_per_s']:,.0f} rows/s",
                f"{imp['ratio']:.3f}",
                "≥ 0.10",
                imp["ratio"] >= 0.10,
            )
        )
        rows.append(
            ("import vs logged COPY", "", f"{imp['logged_copy_rows_per_s']:,.0f} rows/s", f"{imp['logged_ratio']:.3f}", "", True)
        )
    if "expire" in results:
        exp = results["expire"]
        rows.append(
            (
                f"expire {exp['lots'] / 1e6:.1f}M due lots",
                f"{exp['seconds']:.1f} s ({exp['lots'] / exp['seconds']:,.0f} lots/s)",
                "",
                "",
                "< 60 s",
                exp["seconds"] < 60,
            )
        )
    problems = results["ledger_check"]["problems"]
    rows.append(("ledger_check", f"{problems:.0f} problems", "", "", "0", problems == 0))
    print(f"\n{'measure':<26}{'portal':<34}{'raw SQL':<18}{'ratio':<8}{'target':<10}ok")
    for name, value, raw, ratio, target, ok in rows:
        print(f"{name:<26}{value:<34}{raw:<18}{ratio:<8}{target:<10}{'yes' if ok else 'NO'}")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps({"options": vars(options), "cpus": os.cpu_count(), "results": results}, indent=2))
    print(f"\nwritten to {path.relative_to(ROOT)}")
    if not all(row[-1] for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
