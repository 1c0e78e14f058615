import time

from django.core.management.base import BaseCommand, CommandError

from rewards import imports


class Command(BaseCommand):
    help = (
        "Import members from a CSV or XLSX file: external_ref, phone, email, name, birthday, opening_points, "
        "opening_points_earned_on. Existing members (by external ref, phone or e-mail) are updated."
    )

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("file")
        parser.add_argument("--dry-run", action="store_true", help="Check the file and report; write nothing.")
        parser.add_argument("--skip-invalid", action="store_true", help="Import the good rows even if some are bad.")

    def handle(self, *args: object, **options: object) -> None:
        started = time.monotonic()
        try:
            header, rows = imports.read_rows(str(options["file"]))
            report = imports.import_members(
                rows, header, dry_run=bool(options["dry_run"]), skip_invalid=bool(options["skip_invalid"])
            )
        except (OSError, imports.ImportFileError) as error:
            raise CommandError(str(error)) from None
        for error in report.errors:
            self.stderr.write(str(error))
        seconds = time.monotonic() - started
        self.stdout.write(
            f"{report.rows} rows in {seconds:.1f} s ({report.rows / max(seconds, 1e-9):,.0f} rows/s): "
            f"{report.members_created} members created, {report.members_updated} updated, {len(report.errors)} invalid, "
            f"{report.points_awarded} opening points granted."
        )
        if options["dry_run"]:
            self.stdout.write("Dry run: nothing was written.")
        if report.errors and not options["skip_invalid"]:
            raise CommandError(f"{len(report.errors)} invalid row(s): nothing was written. Fix them or use --skip-invalid.")
