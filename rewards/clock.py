"""The programme clock: every scheduled job runs through `job_run`, which leaves a `JobRun` row.

Jobs themselves are set-based services that are idempotent (a second run the same day finds
nothing left to do), so a worker killed mid-run and the task delivered again does no double work;
the interrupted run stays `running` in the admin, next to the run that finished the work.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

from django.utils import timezone

from rewards.models import JobRun


def job_run(job: str, work: Callable[[], Any]) -> dict[str, int]:
    """Run one clock job, recording when, for how long and what it did (counts), or why it failed."""
    run = JobRun.objects.create(job=job)
    try:
        result = work()
    except Exception as error:
        JobRun.objects.filter(pk=run.pk).update(status=JobRun.Status.FAILED, finished_at=timezone.now(), error=repr(error)[:2000])
        raise
    raw = dataclasses.asdict(result) if dataclasses.is_dataclass(result) else dict(result or {})
    counts = {name: int(value) for name, value in raw.items()}  # SQL sums arrive as Decimal
    JobRun.objects.filter(pk=run.pk).update(status=JobRun.Status.DONE, finished_at=timezone.now(), counts=counts)
    return counts
