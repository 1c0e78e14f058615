"""The programme's settings, remembered by each process between requests.

Every sale needs the programme, the rules version in force, the tiers and the stamp programmes:
small tables that change a few times a year. Reading them from the database was four of the
nineteen statements of an API purchase. Each process keeps one snapshot of them for
`SECONDS`. A change saved through the ORM (the admin) drops the snapshot at once in the process
that saved it, and again when its transaction commits (a change rolled back after being read
lasts at most `SECONDS`). Other processes see a change within `SECONDS`: rules versions are never
edited once in force, so what that delay can affect is a new version made to start at once, or a
tier or stamp card switched on or off.

The snapshot's model instances are shared by every thread of a process: read them, never change them.
"""

import bisect
import datetime as dt
import threading
import time
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Model
from django.db.models.signals import post_delete, post_save

from rewards.models import Programme, ProgrammeRules, StampProgramme, Tier

SECONDS = 5.0


@dataclass(frozen=True)
class Snapshot:
    programme: Programme | None
    rules: list[ProgrammeRules]  # by effective_from
    tiers: dict[int, Tier]
    stamp_programmes: list[StampProgramme]  # the active ones, by id
    taken_at: float = field(default_factory=time.monotonic)
    starts: list[dt.datetime] = field(init=False)
    ladder: list[Tier] = field(init=False)  # the tiers members reach by buying, lowest first

    def __post_init__(self) -> None:
        object.__setattr__(self, "starts", [rules.effective_from for rules in self.rules])
        ladder = sorted((t for t in self.tiers.values() if t.active and not t.invitation_only), key=lambda t: t.rank)
        object.__setattr__(self, "ladder", ladder)

    def rules_at(self, moment: dt.datetime) -> ProgrammeRules | None:
        """Return the version in force at a moment, as `RulesQuerySet.in_force` reads it from the database."""
        if not self.rules:
            return None
        return self.rules[max(bisect.bisect_right(self.starts, moment) - 1, 0)]


_lock = threading.Lock()
_snapshot: Snapshot | None = None


def _read() -> Snapshot:
    programme = Programme.objects.first()
    rules = list(ProgrammeRules.objects.order_by("effective_from"))
    for version in rules:  # one programme: share its row rather than fetch it per version
        if programme is not None and version.programme_id == programme.pk:
            version.programme = programme
    return Snapshot(
        programme=programme,
        rules=rules,
        tiers={tier.pk: tier for tier in Tier.objects.all()},
        stamp_programmes=list(StampProgramme.objects.filter(active=True).order_by("pk")),
    )


def current() -> Snapshot:
    """Return this process's snapshot of the programme's settings, read again when it is older than `SECONDS`."""
    global _snapshot
    snapshot = _snapshot
    if snapshot is None or time.monotonic() - snapshot.taken_at > SECONDS:
        with _lock:  # one reader refreshes it; the other threads wait for its result
            snapshot = _snapshot
            if snapshot is None or time.monotonic() - snapshot.taken_at > SECONDS:
                snapshot = _snapshot = _read()
    return snapshot


def tier(tier_id: int) -> Tier:
    """Return a tier by id; one made since the snapshot was taken is read afresh."""
    if tier_id not in current().tiers:
        forget()
    return current().tiers[tier_id]


def forget(**_kwargs: object) -> None:
    """Drop the snapshot, so the next reader sees the database as it is."""
    global _snapshot
    _snapshot = None


def _changed(sender: type[Model], **_kwargs: object) -> None:
    forget()
    transaction.on_commit(forget)


def connect_signals() -> None:
    """Forget the snapshot whenever one of the tables it holds changes through the ORM (called at startup)."""
    for model in (Programme, ProgrammeRules, Tier, StampProgramme):
        post_save.connect(_changed, sender=model, dispatch_uid=f"rewards.config.{model.__name__}.save")
        post_delete.connect(_changed, sender=model, dispatch_uid=f"rewards.config.{model.__name__}.delete")
