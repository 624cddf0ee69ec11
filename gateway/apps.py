from django.apps import AppConfig


class GatewayConfig(AppConfig):
    """The device gateway: HL7 v2 over MLLP from bedside monitors' gateways (IHE PCD-01
    observations) and the hospital's ADT, to the vitals topic and to units, beds and
    admissions; alarm changes out as IHE PCD-04 (docs/connecting-monitors.md)."""

    name = "gateway"
    verbose_name = "Device gateway (HL7 v2)"
