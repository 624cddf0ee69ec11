"""The background job of an export, run by `manage.py db_worker` (django-tasks)."""

import uuid

from django_tasks import task

from exports.services import export_run


@task()
def export_task(export_id: str) -> None:
    """Run the export `export_id` (its arguments are stored as JSON: the id as text)."""
    export_run(export_id=uuid.UUID(export_id))
