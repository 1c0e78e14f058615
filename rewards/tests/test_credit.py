"""A credit's lot, entry and balances are written by one hand-written statement (services.CREDIT_SQL):
what it writes, and what it hands back, must be exactly what the ORM would have."""

import datetime as dt

import pytest
from django.forms.models import model_to_dict
from django.utils import timezone

from rewards import services
from rewards.models import LedgerEntry, PointsAccount, PointsLot

pytestmark = pytest.mark.django_db


def as_stored(row):
    return model_to_dict(type(row).objects.get(pk=row.pk))


def test_an_earn_hands_back_the_rows_as_stored(rules, store, member, cashier):
    entry = services.purchase_record(store=store, member=member, receipt_number="R-1", amount="42.50", by=cashier).entry

    assert model_to_dict(entry) == as_stored(entry)
    assert model_to_dict(entry.lot) == as_stored(entry.lot)
    assert model_to_dict(entry.account) == as_stored(entry.account)
    assert (entry.kind, entry.points, entry.actor_id, entry.lot.status) == ("earn", 42, cashier.pk, "available")
    assert entry.detail["receipt"] == "R-1"
    assert not entry._state.adding
    assert entry.explanation  # written from the figures handed back


def test_a_held_grant_with_its_key_reason_and_author_is_stored_as_given(rules, member, cashier):
    held = timezone.now() + dt.timedelta(days=7)

    entry = services.points_grant(
        member=member,
        points=25,
        kind="bonus",
        idempotency_key="promo:1",
        detail={"campaign": 3},
        reason="Welcome",
        hold_until=held,
        by=cashier,
    )

    stored = LedgerEntry.objects.get(pk=entry.pk)
    assert (stored.idempotency_key, stored.reason, stored.actor_id, stored.detail) == (
        "promo:1",
        "Welcome",
        cashier.pk,
        {"campaign": 3},
    )
    assert stored.lot.status == PointsLot.Status.PENDING
    assert stored.lot.available_at == held
    account = PointsAccount.objects.get(pk=member.pk)
    assert (account.pending, account.available, account.lifetime_earned) == (25, 0, 25)
    assert model_to_dict(entry) == model_to_dict(stored)
