"""The snapshot of the programme's settings each process keeps (rewards.config)."""

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from members.tests.factories import MemberFactory
from rewards import config, services, tiers
from rewards.models import MemberTier, ProgrammeRules, Tier


def sale(store, member, receipt: str, amount: str = "100"):
    return services.purchase_record(store=store, member=member, receipt_number=receipt, amount=amount)


@pytest.mark.django_db
def test_a_sale_reads_no_programme_settings_once_the_snapshot_is_taken(rules, store, member):
    sale(store, member, "R-1")

    with CaptureQueriesContext(connection) as queries:
        sale(store, member, "R-2")

    read = " ".join(q["sql"] for q in queries.captured_queries)
    for table in ("rewards_programme", "rewards_programmerules", "rewards_tier", "rewards_stampprogramme"):
        assert f'FROM "{table}"' not in read


@pytest.mark.django_db
def test_a_new_rules_version_saved_here_applies_to_the_next_sale_at_once(rules, store, member):
    assert sale(store, member, "R-1").purchase.points_earned == 100

    ProgrammeRules.objects.create(
        programme=rules.programme, effective_from=timezone.now() - dt.timedelta(seconds=1), points_per_unit=Decimal(2)
    )

    assert sale(store, member, "R-2").purchase.points_earned == 200


@pytest.mark.django_db
def test_a_change_made_by_another_process_is_seen_once_the_snapshot_is_older_than_its_lifetime(rules, store, member, monkeypatch):
    sale(store, member, "R-1")
    # Another process's save sends no signal here: only the snapshot's age brings the change in.
    ProgrammeRules.objects.filter(pk=rules.pk).update(points_per_unit=Decimal(3))
    assert sale(store, member, "R-2").purchase.points_earned == 100

    taken_at = config.current().taken_at
    monkeypatch.setattr(config.time, "monotonic", lambda: taken_at + config.SECONDS + 0.1)

    assert sale(store, member, "R-3").purchase.points_earned == 300


@pytest.mark.django_db
def test_a_tier_made_since_the_snapshot_was_taken_is_read_afresh_not_an_error(rules, store, member):
    config.current()
    # Made by another process: no signal reaches this one.
    Tier.objects.bulk_create(
        [Tier(programme=rules.programme, code="gold", name="Gold", rank=2, entry_threshold=0, retain_threshold=0)]
    )
    gold = Tier.objects.get(code="gold")
    MemberTier.objects.create(member=member, tier=gold)

    assert tiers.tier_current(member) == gold
    assert tiers.tiers_current([member.pk, MemberFactory().pk], today=timezone.localdate()) == {member.pk: gold}


@pytest.mark.django_db
def test_without_a_tier_above_the_member_no_upgrade_is_looked_for(rules, store, member):
    top = Tier.objects.create(
        programme=rules.programme, code="top", name="Top", rank=1, entry_threshold=1_000_000, retain_threshold=0
    )
    MemberTier.objects.create(member=member, tier=top)
    other = MemberFactory()
    sale(store, member, "R-1")  # the snapshot now knows the tier
    sale(store, other, "R-2")

    def statements(buyer, receipt: str) -> list[str]:
        run: list[str] = []

        def record(execute, sql, params, many, context):
            run.append(sql)
            return execute(sql, params, many, context)

        with connection.execute_wrapper(record):
            sale(store, buyer, receipt)
        return run

    assert tiers.UPGRADE_SQL not in statements(member, "R-3")
    assert tiers.UPGRADE_SQL in statements(other, "R-4")


@pytest.mark.django_db
def test_a_buyer_read_with_the_tier_held_is_not_read_again_and_an_upgrade_forgets_it(rules, store, member):
    silver = Tier.objects.create(
        programme=rules.programme, code="silver", name="Silver", rank=1, entry_threshold=150, retain_threshold=0
    )
    buyer = tiers.with_tier_held(type(member).objects).get(pk=member.pk)

    with CaptureQueriesContext(connection) as reading:
        assert tiers.tier_current(buyer) is None
    result = sale(store, buyer, "R-1", amount="200")  # takes the buyer up to Silver

    assert len(reading) == 0
    assert result.purchase.points_earned == 200  # at the base rate: the tier held before the sale
    assert tiers.tier_current(buyer) == silver  # read afresh after the upgrade


@pytest.mark.django_db
def test_a_tier_deleted_by_another_process_is_not_offered_as_the_next_one(rules, member):
    gold = Tier.objects.create(
        programme=rules.programme, code="gold", name="Gold", rank=1, entry_threshold=500, retain_threshold=0
    )
    assert tiers.tier_progress(member)["next"]["code"] == "gold"
    with connection.cursor() as cursor:  # another process's delete: no signal reaches this one
        cursor.execute("DELETE FROM rewards_tier WHERE id = %s", [gold.pk])

    progress = tiers.tier_progress(member)

    assert progress["next"] is None
    assert progress["needed_to_reach"] is None
