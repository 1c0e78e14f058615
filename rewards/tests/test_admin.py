import datetime as dt
from uuid import uuid4

import pytest
from django.urls import reverse
from django.utils import timezone

from members.tests.factories import UserFactory
from rewards import services
from rewards.models import LedgerEntry, PointsAccount, ProgrammeRules, TermsVersion

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client, roles, rules):
    user = UserFactory(role="Programme admin")
    client.force_login(user)
    client.user = user
    return client


@pytest.fixture
def earned(rules, store, member):
    services.purchase_record(store=store, receipt_number="R-77", amount="40", member=member)
    return member


@pytest.mark.parametrize(
    "model",
    [
        "members/member",
        "members/store",
        "members/user",
        "rewards/programme",
        "rewards/programmerules",
        "rewards/termsversion",
        "rewards/termsacceptance",
        "rewards/pointsaccount",
        "rewards/purchase",
        "rewards/return",
        "rewards/ledgerentry",
        "rewards/pointslot",
    ],
)
def test_every_changelist_opens_and_searches(admin_client, earned, model):
    app_label, model_name = model.split("/")
    url = reverse(f"admin:{app_label}_{model_name}_changelist")
    assert admin_client.get(url).status_code == 200
    assert admin_client.get(url, {"q": earned.member_number}).status_code == 200


def test_members_are_found_by_phone_and_purchases_by_receipt(admin_client, earned):
    response = admin_client.get(reverse("admin:members_member_changelist"), {"q": str(earned.phone)})
    assert earned.member_number in response.text
    response = admin_client.get(reverse("admin:rewards_purchase_changelist"), {"q": "R-77"})
    assert "R-77" in response.text


def test_ledger_rows_and_balances_are_read_only(admin_client, earned):
    entry = LedgerEntry.objects.get()
    response = admin_client.post(reverse("admin:rewards_ledgerentry_change", args=[entry.pk]), {"points": 9999})
    assert response.status_code == 403
    assert admin_client.get(reverse("admin:rewards_ledgerentry_add")).status_code == 403
    entry.refresh_from_db()
    assert entry.points == 40


def test_the_adjust_points_action_goes_through_the_service(admin_client, earned):
    url = reverse("admin:rewards_pointsaccount_changelist")
    form = admin_client.post(url, {"action": "adjust_points", "_selected_action": [earned.pk]})
    assert form.status_code == 200
    assert "reason" in form.text

    admin_client.post(url, {"action": "adjust_points", "_selected_action": [earned.pk], "apply": "1", "points": "", "reason": ""})
    assert LedgerEntry.objects.filter(kind="adjustment").count() == 0

    token = form.context["form"]["token"].value()
    for _twice in range(2):  # a double click
        admin_client.post(
            url,
            {
                "action": "adjust_points",
                "_selected_action": [earned.pk],
                "apply": "1",
                "points": "-10",
                "reason": "Double scan",
                "token": token,
            },
        )
    entry = LedgerEntry.objects.get(kind="adjustment")
    assert (entry.points, entry.reason, entry.actor) == (-10, "Double scan", admin_client.user)
    assert PointsAccount.objects.get(pk=earned.pk).available == 30


def test_a_marketer_cannot_adjust_points_from_the_admin(client, roles, earned):
    client.force_login(UserFactory(role="Marketer"))
    url = reverse("admin:rewards_pointsaccount_changelist")
    client.post(
        url,
        {
            "action": "adjust_points",
            "_selected_action": [earned.pk],
            "apply": "1",
            "points": "500",
            "reason": "x",
            "token": str(uuid4()),
        },
    )
    assert not LedgerEntry.objects.filter(kind="adjustment").exists()


def test_rules_in_force_are_kept_and_a_change_is_a_new_version_with_who_and_when(admin_client, rules):
    assert admin_client.get(reverse("admin:rewards_programmerules_change", args=[rules.pk])).status_code == 200
    response = admin_client.post(reverse("admin:rewards_programmerules_change", args=[rules.pk]), {"pending_days": 1})
    assert response.status_code == 403

    start = (timezone.now() + dt.timedelta(days=7)).replace(microsecond=0)
    add_url = reverse("admin:rewards_programmerules_add")
    initial = admin_client.get(add_url)
    assert initial.status_code == 200
    response = admin_client.post(
        add_url,
        {
            "effective_from_0": start.astimezone(dt.UTC).strftime("%Y-%m-%d"),
            "effective_from_1": start.astimezone(dt.UTC).strftime("%H:%M:%S"),
            "change_note": "Double points in December",
            "points_per_unit": "2",
            "rounding": "down",
            "earn_base": "net_with_tax",
            "excluded_categories": "gift-cards",
            "minimum_purchase": "0",
            "pending_days": "14",
            "expiry_policy": "months",
            "expiry_months": "12",
            "expiry_years": "1",
            "claim_days": "30",
            "min_redemption_points": "0",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    new = ProgrammeRules.objects.get(change_note="Double points in December")
    assert new.created_by == admin_client.user
    assert new.excluded_categories == ["gift-cards"]
    assert ProgrammeRules.objects.in_force(timezone.now()) == rules
    assert ProgrammeRules.objects.in_force(start + dt.timedelta(seconds=1)) == new


def test_rules_cannot_be_backdated_from_the_admin(admin_client):
    past = timezone.now() - dt.timedelta(days=2)
    response = admin_client.post(
        reverse("admin:rewards_programmerules_add"),
        {
            "effective_from_0": past.strftime("%Y-%m-%d"),
            "effective_from_1": past.strftime("%H:%M:%S"),
            "points_per_unit": "5",
            "rounding": "down",
            "earn_base": "net_with_tax",
            "minimum_purchase": "0",
            "pending_days": "0",
            "expiry_policy": "never",
            "expiry_months": "12",
            "expiry_years": "1",
            "claim_days": "30",
            "min_redemption_points": "0",
        },
    )
    assert response.status_code == 200
    assert "effective_from" in response.context["adminform"].form.errors
    assert ProgrammeRules.objects.count() == 1


def test_terms_are_versioned_with_a_text_per_language(admin_client):
    published = timezone.now() + dt.timedelta(days=1)
    response = admin_client.post(
        reverse("admin:rewards_termsversion_add"),
        {
            "version": "2026.2",
            "published_at_0": published.strftime("%Y-%m-%d"),
            "published_at_1": published.strftime("%H:%M:%S"),
            "summary_of_changes": "Clearer expiry",
            "texts-TOTAL_FORMS": "2",
            "texts-INITIAL_FORMS": "0",
            "texts-0-language": "en",
            "texts-0-body": "Points expire after 12 months.",
            "texts-1-language": "zh-hant",
            "texts-1-body": "點數 12 個月後到期。",
        },
    )
    assert response.status_code == 302
    terms = TermsVersion.objects.get(version="2026.2")
    assert set(terms.texts.values_list("language", flat=True)) == {"en", "zh-hant"}
    assert services.terms_current() is None  # not yet published
    assert services.terms_current(at=published + dt.timedelta(seconds=1)) == terms


def test_a_cashier_cannot_import(client, roles, store):
    client.force_login(UserFactory(role="Cashier", is_staff=True))
    assert client.get(reverse("admin:rewards_import")).status_code == 403
