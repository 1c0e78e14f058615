"""The programme clock. Tasks take no arguments but ids, call one service, and are idempotent."""

from celery import shared_task

from rewards import services


@shared_task(acks_late=True)
def release_pending_points() -> dict[str, int]:
    result = services.points_release_due()
    return {"lots": result.lots, "points": result.points, "accounts": result.accounts}


@shared_task(acks_late=True)
def expire_points() -> dict[str, int]:
    # Release first so a lot due for both is released, then expired, in one run.
    services.points_release_due()
    result = services.points_expire_due()
    return {"lots": result.lots, "points": result.points, "accounts": result.accounts}
