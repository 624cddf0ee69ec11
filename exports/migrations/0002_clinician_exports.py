"""Clinicians may export (see core/permissions.py): the clinician group gets the exports
permissions.

A copy of what this adds to core.permissions.ROLES, as it was when this migration was written
(vitals/tests/test_access_control.py checks that vitals/0004_roles and this migration together
give the roles ROLES describes). As in vitals/0004_roles, the permissions are created here
first: on a new database, post_migrate has not created them yet.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ADDED = {"clinician": ["exports.add_export", "exports.view_export"]}


def permissions_grant(apps, schema_editor):
    alias = schema_editor.connection.alias
    config = apps.get_app_config("exports")
    # create_permissions skips an app without a models module, as the migration state's app
    # configs are.
    config.models_module = True
    try:
        create_permissions(config, apps=apps, verbosity=0, using=alias)
    finally:
        config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, names in ADDED.items():
        group, _ = Group.objects.using(alias).get_or_create(name=role)
        for name in names:
            app_label, codename = name.split(".")
            group.permissions.add(
                Permission.objects.using(alias).get(
                    content_type__app_label=app_label, codename=codename
                )
            )


def permissions_revoke(apps, schema_editor):
    alias = schema_editor.connection.alias
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, names in ADDED.items():
        for group in Group.objects.using(alias).filter(name=role):
            group.permissions.remove(
                *Permission.objects.using(alias).filter(
                    content_type__app_label="exports",
                    codename__in=[name.split(".")[1] for name in names],
                )
            )


class Migration(migrations.Migration):
    dependencies = [
        ("exports", "0001_initial"),
        ("vitals", "0004_roles"),
    ]

    operations = [migrations.RunPython(permissions_grant, permissions_revoke)]
