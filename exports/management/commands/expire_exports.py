from core.cli import ExamplesCommand
from exports.services import exports_expire


class Command(ExamplesCommand):
    help = """Delete the exports older than EXPORT_RESULT_TTL (default 7d), and their files.

The worker (`manage.py db_worker`) already does this after every export it runs, so the
exports directory only grows while exports are made. Run this from cron where exports are rare
but expired files must go promptly. Safe to run at any time, alongside the worker.

examples:
  python manage.py expire_exports
  EXPORT_RESULT_TTL=1d python manage.py expire_exports    # what is older than a day
"""

    def handle(self, *args: object, **options: object) -> None:
        deleted = exports_expire()
        self.stdout.write(self.style.SUCCESS(f"Deleted {deleted} expired export(s)."))
