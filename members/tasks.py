"""Background work for members: delivering messages. Tasks take ids and call one service.

Also `send_after_commit`, the one way any app queues a task once its transaction commits.
"""

import logging
from collections.abc import Callable

from celery import Task, shared_task
from django.db import transaction
from kombu.exceptions import OperationalError

from members import notifications

logger = logging.getLogger(__name__)


def send_after_commit(task: Task, *args: object, failed: Callable[[], None] | None = None) -> None:
    """Queue `task(*args)` once the current transaction commits; a broker out of reach is logged, not raised.

    By then the caller's write is committed: an error would only turn a recorded sale into an error
    page. What was not queued is caught up by the clock, or by `failed`.
    """

    def send() -> None:
        try:
            task.delay(*args)
        except (OperationalError, OSError):  # the broker, not the task: a task run eagerly in tests still raises
            logger.exception("could not queue %s%r", task.name, args)
            if failed is not None:
                failed()

    # Not Django's robust=True: in Django 5.2 it logs the callback's __qualname__, which a
    # functools.partial lacks, so the failure it should swallow became an AttributeError.
    transaction.on_commit(send)


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
