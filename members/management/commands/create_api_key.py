from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from members import services
from members.models import Store


class Command(BaseCommand):
    help = "Create an API key for a store's till or web shop and print it once."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("store_code")
        parser.add_argument("--name", default="Till")

    def handle(self, *args: object, **options: object) -> None:
        store = Store.objects.filter(code=options["store_code"]).first()
        if store is None:
            raise CommandError(f"No store has the code {options['store_code']!r}.")
        try:
            key, raw_key = services.api_key_create(store=store, name=str(options["name"]))
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from None
        self.stderr.write(f"API key {key} for {store}. Keep it safe: it is not shown again.")
        self.stdout.write(raw_key)
