import datetime as dt

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.utils import timezone

from members import services
from members.models import ConsentRecord, Member
from members.tests.factories import MemberFactory, StoreFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("typed", ["13800138000", "138 0013 8000", "+86 138-0013-8000", "0086 13800138000"])
def test_phone_numbers_in_any_common_format_are_stored_as_e164(typed):
    member = services.member_enrol(channel=Member.Channel.COUNTER, phone=typed)
    assert str(member.phone) == "+8613800138000"


def test_a_counter_enrolment_needs_only_a_phone_and_gets_a_number_and_card():
    store = StoreFactory()
    cashier = UserFactory(stores=[store])
    member = services.member_enrol(channel=Member.Channel.COUNTER, phone="13800138000", store=store, by=cashier)

    assert services.member_number_is_valid(member.member_number)
    assert len(member.card_code) == 16
    assert (member.enrolled_store, member.preferred_store, member.enrolled_by) == (store, store, cashier)
    assert member.user is None
    assert member.status == Member.Status.ACTIVE


def test_card_codes_and_member_numbers_are_unique():
    members = [services.member_enrol(channel="counter", phone=f"+8613800138{i:03d}") for i in range(50)]
    assert len({m.card_code for m in members}) == 50
    assert len({m.member_number for m in members}) == 50


def test_a_mistyped_member_number_fails_its_check_digit():
    number = MemberFactory().member_number
    wrong = number[:-1] + str((int(number[-1]) + 1) % 10)
    assert not services.member_number_is_valid(wrong)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "phone"),
        ({"phone": "12345"}, "phone"),
        ({"phone": "not a phone"}, "phone"),
        ({"email": "no-at-sign"}, "email"),
        ({"phone": "13800138000", "birthday": dt.date(2999, 1, 1)}, "birthday"),
        ({"phone": "13800138000", "gender": "robot"}, "gender"),
    ],
)
def test_bad_enrolment_input_names_the_field_and_writes_nothing(kwargs, field):
    with pytest.raises(ValidationError) as error:
        services.member_enrol(channel="counter", **kwargs)
    assert field in error.value.message_dict
    assert not Member.objects.exists()


def test_a_phone_or_email_that_already_belongs_to_a_member_is_caught():
    existing = services.member_enrol(channel="counter", phone="13800138000", email="Mei@Example.com")

    with pytest.raises(services.DuplicateMember) as by_phone:
        services.member_enrol(channel="online", phone="+86 138 0013 8000")
    with pytest.raises(services.DuplicateMember) as by_email:
        services.member_enrol(channel="online", email="mei@example.COM")

    assert by_phone.value.field == "phone"
    assert by_email.value.existing == existing
    assert existing.member_number in by_email.value.message_dict["email"][0]
    assert Member.objects.count() == 1


def test_email_is_stored_lower_case_and_unique_case_insensitively_in_the_database():
    from django.db import IntegrityError, transaction

    member = services.member_enrol(channel="online", email="Mei@Example.com")
    assert member.email == "mei@example.com"
    other = services.member_enrol(channel="online", email="other@example.com")
    other.email = "MEI@example.com"
    with pytest.raises(IntegrityError), transaction.atomic():
        other.save()


def test_consent_is_recorded_with_time_and_source_and_can_be_withdrawn():
    member = services.member_enrol(channel="counter", phone="13800138000", sms_consent=True)
    assert member.sms_consent
    assert member.sms_consent_at is not None

    services.member_consent_set(member=member, channel="sms", granted=False, source="portal")

    member.refresh_from_db()
    assert not member.sms_consent
    assert member.sms_consent_at <= timezone.now()
    assert list(ConsentRecord.objects.filter(member=member).order_by("recorded_at").values_list("granted", "source")) == [
        (True, "counter"),
        (False, "portal"),
    ]


def test_roles_are_groups_with_real_permissions():
    call_command("sync_roles", verbosity=0)
    call_command("sync_roles", verbosity=0)  # idempotent
    cashier = UserFactory(role="Cashier")
    manager = UserFactory(role="Store manager")
    admin = UserFactory(role="Programme admin")
    marketer = UserFactory(role="Marketer")

    assert set(Group.objects.values_list("name", flat=True)) >= {"Cashier", "Store manager", "Marketer", "Programme admin"}
    assert cashier.has_perm("rewards.add_purchase")
    assert not cashier.has_perm("rewards.adjust_points")
    assert manager.has_perm("rewards.adjust_points")
    assert marketer.has_perm("rewards.add_programmerules")
    assert not marketer.has_perm("rewards.add_purchase")
    assert admin.has_perm("members.change_store")
    assert admin.has_perm("rewards.adjust_points")


@pytest.mark.django_db
def test_many_members_are_saved_in_one_statement_and_others_are_untouched(django_assert_max_num_queries):
    emails = [member.email for member in MemberFactory.create_batch(3, birthday=dt.date(1980, 5, 5))]
    other = MemberFactory(name="Left alone")
    # Loaded without the fields to save: e-mail, deferred and left as it is, is read before the COPY, not during it.
    changed = list(Member.objects.exclude(pk=other.pk).only("id").order_by("pk"))
    wanted = [(f"New {n}", dt.date(1990, 1, 1 + n), f"+861390000000{n}") for n in range(2)] + [("", None, None)]
    for member, (name, birthday, phone) in zip(changed, wanted, strict=True):
        member.name, member.birthday, member.phone = name, birthday, phone
    with django_assert_max_num_queries(9):  # 3 deferred e-mails, the savepoint and the staging
        assert services.members_update_bulk(members=changed, fields=["name", "birthday", "phone", "email"]) == 3
    for member, expected, email in zip(changed, wanted, emails, strict=True):
        member.refresh_from_db()
        assert (member.name, member.birthday, str(member.phone) if member.phone else None) == expected
        assert member.email == email
    other.refresh_from_db()
    assert other.name == "Left alone"
