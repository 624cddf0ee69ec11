from django.contrib.auth import get_user_model
from django.core.management.base import (
    CommandError,
    CommandParser,
)

from core.cli import ExamplesCommand
from core.permissions import ROLES, role_groups_ensure, user_role_assign


class Command(ExamplesCommand):
    help = f"""Give a user a role of the API ({", ".join(ROLES)}), or take it away.

A role is a Django group with model permissions (core/permissions.py): the admin does the same
under Users > the user > Groups. Prints the user's roles afterwards.

examples:
  python manage.py assign_role alice clinician
  python manage.py assign_role bob viewer
  python manage.py assign_role bob viewer --remove
"""

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("role", choices=sorted(ROLES))
        parser.add_argument(
            "--remove", action="store_true", help="Take the role away instead of giving it."
        )

    def handle(self, *args: object, **options: object) -> None:
        users = get_user_model().objects
        try:
            user = users.get_by_natural_key(options["username"])
        except users.model.DoesNotExist:
            raise CommandError(f"No user {options['username']!r}.") from None
        if options["remove"]:
            user.groups.remove(role_groups_ensure()[options["role"]])
        else:
            user_role_assign(user=user, role=options["role"])
        roles = sorted(user.groups.filter(name__in=list(ROLES)).values_list("name", flat=True))
        self.stdout.write(f"{user.get_username()}: {', '.join(roles) or 'no role'}")
