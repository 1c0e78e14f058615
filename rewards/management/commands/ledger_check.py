from django.core.management.base import BaseCommand, CommandError

from rewards.selectors import ledger_drift


class Command(BaseCommand):
    help = "Reconcile every points account against its ledger entries and lots; exit 1 on any drift."

    def handle(self, *args: object, **options: object) -> None:
        drifts = ledger_drift()
        for drift in drifts:
            self.stderr.write(f"member {drift.member_id}: {drift.problem}")
        if drifts:
            raise CommandError(f"{len(drifts)} problem(s) found")
        self.stdout.write(self.style.SUCCESS("Ledger is consistent."))
