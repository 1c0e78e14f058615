import datetime as dt
from decimal import Decimal

from django.db.models import Model
from django.utils import timezone

from rewards.models import Programme, ProgrammeRules


def programme_create(*, currency: str = "CNY", tz: str = "Asia/Shanghai", **rules: object) -> ProgrammeRules:
    """Set up the one programme with a first version of its rules in force since long ago."""
    programme = Programme.objects.create(name="Morning Light", currency=currency, timezone=tz)
    defaults: dict[str, object] = {
        "points_per_unit": Decimal(1),
        "pending_days": 0,
        "expiry_policy": ProgrammeRules.Expiry.MONTHS,
        "expiry_months": 12,
    }
    defaults.update(rules)
    return ProgrammeRules.objects.create(programme=programme, effective_from=timezone.now() - dt.timedelta(days=3650), **defaults)


def settings_change(row: Model, **fields: object) -> None:
    """Change programme settings (rules, a stamp card) through the ORM, as the admin does, so the
    snapshot of them each process keeps (rewards.config) is read afresh, as it would be in production
    within seconds."""
    for name, value in fields.items():
        setattr(row, name, value)
    row.save(update_fields=list(fields))
