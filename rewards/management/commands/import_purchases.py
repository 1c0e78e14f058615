import sys
import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from members.models import Store
from rewards import imports


class Command(BaseCommand):
    help = (
        "Import purchases from a CSV or XLSX file: member_ref, occurred_at, amount[, receipt_number, store, quantity, category]."
    )

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("file")
        parser.add_argument("--store", help="Store code for rows without a store column.")
        parser.add_argument("--create-members", action="store_true", help="Enrol unknown phone numbers and e-mails.")
        parser.add_argument("--dry-run", action="store_true", help="Check the file and report; write nothing.")
        parser.add_argument("--skip-invalid", action="store_true", help="Import the good rows even if some are bad.")

    def handle(self, *args: object, **options: object) -> None:
        started = time.monotonic()
        store = None
        if options["store"]:
            store = Store.objects.filter(code=options["store"]).first()
            if store is None:
                raise CommandError(f"No store has the code {options['store']!r}.")
        # Set-based work has phases, not rows: the bar shows the phase running and, as purchases are
        # written a chunk at a time, how many rows are written.
        bar = tqdm(
            total=len(imports.PHASES),
            disable=not sys.stderr.isatty(),
            file=sys.stderr,
            bar_format="{desc} {bar} {elapsed}{postfix}",
        )

        begun: list[tuple[str, float]] = []

        def progress(phase: str) -> None:
            begun.append((phase, time.monotonic()))
            bar.set_description(phase)
            bar.update(1)

        def written(done: int, total: int) -> None:
            bar.set_postfix_str(f"{done:,} of {total:,} rows written")

        try:
            report = imports.import_purchases(
                str(options["file"]),
                store=store,
                create_members=bool(options["create_members"]),
                dry_run=bool(options["dry_run"]),
                skip_invalid=bool(options["skip_invalid"]),
                progress=progress,
                written=written,
            )
        except (OSError, imports.ImportFileError) as error:
            raise CommandError(str(error)) from None
        finally:
            bar.close()
        for error in report.errors:
            self.stderr.write(str(error))
        finished = time.monotonic()
        seconds = finished - started
        if int(options["verbosity"]) >= 2:  # where a slow import spends its time
            ends = [at for _phase, at in begun[1:]] + [finished]
            for (phase, at), end in zip(begun, ends, strict=True):
                self.stdout.write(f"{phase}: {end - at:.1f} s")
        self.stdout.write(
            f"{report.rows} rows in {seconds:.1f} s ({report.rows / max(seconds, 1e-9):,.0f} rows/s): "
            f"{report.purchases_created} purchases recorded, {report.purchases_replayed} already there, "
            f"{report.conflicts} conflicting, {report.invalid} invalid, {report.members_created} members created, "
            f"{report.points_awarded} points awarded."
        )
        if options["dry_run"]:
            self.stdout.write("Dry run: nothing was written.")
        if report.invalid > len(report.errors):
            self.stderr.write(f"… and {report.invalid - len(report.errors)} more invalid rows.")
        if report.invalid and not options["skip_invalid"]:
            raise CommandError(f"{report.invalid} invalid row(s): nothing was written. Fix them or use --skip-invalid.")
        if report.conflicts:
            raise CommandError(f"{report.conflicts} receipt(s) were already recorded with different details.")
