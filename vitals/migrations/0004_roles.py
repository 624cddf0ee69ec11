"""The roles, as Django groups with model permissions (see core/permissions.py).

A copy of core.permissions.ROLES as it was when this migration was written (a migration must not
change with the code; vitals/tests/test_access_control.py checks the two agree). Permissions
are normally created by the post_migrate signal, after every migration has run: on a new
database they do not exist yet, so they are created here first, as post_migrate would.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ROLES = {
    "viewer": [
        "patients.view_patient",
        "vitals.view_patientmetric",
        "vitals.view_alarm",
        "vitals.view_alarmlimits",
    ],
    "clinician": [
        "patients.view_patient",
        "vitals.view_patientmetric",
        "vitals.view_alarm",
        "vitals.view_alarmlimits",
        "vitals.acknowledge_alarm",
        "vitals.change_alarmlimits",
    ],
}


def roles_create(apps, schema_editor):
    alias = schema_editor.connection.alias
    for label in ("patients", "vitals"):
        config = apps.get_app_config(label)
        # create_permissions skips an app without a models module, as the migration state's
        # app configs are.
        config.models_module = True
        try:
            create_permissions(config, apps=apps, verbosity=0, using=alias)
        finally:
            config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, names in ROLES.items():
        group, _ = Group.objects.using(alias).get_or_create(name=role)
        for name in names:
            app_label, codename = name.split(".")
            group.permissions.add(
                Permission.objects.using(alias).get(
                    content_type__app_label=app_label, codename=codename
                )
            )


def roles_delete(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Group.objects.using(schema_editor.connection.alias).filter(name__in=list(ROLES)).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("patients", "0003_patient_hypercapnic_respiratory_failure"),
        ("vitals", "0003_audit_event_acknowledge_permission"),
    ]

    operations = [migrations.RunPython(roles_create, roles_delete)]
