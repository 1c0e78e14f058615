import datetime as dt
import threading
import time

import pytest
from django.core import mail
from django.db import IntegrityError, connection, transaction
from django.urls import reverse

from members.models import Notification
from members.notifications import notification_deliver, notify
from members.tasks import deliver_notification
from members.tests.factories import MemberFactory, UserFactory
from members.tests.sms import RecordingSms

SENT, PENDING = Notification.Delivery.SENT, Notification.Delivery.PENDING


@pytest.fixture
def test_templates(settings, tmp_path):
    """Put a folder of test-only notification templates in front of the project's."""
    (tmp_path / "notifications").mkdir()
    engine = settings.TEMPLATES[0]
    settings.TEMPLATES = [{**engine, "DIRS": [tmp_path, *engine["DIRS"]]}]
    return tmp_path / "notifications"


@pytest.fixture
def retries_run_eagerly(monkeypatch):
    """Let an eager task's retries run one after the other, as a worker would run them later."""
    monkeypatch.setitem(deliver_notification.app.conf, "task_eager_propagates", False)


def birthday(member, key="birthday_bonus:2026", **channels):
    return notify(member=member, kind="birthday_bonus", key=key, context={"points": 50, "year": 2026}, **channels)


@pytest.mark.django_db
def test_a_message_goes_in_the_inbox_once_per_key(django_capture_on_commit_callbacks):
    member = MemberFactory(name="Li Na", email_consent=True)

    with django_capture_on_commit_callbacks() as queued:
        first = birthday(member)
        again = birthday(member)
        other = birthday(member, key="birthday_bonus:2027")

    assert first is not None
    assert other is not None
    assert again is None
    assert member.notifications.count() == 2
    assert len(queued) == 2  # one delivery per message written, none for the repeat
    assert first.subject == "Happy birthday, Li Na!"
    assert first.body == "To celebrate, we have added a birthday bonus of 50 points to your balance. Enjoy your day!"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("language", "written_date"),
    [("en", "June 30, 2026"), ("zh-hans", "2026年6月30日"), ("zh-hant", "2026年6月30日"), ("ko", "2026년 6월 30일")],
)
def test_a_message_is_written_in_the_members_language(test_templates, language, written_date):
    (test_templates / "tier_kept.txt").write_text(
        '{% load i18n %}{% get_current_language as lang %}Written in {{ lang }}\n{{ day|date:"DATE_FORMAT" }}\n'
    )
    member = MemberFactory(language=language)

    notification = notify(member=member, kind="tier_kept", key="k", context={"day": dt.date(2026, 6, 30)})

    assert (notification.subject, notification.body) == (f"Written in {language}", written_date)
    assert Notification.objects.get().subject == f"Written in {language}"  # stored as written, for the inbox


@pytest.mark.django_db
def test_the_real_templates_render_in_each_language():
    # Thousands grouped as on every page, in every language (Django's Simplified Chinese format would write 1200).
    written = [("en", "1,200", "June 30, 2026"), ("ko", "1,200", "2026년 6월 30일"), ("zh-hans", "1,200", "2026年6月30日")]
    for language, points, date in written:
        member = MemberFactory(language=language)
        message = notify(
            member=member, kind="points_expiring", key="x", context={"points": 1200, "expires_on": dt.date(2026, 6, 30)}
        )
        assert points in message.subject  # numbers as each language writes them
        assert date in message.subject


@pytest.mark.django_db
def test_plain_text_is_not_html_escaped_and_the_subject_is_one_line(test_templates):
    message = birthday(MemberFactory(name="O'Brien <Tom> & co"))

    assert message.subject == "Happy birthday, O'Brien <Tom> & co!"

    (test_templates / "tier_kept.txt").write_text("{{ long }}\nBody\n")
    long = notify(member=MemberFactory(), kind="tier_kept", key="k", context={"long": "x" * 300})
    assert len(long.subject) == Notification._meta.get_field("subject").max_length


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("member_fields", "channels", "statuses"),
    [
        ({"email_consent": True, "sms_consent": True}, {"sms": True}, (PENDING, PENDING)),
        ({"email_consent": False, "sms_consent": True}, {"sms": True}, (Notification.Delivery.NO_CONSENT, PENDING)),
        ({"email_consent": True, "sms_consent": False}, {"sms": True}, (PENDING, Notification.Delivery.NO_CONSENT)),
        ({"email_consent": True, "email": ""}, {}, (Notification.Delivery.NO_ADDRESS, Notification.Delivery.NOT_SENT)),
        ({"sms_consent": True, "phone": ""}, {"sms": True, "email": False}, ("", Notification.Delivery.NO_ADDRESS)),
        ({"email_consent": True, "sms_consent": True}, {"email": False}, ("", "")),
    ],
)
def test_each_channel_respects_consent_and_the_address(
    django_capture_on_commit_callbacks, sms, member_fields, channels, statuses
):
    member = MemberFactory(**member_fields)

    with django_capture_on_commit_callbacks(execute=True) as queued:
        message = birthday(member, **channels)

    message.refresh_from_db()
    assert (message.email_status, message.sms_status) == tuple(SENT if status == PENDING else status for status in statuses)
    assert len(mail.outbox) == (statuses[0] == PENDING)
    assert len(sms.sent) == (statuses[1] == PENDING)
    assert len(queued) == (PENDING in statuses)  # nothing to deliver, nothing queued
    if mail.outbox:
        assert mail.outbox[0].to == [member.email]
        assert mail.outbox[0].subject == message.subject
    if sms.sent:
        assert sms.sent[0] == (str(member.phone), f"{message.subject}\n{message.body}")


@pytest.mark.django_db
def test_delivery_waits_for_the_commit_and_a_rollback_sends_nothing(django_capture_on_commit_callbacks):
    member = MemberFactory(email_consent=True)

    def failing_write() -> None:
        with transaction.atomic():
            birthday(member)
            raise RuntimeError("the write that caused the message failed")

    with django_capture_on_commit_callbacks(execute=True) as queued, pytest.raises(RuntimeError):
        failing_write()
    assert (queued, mail.outbox, Notification.objects.count()) == ([], [], 0)

    with django_capture_on_commit_callbacks(execute=True) as queued, transaction.atomic():
        message = birthday(member)
        assert mail.outbox == []  # not before the commit
    assert len(queued) == 1
    assert len(mail.outbox) == 1
    message.refresh_from_db()
    assert (message.email_status, message.attempts) == (SENT, 1)
    assert message.delivered_at is not None


@pytest.mark.django_db
def test_an_sms_that_fails_after_the_email_went_out_is_retried_alone(sms, retries_run_eagerly):
    member = MemberFactory(email_consent=True, sms_consent=True)
    message = birthday(member, sms=True)
    sms.failures = 2

    assert deliver_notification.apply(args=[message.pk]).get() is True

    message.refresh_from_db()
    assert (message.email_status, message.sms_status) == (SENT, SENT)
    assert len(mail.outbox) == 1  # the e-mail went once, whatever happened to the SMS
    assert len(sms.sent) == 1
    assert message.attempts == 4  # one e-mail, three SMS


@pytest.mark.django_db
def test_a_failing_email_does_not_hold_back_the_sms(sms, settings):
    settings.EMAIL_BACKEND = "members.tests.test_notifications.BrokenMailBackend"
    member = MemberFactory(email_consent=True, sms_consent=True)
    message = birthday(member, sms=True)

    with pytest.raises(ConnectionRefusedError):
        notification_deliver(notification_id=message.pk)

    message.refresh_from_db()
    assert (message.email_status, message.sms_status, message.attempts) == (PENDING, SENT, 2)
    assert len(sms.sent) == 1


class BrokenMailBackend:
    def __init__(self, **kwargs: object) -> None:
        pass

    def send_messages(self, messages: object) -> int:
        raise ConnectionRefusedError("mail server down")


@pytest.mark.django_db
def test_the_last_failure_marks_the_channel_failed(sms, retries_run_eagerly):
    member = MemberFactory(email_consent=True, sms_consent=True)
    message = birthday(member, sms=True)
    sms.failures = 100

    with pytest.raises(ConnectionError):
        deliver_notification.apply(args=[message.pk]).get()

    message.refresh_from_db()
    assert (message.email_status, message.sms_status) == (SENT, Notification.Delivery.FAILED)
    assert message.attempts == 1 + 1 + deliver_notification.max_retries
    assert (len(mail.outbox), sms.sent) == (1, [])


@pytest.mark.django_db
def test_a_task_delivered_twice_sends_once(sms):
    member = MemberFactory(email_consent=True, sms_consent=True)
    message = birthday(member, sms=True)

    assert deliver_notification.apply(args=[message.pk]).get() is True
    assert deliver_notification.apply(args=[message.pk]).get() is True

    assert (len(mail.outbox), len(sms.sent)) == (1, 1)
    message.refresh_from_db()
    assert message.attempts == 2


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_twin_deliveries_at_the_same_moment_send_once(sms):
    """Given a task delivered to two workers at once, the message goes out once."""
    member = MemberFactory(email_consent=False, sms_consent=True)
    message = birthday(member, sms=True, email=False)
    RecordingSms.sent.clear()  # the commit above delivered it eagerly: start again from pending
    Notification.objects.filter(pk=message.pk).update(sms_status=PENDING, attempts=0)
    sms.delay = 0.5
    barrier = threading.Barrier(4)
    results: list[object] = []

    def deliver() -> None:
        try:
            barrier.wait()
            results.append(notification_deliver(notification_id=message.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(sms.sent) == 1
    assert sum(result is not None for result in results) >= 1
    message.refresh_from_db()
    assert (message.sms_status, message.attempts) == (SENT, 1)


@pytest.mark.django_db
def test_only_the_once_per_key_rule_is_taken_as_already_sent(test_templates):
    (test_templates / "not_a_kind.txt").write_text("Subject\nBody\n")
    member = MemberFactory()

    with pytest.raises(IntegrityError):
        notify(member=member, kind="not_a_kind", key="k")


@pytest.mark.django_db
def test_messages_are_listed_read_only_in_the_admin(client, roles):
    member = MemberFactory(name="Li Na")
    message = birthday(member)
    client.force_login(UserFactory(role="Programme admin"))
    url = reverse("admin:members_notification_changelist")

    found = client.get(url, {"q": member.member_number, "kind": "birthday_bonus", "email_status": "no_consent"})
    missed = client.get(url, {"q": "nobody"})

    assert found.status_code == 200
    assert "Happy birthday, Li Na!" in found.text
    assert "Happy birthday" not in missed.text
    assert client.get(reverse("admin:members_notification_change", args=[message.pk])).status_code == 200
    assert client.post(reverse("admin:members_notification_delete", args=[message.pk])).status_code == 403


@pytest.mark.django_db
def test_a_delivery_whose_task_was_lost_is_queued_again_and_sent_once(sms):
    """Given messages whose task never ran (a broker down at commit), then the sweep sends them once."""
    from members.notifications import notifications_requeue_stale

    member = MemberFactory(email_consent=True, sms_consent=True)
    lost = birthday(member, key="lost", sms=True)
    recent = birthday(member, key="recent", sms=True)
    RecordingSms.sent.clear()
    mail.outbox.clear()
    now = lost.created_at + dt.timedelta(minutes=11)
    Notification.objects.filter(pk__in=[lost.pk, recent.pk]).update(email_status=PENDING, sms_status=PENDING, attempts=0)
    Notification.objects.filter(pk=recent.pk).update(created_at=now - dt.timedelta(minutes=2))

    assert notifications_requeue_stale(now=now) == {"requeued": 1}  # the recent one may still be on its way
    assert notifications_requeue_stale(now=now) == {"requeued": 0}  # sent now: nothing left to queue

    lost.refresh_from_db()
    assert (lost.email_status, lost.sms_status) == (SENT, SENT)
    assert (len(mail.outbox), len(sms.sent)) == (1, 1)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_delivery_waits_for_a_short_lock_instead_of_giving_up(sms):
    """Given the member reading the message at the moment its task runs, then it is still sent."""
    member = MemberFactory(email_consent=False, sms_consent=True)
    message = birthday(member, sms=True, email=False)
    RecordingSms.sent.clear()
    Notification.objects.filter(pk=message.pk).update(sms_status=PENDING, attempts=0)
    locked = threading.Event()

    def reader() -> None:
        try:
            with transaction.atomic():
                Notification.objects.select_for_update().get(pk=message.pk)
                locked.set()
                time.sleep(0.5)
        finally:
            connection.close()

    thread = threading.Thread(target=reader)
    thread.start()
    locked.wait()
    delivered = notification_deliver(notification_id=message.pk)
    thread.join()

    assert delivered is not None
    assert len(sms.sent) == 1


@pytest.mark.django_db
def test_a_broker_out_of_reach_leaves_the_message_pending_and_raises_nothing(
    monkeypatch, caplog, django_capture_on_commit_callbacks
):
    from kombu.exceptions import OperationalError

    def unreachable(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(deliver_notification, "delay", unreachable)
    member = MemberFactory(email="li@example.com", email_consent=True)
    with django_capture_on_commit_callbacks(execute=True):
        message = birthday(member)  # the sale (or job) that caused it must not become an error

    message.refresh_from_db()
    assert message.email_status == PENDING  # the clock's requeue sends it later
    assert mail.outbox == []
    assert "could not queue members.tasks.deliver_notification" in caplog.text


@pytest.mark.django_db
def test_a_task_that_fails_when_run_at_once_is_not_mistaken_for_a_broker_out_of_reach(django_capture_on_commit_callbacks):
    from members.tasks import send_after_commit

    class Broken:
        name = "broken"

        def delay(self, *args):
            raise ValueError("a bug in the task")

    failed = []
    with pytest.raises(ValueError, match="a bug"), django_capture_on_commit_callbacks(execute=True):
        send_after_commit(Broken(), 1, failed=lambda: failed.append(True))
    assert failed == []
