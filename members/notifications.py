"""Messages to members: one inbox row each, delivered by e-mail or SMS when the member agreed.

Callers run `notify` inside the transaction that caused the message, so a rolled-back write
sends nothing; delivery is a Celery task enqueued on commit. The text is rendered once, in the
member's language, from `templates/notifications/<kind>.txt`: the first line is the subject,
the rest the body. Pass dates in the context as dates already in the programme's time zone.
"""

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Protocol

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.template import Context
from django.template.loader import get_template
from django.utils import timezone, translation
from django.utils.module_loading import import_string

from members.models import Member, Notification

logger = logging.getLogger(__name__)
ONCE_PER_KEY = "notification_once_per_key"


def render(*, member: Member, kind: str, context: dict[str, object]) -> tuple[str, str]:
    """Return the subject and body of a message of this kind, in the member's language."""
    template = get_template(f"notifications/{kind}.txt").template
    with translation.override(member.language):
        # Plain text: a name such as O'Brien must not arrive as O&#x27;Brien.
        text = template.render(Context({"member": member, **context}, autoescape=False)).strip()
    subject, _sep, body = text.partition("\n")
    # One header line that fits the column, whatever a member's name holds.
    subject = " ".join(subject.split())[: Notification._meta.get_field("subject").max_length]
    return subject, body.strip()


def notify(
    *,
    member: Member,
    kind: str,
    key: str,
    context: dict[str, object] | None = None,
    link: str = "",
    email: bool = True,
    sms: bool = False,
) -> Notification | None:
    """Put a message in the member's inbox once per `key` and queue its delivery; None if already sent."""
    subject, body = render(member=member, kind=kind, context=context or {})
    notification = Notification(
        member=member,
        kind=kind,
        key=key,
        subject=subject,
        body=body,
        link=link,
        email_status=_requested(email, member.email_consent, member.email),
        sms_status=_requested(sms, member.sms_consent, member.phone),
    )
    try:
        with transaction.atomic():
            notification.save(force_insert=True)
    except IntegrityError as error:
        if getattr(getattr(error.__cause__, "diag", None), "constraint_name", None) != ONCE_PER_KEY:
            raise
        return None  # this message was already written: a job or task ran twice
    if Notification.Delivery.PENDING in (notification.email_status, notification.sms_status):
        from members.tasks import deliver_notification, send_after_commit  # tasks import this module

        # A message not queued stays pending: notifications_requeue_stale sends it later.
        send_after_commit(deliver_notification, notification.pk)
    return notification


def inbox_write(*, kind: str, messages: Sequence[tuple[Member, str, dict[str, object]]]) -> None:
    """Put many messages of one kind in members' inboxes with one INSERT, sending nothing.

    For messages on the path of every sale (points earned), keyed by a row written in the same
    transaction, so no key can have been used before: no duplicate check is needed.
    """
    notifications = []
    for member, key, context in messages:
        subject, body = render(member=member, kind=kind, context=context)
        notifications.append(Notification(member=member, kind=kind, key=key, subject=subject, body=body))
    Notification.objects.bulk_create(notifications)


def _requested(wanted: bool, consent: bool, address: object) -> str:
    if not wanted:
        return Notification.Delivery.NOT_SENT
    if not consent:
        return Notification.Delivery.NO_CONSENT
    return Notification.Delivery.PENDING if address else Notification.Delivery.NO_ADDRESS


class SmsBackend(Protocol):
    """A text-message gateway; it raises OSError when sending failed and is worth retrying."""

    def send(self, *, phone: str, text: str) -> None: ...


class LoggingSmsBackend:
    """The default SMS backend: writes the message to the log; set `SMS_BACKEND` for a real gateway."""

    def send(self, *, phone: str, text: str) -> None:
        logger.info("SMS to %s: %s", phone, text)


def sms_backend() -> SmsBackend:
    return import_string(settings.SMS_BACKEND)()


def notification_deliver(*, notification_id: int) -> Notification | None:
    """Send a queued message by each pending channel; a channel already sent is never sent again.

    Each channel is sent in its own transaction holding the message's row: a twin delivery of
    the same message skips it instead of sending twice, and when SMS fails after the e-mail went
    out, the retry sends SMS only. A failed channel does not hold back the other; the first
    failure is raised after both were tried, for the task to retry.
    """
    notification, failure = None, None
    for channel, send in (("email_status", _send_email), ("sms_status", _send_sms)):
        with transaction.atomic():
            notification = (
                # Waits for a twin delivering it now, then finds that channel sent.
                Notification.objects.select_for_update(of=("self",)).select_related("member").filter(pk=notification_id).first()
            )
            if notification is None:
                return None  # gone: the member closed their account
            if getattr(notification, channel) != Notification.Delivery.PENDING:
                continue
            notification.attempts += 1
            try:
                send(notification)
            except OSError as error:
                failure = failure or error
                notification.save(update_fields=["attempts"])
                continue
            setattr(notification, channel, Notification.Delivery.SENT)
            notification.delivered_at = timezone.now()
            notification.save(update_fields=[channel, "delivered_at", "attempts"])
    if failure is not None:
        raise failure
    return notification


def notifications_requeue_stale(*, now: dt.datetime | None = None) -> dict[str, int]:
    """Queue again the messages whose delivery task was lost (a broker down at commit, a worker killed).

    Never-tried messages after ten minutes, any still pending after a day (retries end in
    `failed`, so pending that long means the retry was lost). Delivery skips what was sent, so a
    message queued twice is still sent once.
    """
    from members.tasks import deliver_notification

    now = now or timezone.now()
    pending = Q(email_status=Notification.Delivery.PENDING) | Q(sms_status=Notification.Delivery.PENDING)
    lost = Q(attempts=0, created_at__lt=now - dt.timedelta(minutes=10)) | Q(created_at__lt=now - dt.timedelta(days=1))
    ids = list(Notification.objects.filter(pending, lost).values_list("pk", flat=True)[:10_000])
    for notification_id in ids:
        deliver_notification.delay(notification_id)
    return {"requeued": len(ids)}


def notification_failed(*, notification_id: int) -> None:
    """Give up on the channels still pending after the last retry, so the admin shows it."""
    for channel in ("email_status", "sms_status"):
        Notification.objects.filter(pk=notification_id, **{channel: Notification.Delivery.PENDING}).update(
            **{channel: Notification.Delivery.FAILED}
        )


def _send_email(notification: Notification) -> None:
    send_mail(notification.subject, notification.body, None, [notification.member.email])


def _send_sms(notification: Notification) -> None:
    sms_backend().send(phone=str(notification.member.phone), text=f"{notification.subject}\n{notification.body}")


def notification_mark_read(*, member: Member, notification_id: int) -> Notification:
    """Mark one of the member's own messages read (another member's is not found)."""
    notification = member.notifications.get(pk=notification_id)
    if notification.read_at is None:
        notification.read_at = timezone.now()
        notification.save(update_fields=["read_at"])
    return notification
