from django.contrib.auth.models import Group, Permission
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import Q

from loyalty_site.roles import ROLES


def permissions_for(names: list[str]) -> list[Permission]:
    query = Q(pk__in=[])
    for name in names:
        app_label, codename = name.split(".", 1)
        query |= (
            Q(content_type__app_label=app_label) if codename == "*" else Q(content_type__app_label=app_label, codename=codename)
        )
    found = list(Permission.objects.filter(query).select_related("content_type"))
    explicit = {name for name in names if not name.endswith(".*")}
    missing = explicit - {f"{p.content_type.app_label}.{p.codename}" for p in found}
    if missing:
        raise CommandError(f"unknown permissions: {', '.join(sorted(missing))} (run migrate first?)")
    return found


class Command(BaseCommand):
    help = "Create or update the staff roles (groups) so they hold exactly their listed permissions."

    @transaction.atomic
    def handle(self, *args: object, **options: object) -> None:
        for name, permission_names in ROLES.items():
            group, _created = Group.objects.get_or_create(name=name)
            permissions = permissions_for(permission_names)
            group.permissions.set(permissions)
            if options["verbosity"]:
                self.stdout.write(f"{name}: {len(permissions)} permissions")
