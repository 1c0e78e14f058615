"""Celery tasks. They take no arguments but ids and are idempotent: the programme clock's jobs, each
through `job_run`, and the admin's history imports."""

from celery import shared_task

from members import notifications
from rewards import catalog, imports, lifecycle, services, tiers
from rewards.clock import job_run


@shared_task(acks_late=True, reject_on_worker_lost=True)
def release_pending_points() -> dict[str, int]:
    return job_run("release_pending_points", services.points_release_due)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def expire_points() -> dict[str, int]:
    def work() -> services.JobResult:
        # Release first so a lot due for both is released, then expired, in one run.
        services.points_release_due()
        return services.points_expire_due()

    return job_run("expire_points", work)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def remind_expiring_points() -> dict[str, int]:
    return job_run("remind_expiring_points", lifecycle.points_expiry_remind_due)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def grant_birthday_bonuses() -> dict[str, int]:
    return job_run("grant_birthday_bonuses", lifecycle.birthday_bonuses_grant)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def expire_vouchers() -> dict[str, int]:
    return job_run("expire_vouchers", catalog.vouchers_expire_due)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def remind_vouchers() -> dict[str, int]:
    return job_run("remind_vouchers", catalog.vouchers_remind_due)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def evaluate_tiers() -> dict[str, int]:
    return job_run("evaluate_tiers", tiers.tiers_evaluate)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def requeue_notifications() -> dict[str, int]:
    return job_run("requeue_notifications", notifications.notifications_requeue_stale)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def import_history(import_id: int) -> None:
    imports.history_import_run(import_id)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def tidy_imports() -> dict[str, int]:
    return job_run("tidy_imports", imports.imports_tidy)
