"""The vital signs ICU Monitor knows: one registry, and everything else derives from it.

A sign's key is its name everywhere: the contract's field (blood pressure travels as one
"systolic/diastolic" field, `bp`, whose halves are the signs `systolic` and `diastolic`), the
`PatientMetric` column, the API's field, the CSV column, the trend's key, the ward's tile. Its
codes are those of the standards we speak:

- UCUM (https://ucum.org): `/min`, `%`, `mm[Hg]`, `Cel`.
- LOINC, as the FHIR R4 vital-signs profiles use them (heart rate 8867-4, respiratory rate
  9279-1, oxygen saturation 2708-6 and 59408-5 by pulse oximetry, body temperature 8310-5,
  systolic 8480-6, diastolic 8462-4, blood pressure panel 85354-9), mean blood pressure 8478-0
  and end-tidal CO2 19889-5 ("Carbon dioxide [Partial pressure] in Exhaled gas --at end
  expiration").
- IEEE 11073-10101 MDC codes (the device gateway's OBX-3): checked against HL7 Denmark's
  DK Core IEEE value set (IEEEBasicObservation, which quotes the nomenclature's definitions) for
  147842 MDC_ECG_HEART_RATE, 149530 MDC_PULS_OXIM_PULS_RATE, 149522 MDC_BLD_PULS_RATE_INV,
  149546 MDC_PULS_RATE_NON_INV, 151562 MDC_RESP_RATE, 151578 MDC_TTHOR_RESP_RATE, 151658
  MDC_PULS_OXIM_PLETH_RESP_RATE, 150456 MDC_PULS_OXIM_SAT_O2, 150021-150023
  MDC_PRESS_BLD_NONINV_SYS/DIA/MEAN, 150364 MDC_TEMP_BODY, 150368 MDC_TEMP_CORE; 151708
  MDC_AWAY_CO2_ET as OpenICE's rosetta nomenclature names it. The first code of a sign is the
  one preferred when a message carries several (heart rate from the ECG before the oximeter's
  pulse rate). Added for the device gateway (issue 19), each checked: the cuff pressures
  150301-150303 MDC_PRESS_CUFF_SYS/DIA/MEAN (OpenICE's ice nomenclature: term codes 19229,
  19230, 19231 in partition 2, SCADA, whose codes start at 131072); the temperature sites from
  the DK Core IEEE value set (150392 tympanic, 188420 rectal, 188424 oral, 188428 ear, 188452
  axillary, 188456 gastro-intestinal) and IEEE 11073-10408's thermometer terms (MDC_TEMP_TYMP
  19320, MDC_TEMP_RECT 57348, MDC_TEMP_ORAL 57352, MDC_TEMP_EAR 57356, MDC_TEMP_AXILLA 57380
  in partition 2: the same codes); 150344 MDC_TEMP (term 19272), the generic temperature
  that the Mindray, GE and Comen gateways' published PCD-01 examples send for a temperature
  channel. The units' MDC_DIM codes are in gateway/pcd01.py.

Pure data: no Django, no database. The settings read validity windows by sign through
`VALIDITY_SETTING`; the model defaults, the alarm rules, the contract and its JSON Schema, the
serializers, trends, CSV, FHIR, the admin and the ward's page config are built from `SIGNS`, and
tests hold whatever cannot be built from it (migrations) equal to it.
"""

from dataclasses import dataclass, field
from datetime import timedelta


@dataclass(frozen=True)
class Code:
    system: str  # "loinc" | "mdc"
    code: str
    display: str


@dataclass(frozen=True)
class LimitDefault:
    """A limit alarm on a sign: `<sign>_low` fires below the limit, `<sign>_high` above."""

    kind: str
    label: str
    default: float
    # The range a clinician may set the limit to (never so wide the alarm cannot sound).
    settable: tuple[float, float]
    # Back inside the limit by this margin before the alarm clears (no flapping at the limit).
    hysteresis: float
    # Beyond this value the alarm is high priority.
    critical: float

    @property
    def low(self) -> bool:
        return self.kind.endswith("_low")


@dataclass(frozen=True)
class Sign:
    key: str
    label: str
    short: str  # on a tile: "HR", "SpO2"
    unit: str  # as shown: "/min", "%", "mmHg", "°C"
    ucum: str
    loinc: tuple[Code, ...]
    mdc: tuple[Code, ...]
    # The contract's plausible range (inclusive): outside it a value is a device fault.
    plausible: tuple[float, float]
    decimals: int = 0  # 0: a whole number
    limits: tuple[LimitDefault, ...] = ()
    # The NEWS2 parameter this sign is (vitals/news2.py SUBSCORE_KEYS), if any.
    news2: str | None = None
    # How long the newest value stays valid for scoring and on a tile.
    valid_for: timedelta = timedelta(minutes=5)
    charted: bool = True
    exported: bool = True
    on_tile: bool = True
    # Not every patient has it (end-tidal CO2: ventilated patients only): no dash on a tile
    # and no "incomplete" when it was never measured.
    optional: bool = False
    # The contract field it travels in when it is not its own (`bp`: "systolic/diastolic").
    wire: str | None = field(default=None)
    # What the contract's JSON Schema says of its field (a sign in its own field only).
    description: str = ""
    # Its colour on the central station (values and chart lines), on the ward's dark background:
    # never red or yellow, which are the alarms' (IEC 60601-1-8).
    color: str = "#e9eef4"
    # Measured continuously by the bedside monitor (ECG, oximeter, impedance respiration): when
    # readings keep coming without it beyond its validity, its sensor is off, and that is a
    # technical alarm (sign_missing), not just a dash.
    continuous: bool = False

    @property
    def is_integer(self) -> bool:
        return self.decimals == 0

    @property
    def wire_field(self) -> str:
        return self.wire or self.key


def _loinc(code: str, display: str) -> Code:
    return Code("loinc", code, display)


def _mdc(code: str, display: str) -> Code:
    return Code("mdc", code, display)


SIGNS: tuple[Sign, ...] = (
    Sign(
        key="pulse",
        label="Pulse",
        short="HR",
        unit="/min",
        ucum="/min",
        loinc=(_loinc("8867-4", "Heart rate"),),
        mdc=(
            _mdc("147842", "MDC_ECG_HEART_RATE"),
            _mdc("149530", "MDC_PULS_OXIM_PULS_RATE"),
            _mdc("149522", "MDC_BLD_PULS_RATE_INV"),
            _mdc("149546", "MDC_PULS_RATE_NON_INV"),
        ),
        plausible=(0, 300),
        limits=(
            LimitDefault("pulse_low", "Pulse low", 50, (30, 100), 3, 40),
            LimitDefault("pulse_high", "Pulse high", 120, (60, 200), 5, 150),
        ),
        news2="pulse",
        description="Heart rate, beats/min.",
        color="#3ddc84",  # green
        continuous=True,
    ),
    Sign(
        key="resp_rate",
        label="Resp. rate",
        short="RR",
        unit="/min",
        ucum="/min",
        loinc=(_loinc("9279-1", "Respiratory rate"),),
        mdc=(
            _mdc("151562", "MDC_RESP_RATE"),
            _mdc("151578", "MDC_TTHOR_RESP_RATE"),
            _mdc("151658", "MDC_PULS_OXIM_PLETH_RESP_RATE"),
        ),
        plausible=(0, 100),
        limits=(
            LimitDefault("resp_rate_low", "Resp. rate low", 8, (4, 15), 2, 6),
            LimitDefault("resp_rate_high", "Resp. rate high", 30, (15, 50), 3, 40),
        ),
        news2="resp_rate",
        description="Respiratory rate, breaths/min.",
        color="#c0eb75",  # lime
        continuous=True,
    ),
    Sign(
        key="systolic",
        label="Systolic BP",
        short="SYS",
        unit="mmHg",
        ucum="mm[Hg]",
        loinc=(_loinc("8480-6", "Systolic blood pressure"),),
        mdc=(_mdc("150021", "MDC_PRESS_BLD_NONINV_SYS"), _mdc("150301", "MDC_PRESS_CUFF_SYS")),
        plausible=(30, 300),
        limits=(
            LimitDefault("systolic_low", "Systolic BP low", 90, (60, 120), 5, 80),
            LimitDefault("systolic_high", "Systolic BP high", 160, (100, 240), 5, 200),
        ),
        news2="systolic",
        valid_for=timedelta(minutes=30),
        wire="bp",
        color="#da77f2",  # violet
    ),
    Sign(
        key="diastolic",
        label="Diastolic BP",
        short="DIA",
        unit="mmHg",
        ucum="mm[Hg]",
        loinc=(_loinc("8462-4", "Diastolic blood pressure"),),
        mdc=(_mdc("150022", "MDC_PRESS_BLD_NONINV_DIA"), _mdc("150302", "MDC_PRESS_CUFF_DIA")),
        plausible=(10, 250),
        limits=(
            LimitDefault("diastolic_low", "Diastolic BP low", 50, (30, 80), 3, 40),
            LimitDefault("diastolic_high", "Diastolic BP high", 90, (60, 140), 5, 120),
        ),
        valid_for=timedelta(minutes=30),
        wire="bp",
        color="#b197fc",
    ),
    Sign(
        key="map",
        label="Mean arterial pressure",
        short="MAP",
        unit="mmHg",
        ucum="mm[Hg]",
        loinc=(_loinc("8478-0", "Mean blood pressure"),),
        mdc=(
            _mdc("150023", "MDC_PRESS_BLD_NONINV_MEAN"),
            _mdc("150303", "MDC_PRESS_CUFF_MEAN"),
        ),
        plausible=(15, 280),
        # ICU target: a MAP of 65 mmHg or more (Surviving Sepsis Campaign).
        limits=(
            LimitDefault("map_low", "MAP low", 65, (50, 90), 3, 55),
            LimitDefault("map_high", "MAP high", 110, (90, 150), 5, 130),
        ),
        valid_for=timedelta(minutes=30),
        description=(
            "Mean arterial pressure, mmHg, as the monitor measured it; when absent and bp is "
            "given, the consumer computes it: (systolic + 2 x diastolic) / 3, rounded."
        ),
        color="#e599f7",
    ),
    Sign(
        key="spo2",
        label="SpO2",
        short="SpO2",
        unit="%",
        ucum="%",
        loinc=(
            _loinc("2708-6", "Oxygen saturation in Arterial blood"),
            _loinc("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
        ),
        mdc=(_mdc("150456", "MDC_PULS_OXIM_SAT_O2"),),
        plausible=(0, 100),
        limits=(LimitDefault("spo2_low", "SpO2 low", 90, (80, 99), 2, 85),),
        news2="spo2",
        description="Peripheral oxygen saturation, %.",
        color="#29c5f6",  # cyan
        continuous=True,
    ),
    Sign(
        key="temperature",
        label="Temperature",
        short="Temp",
        unit="°C",
        ucum="Cel",
        loinc=(_loinc("8310-5", "Body temperature"),),
        # Body and core first, then the generic MDC_TEMP most monitors' temperature channels
        # send, then the sites; not skin (150388) nor blood (150352) temperature, which are not
        # the body temperature NEWS2 scores.
        mdc=(
            _mdc("150364", "MDC_TEMP_BODY"),
            _mdc("150368", "MDC_TEMP_CORE"),
            _mdc("150344", "MDC_TEMP"),
            _mdc("188420", "MDC_TEMP_RECT"),
            _mdc("188424", "MDC_TEMP_ORAL"),
            _mdc("150392", "MDC_TEMP_TYMP"),
            _mdc("188428", "MDC_TEMP_EAR"),
            _mdc("188452", "MDC_TEMP_AXILLA"),
            _mdc("188456", "MDC_TEMP_GIT"),
        ),
        plausible=(25.0, 45.0),
        decimals=1,
        limits=(
            LimitDefault("temperature_low", "Temperature low", 35.0, (33.0, 36.5), 0.3, 34.0),
            LimitDefault("temperature_high", "Temperature high", 39.0, (37.5, 41.0), 0.3, 40.0),
        ),
        news2="temperature",
        valid_for=timedelta(minutes=60),
        description="Body temperature, °C; stored with one decimal.",
        color="#e9ecef",  # white
    ),
    Sign(
        key="etco2",
        label="End-tidal CO2",
        short="EtCO2",
        unit="mmHg",
        ucum="mm[Hg]",
        loinc=(
            _loinc(
                "19889-5", "Carbon dioxide [Partial pressure] in Exhaled gas --at end expiration"
            ),
        ),
        mdc=(_mdc("151708", "MDC_AWAY_CO2_ET"),),
        plausible=(0, 150),
        # Normal 35-45 mmHg; rising in ventilatory failure, falling with hyperventilation, a
        # leak or a falling cardiac output.
        limits=(
            LimitDefault("etco2_low", "EtCO2 low", 25, (15, 35), 2, 15),
            LimitDefault("etco2_high", "EtCO2 high", 50, (40, 80), 3, 60),
        ),
        optional=True,
        description="End-tidal CO2, mmHg: ventilated patients only.",
        color="#ffd8a8",  # pale orange: capnographs' yellow would read as an alarm
    ),
)

SIGN_BY_KEY: dict[str, Sign] = {sign.key: sign for sign in SIGNS}
SIGN_KEYS: tuple[str, ...] = tuple(SIGN_BY_KEY)
# Each contract field, in order, and the signs it carries (`bp`: systolic and diastolic).
SIGN_KEYS_OF_FIELD: dict[str, tuple[str, ...]] = {
    name: tuple(sign.key for sign in SIGNS if sign.wire_field == name)
    for name in dict.fromkeys(sign.wire_field for sign in SIGNS)
}
LIMIT_DEFAULTS: tuple[LimitDefault, ...] = tuple(limit for sign in SIGNS for limit in sign.limits)
LIMIT_BY_KIND: dict[str, LimitDefault] = {limit.kind: limit for limit in LIMIT_DEFAULTS}
SIGN_OF_LIMIT: dict[str, str] = {limit.kind: sign.key for sign in SIGNS for limit in sign.limits}


def map_from_bp(systolic: int, diastolic: int) -> int:
    """The mean arterial pressure a reading with systolic and diastolic but no MAP is given:
    diastolic plus a third of the pulse pressure, rounded half up to a whole mmHg."""
    return (systolic + 2 * diastolic + 1) // 3


# NEWS2 parameters that are not numeric signs, and how long each stays valid for scoring.
OBSERVATION_VALIDITY: dict[str, timedelta] = {
    "consciousness": timedelta(minutes=60),
    "on_oxygen": timedelta(minutes=60),
}
# The one setting that overrides validity windows, e.g. "bp=20m,temperature=2h". Keys: the
# numeric signs' keys (`bp` for systolic, diastolic and map together) and the observations'.
VALIDITY_SETTING = "SIGN_VALIDITY"
