"""Background work for members: delivering messages. Tasks take ids and call one service."""

from celery import shared_task

from members import notifications


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=8)
def deliver_notification(self, notification_id: int) -> bool:  # type: ignore[no-untyped-def]
    # A channel is marked sent in the transaction that sent it, so a re-delivered task sends only
    # what is still pending (a worker killed between the gateway's answer and the commit sends again).
    try:
        return notifications.notification_deliver(notification_id=notification_id) is not None
    except OSError as error:  # the mail server or SMS gateway is unreachable: try again later
        if self.request.retries >= self.max_retries:
            notifications.notification_failed(notification_id=notification_id)
            raise
        raise self.retry(exc=error, countdown=min(30 * 2**self.request.retries, 3600)) from error
