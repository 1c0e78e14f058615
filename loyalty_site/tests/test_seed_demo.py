import pytest
from django.core.management import call_command

from members.models import Member
from rewards.models import LedgerEntry, Redemption, Reward, StampCard, Tier, Voucher
from rewards.selectors import ledger_drift


@pytest.mark.django_db
def test_the_demo_loads_a_whole_programme_through_the_services_and_twice_adds_nothing():
    call_command("seed_demo", members=30, stdout=None)
    counts = (Member.objects.count(), LedgerEntry.objects.count(), Redemption.objects.count(), Voucher.objects.count())

    call_command("seed_demo", members=30, stdout=None)

    assert (Member.objects.count(), LedgerEntry.objects.count(), Redemption.objects.count(), Voucher.objects.count()) == counts
    assert Tier.objects.count() == 3
    assert Reward.objects.count() == 6
    assert Redemption.objects.exists()
    assert StampCard.objects.exists()
    assert Tier.objects.get(code="gold").name_zh_hant == "金卡"
    assert ledger_drift() == []
