"""The benchmark's hand-written SQL still fits the schema: `make bench` is not run by CI, so a new
NOT NULL column would otherwise break it unnoticed (as staff notes on members once did)."""

import ast
from pathlib import Path

import pytest
from django.db import connection

from members.models import Store
from rewards.models import MemberTier, Tier
from rewards.selectors import ledger_drift
from rewards.services import points_expire_due

BENCH = Path(__file__).resolve().parents[2] / "bench" / "run.py"


def bench_constants() -> dict[str, object]:
    """Read the SQL constants of bench/run.py without running it (importing it would point Django at its own database)."""
    tree = ast.parse(BENCH.read_text())
    return {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and node.targets[0].id.isupper()
        if isinstance(node.value, ast.Constant | ast.List)
    }


@pytest.mark.django_db
def test_the_bench_data_its_raw_transactions_and_its_due_lots_fit_the_schema_and_reconcile(rules):
    sql = bench_constants()
    store = Store.objects.create(code="bench-01", name="Bench store")
    silver, gold = (
        Tier.objects.create(programme=rules.programme, code=code, name=code, rank=rank, entry_threshold=1000, retain_threshold=0)
        for code, rank in (("silver", 1), ("gold", 2))
    )
    params = {"store": store.pk, "rules": rules.pk, "members": 20, "per_member": 3, "silver": silver.pk, "gold": gold.pk}

    with connection.cursor() as cursor:
        cursor.execute(sql["GENERATE"], params)
        cursor.execute("SELECT min(id) FROM members_member")
        first = cursor.fetchone()[0]
        cursor.execute(sql["RAW_BATCH"], {**params, "prefix": "RAWB-0-", "first": first})
        cursor.execute(sql["GENERATE_DUE"], {"per_member": 2})

    assert points_expire_due().lots == 40
    # Any 20 consecutive ids hold 4 multiples of 5, one of them a multiple of 20.
    assert MemberTier.objects.filter(tier=silver).count() == 3
    assert MemberTier.objects.filter(tier=gold).count() == 1
    assert ledger_drift() == []
