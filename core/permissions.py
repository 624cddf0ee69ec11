"""Access control of the API, in one place: the roles and what each route needs.

Roles are Django groups holding Django model permissions, so that an administrator manages
them in the admin (Users > a user > Groups, or Groups > a role > permissions):

- `viewer`: reads patients, readings, alarms and alarm limits;
- `clinician`: a viewer who also acknowledges alarms (`vitals.acknowledge_alarm`, which also
  lets them confirm or change a patient's name after a monitor sent another one), changes
  alarm limits, switches limit alarms off and on and ends a patient's monitoring
  (`vitals.change_alarmlimits`), and exports a patient's readings to a file
  (`exports.add_export`, `exports.view_export`: a file of identifiable data leaving the
  monitor is more than reading a screen, so viewers may not);
- superusers hold every permission; the audit trail is for staff (`is_staff`) holding
  `vitals.view_auditevent` (superusers do), the access log (who read which patient) for staff
  holding `access.view_patientaccess`.

The groups are created by the migrations vitals/0004_roles and exports/0002_clinician_exports
(which keep a copy of ROLES, as migrations do) and by `role_groups_ensure()`. `ApiPermission`
is every API view's permission class: a request needs the permissions ROUTES lists for its
route and method. A route missing from ROUTES is refused to everyone (and logged): access is
never granted by omission.
"""

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rest_framework.permissions import SAFE_METHODS, BasePermission

if TYPE_CHECKING:  # rest_framework.views imports this module (DEFAULT_PERMISSION_CLASSES)
    from rest_framework.request import Request
    from rest_framework.views import APIView

logger = logging.getLogger(__name__)

VIEWER = "viewer"
CLINICIAN = "clinician"

VIEW_PATIENT = "patients.view_patient"
VIEW_METRIC = "vitals.view_patientmetric"
VIEW_ALARM = "vitals.view_alarm"
VIEW_LIMITS = "vitals.view_alarmlimits"
ACKNOWLEDGE_ALARM = "vitals.acknowledge_alarm"
CHANGE_LIMITS = "vitals.change_alarmlimits"
VIEW_AUDIT = "vitals.view_auditevent"
VIEW_ACCESS_LOG = "access.view_patientaccess"
ADD_EXPORT = "exports.add_export"
VIEW_EXPORT = "exports.view_export"

ROLES: dict[str, tuple[str, ...]] = {
    VIEWER: (VIEW_PATIENT, VIEW_METRIC, VIEW_ALARM, VIEW_LIMITS),
    CLINICIAN: (
        VIEW_PATIENT,
        VIEW_METRIC,
        VIEW_ALARM,
        VIEW_LIMITS,
        ACKNOWLEDGE_ALARM,
        CHANGE_LIMITS,
        ADD_EXPORT,
        VIEW_EXPORT,
    ),
}


@dataclass(frozen=True)
class Rule:
    """What one route needs: `read` for GET, HEAD and OPTIONS; `write[method]` for the others
    (a method not listed is refused); `staff` also requires `is_staff`."""

    read: tuple[str, ...]
    write: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    staff: bool = False


# A read needs the view permission of everything its body shows: a patient carries its latest
# reading and open alarms, an alarm its patient's uuid and name.
_PATIENT = (VIEW_PATIENT, VIEW_METRIC, VIEW_ALARM)
_ALARM = (VIEW_ALARM, VIEW_PATIENT)
_LIMITS = (VIEW_PATIENT, VIEW_LIMITS)
# An export holds a patient's readings; a user sees their own (staff: all, exports/selectors).
_EXPORT = (VIEW_PATIENT, VIEW_METRIC, VIEW_EXPORT)

# By route name (`request.resolver_match.view_name`), format suffixes included.
ROUTES: dict[str, Rule] = {
    "api:api-root": Rule(read=(VIEW_PATIENT,)),
    "api:schema": Rule(read=(VIEW_PATIENT,)),
    "api:docs": Rule(read=(VIEW_PATIENT,)),
    "api:patient-list": Rule(read=_PATIENT),
    "api:patient-detail": Rule(read=_PATIENT),
    "api:patient-metrics": Rule(read=_PATIENT),
    "api:patient-trend": Rule(read=(VIEW_PATIENT, VIEW_METRIC)),
    "api:brief-patient-list": Rule(read=_PATIENT),
    "api:brief-patient-metrics": Rule(read=_PATIENT),
    # Ending monitoring switches the patient's no_data alarm off: the right to change what
    # alarms sound.
    "api:patient-monitoring-end": Rule(
        read=_PATIENT, write={"POST": (*_PATIENT, VIEW_LIMITS, CHANGE_LIMITS)}
    ),
    "api:patient-alarm-limits": Rule(
        read=_LIMITS,
        write={"PUT": (*_LIMITS, CHANGE_LIMITS), "PATCH": (*_LIMITS, CHANGE_LIMITS)},
    ),
    # Confirming a patient's name or renaming them after a monitor sent another name: the
    # clinician's, as acknowledging an alarm is (the same permission: a permission of its own
    # would need a data migration granting it to the clinician group).
    "api:patient-confirm-name": Rule(read=_PATIENT, write={"POST": (*_PATIENT, ACKNOWLEDGE_ALARM)}),
    "api:patient-rename": Rule(read=_PATIENT, write={"POST": (*_PATIENT, ACKNOWLEDGE_ALARM)}),
    # Switching a limit alarm off and on: changing what sounds, as changing its limits does.
    "api:patient-alarms-off": Rule(read=_LIMITS, write={"POST": (*_LIMITS, CHANGE_LIMITS)}),
    "api:patient-alarm-off": Rule(read=_LIMITS, write={"DELETE": (*_LIMITS, CHANGE_LIMITS)}),
    # Units and beds: a unit's board shows its patients as the patient list does. Admitting,
    # moving and discharging are the clinician's, as acknowledging an alarm is (the same
    # permission: a permission of its own would need a data migration granting it).
    "api:unit-list": Rule(read=(VIEW_PATIENT,)),
    "api:unit-detail": Rule(read=_PATIENT),
    "api:patient-admit": Rule(read=_PATIENT, write={"POST": (*_PATIENT, ACKNOWLEDGE_ALARM)}),
    "api:patient-transfer": Rule(read=_PATIENT, write={"POST": (*_PATIENT, ACKNOWLEDGE_ALARM)}),
    "api:patient-discharge": Rule(read=_PATIENT, write={"POST": (*_PATIENT, ACKNOWLEDGE_ALARM)}),
    "api:alarm-list": Rule(read=_ALARM),
    "api:alarm-detail": Rule(read=_ALARM),
    "api:alarm-acknowledge": Rule(read=_ALARM, write={"POST": (*_ALARM, ACKNOWLEDGE_ALARM)}),
    # Whether alarms are processed at all (a consumer's heartbeat): no patient named.
    "api:alarm-processing": Rule(read=(VIEW_ALARM,)),
    "api:audit-list": Rule(read=(VIEW_AUDIT,), staff=True),
    # Who read which patient's data: staff holding the access log's view permission.
    "api:access-log-list": Rule(read=(VIEW_ACCESS_LOG,), staff=True),
    "api:patient-exports": Rule(read=_EXPORT, write={"POST": (*_EXPORT, ADD_EXPORT)}),
    "api:export-list": Rule(read=_EXPORT),
    "api:export-detail": Rule(read=_EXPORT),
    "api:export-result": Rule(read=_EXPORT),
    # A unit's alarm burden: counts and times by bed and kind, no patient named.
    "api:unit-alarm-report": Rule(read=(VIEW_ALARM,)),
    # The readings as FHIR Observations (/fhir/Observation): what the metrics endpoint shows.
    "fhir:observation-search": Rule(read=(VIEW_PATIENT, VIEW_METRIC)),
}


class ApiPermission(BasePermission):
    """DRF permission class of every API view (DEFAULT_PERMISSION_CLASSES, and the schema's
    SERVE_PERMISSIONS). Anonymous: refused (401, the token authenticator's challenge). A method
    the view does not take: let through, so that DRF answers 405. Otherwise ROUTES decides; a
    refusal is a 403 that names the permissions the route needs."""

    message = "You do not have permission to perform this action."

    def has_permission(self, request: "Request", view: "APIView") -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        if request.method not in view.allowed_methods:
            return True
        match = getattr(request, "resolver_match", None)
        route = match.view_name if match else None
        rule = ROUTES.get(route)
        if rule is None:
            logger.error("API route without an access rule: refused", extra={"route": route})
            return False
        needed = rule.read if request.method in SAFE_METHODS else rule.write.get(request.method)
        if needed is None:
            return False
        if rule.staff and not user.is_staff:
            self.message = "Only staff may do this."
            return False
        if not user.has_perms(needed):
            self.message = (
                "Your role does not allow this; it takes the permissions " + ", ".join(needed) + "."
            )
            return False
        return True


def route_permits(*, user, route: str, method: str = "GET") -> bool:
    """Whether ROUTES lets `user` call the API route `route` with `method`: what a page asks
    before offering an action (the central station's acknowledge button), the API deciding
    again when it is used."""
    rule = ROUTES.get(route)
    if rule is None or not (user and user.is_authenticated):
        return False
    needed = rule.read if method in SAFE_METHODS else rule.write.get(method)
    if needed is None or (rule.staff and not user.is_staff):
        return False
    return user.has_perms(needed)


def _permissions(names: Iterable[str]):
    from django.contrib.auth.models import Permission
    from django.core.exceptions import ImproperlyConfigured
    from django.db.models import Q

    wanted = set(names)
    query = Q()
    for name in wanted:
        app_label, codename = name.split(".", 1)
        query |= Q(content_type__app_label=app_label, codename=codename)
    found = list(Permission.objects.filter(query).select_related("content_type"))
    missing = wanted - {f"{p.content_type.app_label}.{p.codename}" for p in found}
    if missing:
        raise ImproperlyConfigured(f"Permissions missing (run `manage.py migrate`): {missing}")
    return found


def role_groups_ensure() -> dict:
    """Create the role groups that are missing and add the permissions they lack; never remove
    one (an administrator may have given a role more). Returns the groups by role."""
    from django.contrib.auth.models import Group

    groups = {}
    for role, names in ROLES.items():
        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.add(*_permissions(names))
        groups[role] = group
    return groups


def user_role_assign(*, user, role: str) -> None:
    """Give `user` the role `role` (the group, created if missing)."""
    if role not in ROLES:
        raise ValueError(f"No role {role!r}; the roles are {', '.join(ROLES)}.")
    user.groups.add(role_groups_ensure()[role])
