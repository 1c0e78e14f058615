"""Messages to members: one inbox row each, delivered by e-mail or SMS when the member agreed.

Callers run `notify` inside the transaction that caused the message, so a rolled-back write
sends nothing; delivery is a Celery task enqueued on commit. The text is rendered once, in the
member's language, from `templates/notifications/<kind>.txt`: the first line is the subject,
the rest the body.
"""

import logging
from typing import Protocol

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.utils import timezone, translation
from django.utils.module_loading import import_string

from members.models import Member, Notification

logger = logging.getLogger(__name__)


def render(*, member: Member, kind: str, context: dict[str, object]) -> tuple[str, str]:
    """Return the subject and body of a message of this kind, in the member's language."""
    with translation.override(member.language):
        text = render_to_string(f"notifications/{kind}.txt", {"member": member, **context}).strip()
    subject, _sep, body = text.partition("\n")
    return subject.strip(), body.strip()


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
    except IntegrityError:
        return None  # this message was already written: a job or task ran twice
    if Notification.Delivery.PENDING in (notification.email_status, notification.sms_status):
        from members.tasks import deliver_notification  # tasks import this module

        deliver_notification.delay_on_commit(notification.pk)
    return notification


def _requested(wanted: bool, consent: bool, address: object) -> str:
    if not wanted:
        return Notification.Delivery.NOT_SENT
    if not consent:
        return Notification.Delivery.NO_CONSENT
    return Notification.Delivery.PENDING if address else Notification.Delivery.NO_ADDRESS


class SmsBackend(Protocol):
    def send(self, *, phone: str, text: str) -> None: ...


class LoggingSmsBackend:
    """The default SMS backend: writes the message to the log; set `SMS_BACKEND` for a real gateway."""

    def send(self, *, phone: str, text: str) -> None:
        logger.info("SMS to %s: %s", phone, text)


def sms_backend() -> SmsBackend:
    return import_string(settings.SMS_BACKEND)()


def notification_deliver(*, notification_id: int) -> Notification | None:
    """Send a queued message by each pending channel; a channel already sent is never sent again."""
    notification = None
    # One transaction per channel: when SMS fails after the e-mail went out, the retry sends SMS only.
    for channel, send in (("email_status", _send_email), ("sms_status", _send_sms)):
        with transaction.atomic():
            notification = (
                Notification.objects.select_for_update(skip_locked=True)
                .select_related("member")
                .filter(pk=notification_id)
                .first()
            )
            if notification is None:
                return None  # gone, or another worker is delivering it right now
            if getattr(notification, channel) != Notification.Delivery.PENDING:
                continue
            notification.attempts += 1
            notification.save(update_fields=["attempts"])
        send(notification)
        sent = {channel: Notification.Delivery.SENT, "delivered_at": timezone.now()}
        Notification.objects.filter(pk=notification_id).update(**sent)
    return notification


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
