"""HL7 v2 text as the project writes it: escaping a value for a field, and time stamps (DTM).
Shared by the gateway (ACKs, PCD-04) and the emulator's PCD-01 encoder."""

from datetime import datetime


def hl7_escape(
    text: str,
    *,
    field: str = "|",
    component: str = "^",
    repetition: str = "~",
    escape: str = "\\",
    subcomponent: str = "&",
) -> str:
    """`text` for an ST/TX value: each delimiter escaped (\\F\\, \\S\\, \\T\\, \\R\\, \\E\\;
    HL7 v2.6 section 2.7.4; the default encoding characters unless a message names others)
    and line breaks as spaces (a segment is one line)."""
    text = text.replace(escape, f"{escape}E{escape}")
    for char, code in ((field, "F"), (component, "S"), (subcomponent, "T"), (repetition, "R")):
        text = text.replace(char, f"{escape}{code}{escape}")
    return " ".join(text.splitlines())


def hl7_timestamp(moment: datetime) -> str:
    """An HL7 DTM to the millisecond with the moment's offset (+0000 for a naive one), e.g.
    20261203135004.123+0100."""
    return (
        moment.strftime("%Y%m%d%H%M%S.")
        + f"{moment.microsecond // 1000:03d}"
        + (moment.strftime("%z") or "+0000")
    )
