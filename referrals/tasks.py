from celery import shared_task

from referrals import services
from rewards.clock import job_run


@shared_task(acks_late=True, reject_on_worker_lost=True)
def expire_referrals() -> dict[str, int]:
    return job_run("expire_referrals", services.referrals_expire_due)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def reward_referrals() -> dict[str, int]:
    def work() -> dict[str, int]:
        # Inviters' shares whose task was lost first, so a hold ending now finds them settled.
        settled = services.referrals_settle_due()
        rewarded = services.referrals_reward_due()
        return {"settled": settled.referrals, "rewarded": rewarded.referrals}

    return job_run("reward_referrals", work)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def settle_referrer(referral_id: int) -> None:
    services.referral_referrer_settle(referral_id=referral_id)
