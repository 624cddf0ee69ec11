"""The hostile input corpus of the vitals topic, loaded from its data files in tests/hostile/
(format in the README there). Used by test_hostile_corpus.py and test_contract.py."""

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

CORPUS_DIR = Path(__file__).resolve().parents[2] / "tests" / "hostile"
MANIFEST = CORPUS_DIR / "cases.json"

_CASE_FIELDS = {"kind", "key", "key_hex", "value", "fill", "expect"}
_EXPECT_SHAPES = (
    {"dlq.reason", "dlq.detail"},
    {"stored"},
    {"duplicate_of"},
    {"conflicting_duplicate_of"},
)


@dataclass(frozen=True)
class HostileCase:
    """One message of the corpus and what must become of it: exactly one of
    - `reason` (and `detail`, a fragment of the message): rejected, `dlq.reason` = reason;
    - `stored`: accepted and stored; these Reading attributes, verbatim;
    - `duplicate_of`: accepted, but the same reading as that earlier case, so the consumer
      skips it silently as a duplicate;
    - `conflicting_duplicate_of`: accepted, the same (patient, measured_at) as that earlier
      case but other values: the first copy stays, this one goes to the DLQ with reason
      `conflicting_duplicate`."""

    name: str
    kind: str
    key: bytes | None
    value: bytes | None
    reason: str | None = None
    detail: str | None = None
    stored: dict[str, Any] = field(default_factory=dict)
    duplicate_of: str | None = None
    conflicting_duplicate_of: str | None = None


def _no_duplicate_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError(f"{MANIFEST}: a name appears twice: {sorted(names)}")
    return dict(pairs)


def _case_load(name: str, entry: dict[str, Any], earlier: dict[str, HostileCase]) -> HostileCase:
    where = f"{MANIFEST.name}: case {name!r}"
    if unknown := set(entry) - _CASE_FIELDS:
        raise ValueError(f"{where}: unknown fields {sorted(unknown)}")
    if ("key" in entry) == ("key_hex" in entry):
        raise ValueError(f"{where}: give exactly one of key (text or null) and key_hex")
    key = bytes.fromhex(entry["key_hex"]) if "key_hex" in entry else entry["key"]
    key = key.encode() if isinstance(key, str) else key

    value: bytes | None = None
    if entry["value"] is not None:
        if entry["value"] != f"values/{name}.bin":
            raise ValueError(f"{where}: the value file must be values/{name}.bin")
        value = (CORPUS_DIR / entry["value"]).read_bytes()
    if fill := entry.get("fill"):
        # The file's bytes, then `repeat` until the value is `to_bytes` long: a large payload
        # without a large file in the repository.
        if value is None or set(fill) != {"repeat", "to_bytes"}:
            raise ValueError(f"{where}: fill is {{repeat, to_bytes}} after a value file")
        filler = fill["repeat"].encode()
        missing = fill["to_bytes"] - len(value)
        value += (filler * (missing // len(filler) + 1))[:missing]

    expect = entry["expect"]
    if set(expect) not in _EXPECT_SHAPES:
        raise ValueError(f"{where}: expect is one of {_EXPECT_SHAPES}, not {sorted(expect)}")
    for shape in ("duplicate_of", "conflicting_duplicate_of"):
        original = expect.get(shape)
        if original is not None and not (original in earlier and earlier[original].stored):
            raise ValueError(f"{where}: {shape} must name an earlier case that is stored")
    return HostileCase(
        name=name,
        kind=entry["kind"],
        key=key,
        value=value,
        reason=expect.get("dlq.reason"),
        detail=expect.get("dlq.detail"),
        stored=expect.get("stored", {}),
        duplicate_of=expect.get("duplicate_of"),
        conflicting_duplicate_of=expect.get("conflicting_duplicate_of"),
    )


def corpus_load() -> tuple[datetime, dict[str, HostileCase]]:
    """The corpus's reference clock and its cases, in the manifest's order."""
    manifest = json.loads(
        MANIFEST.read_text(encoding="utf-8"), object_pairs_hook=_no_duplicate_names
    )
    cases: dict[str, HostileCase] = {}
    for name, entry in manifest["cases"].items():
        cases[name] = _case_load(name, entry, cases)
    return datetime.fromisoformat(manifest["now"]), cases


# The clock the expectations are written for (the contract tests' NOW); they must also hold on
# the real clock, which is what the consumer uses end to end.
CORPUS_NOW, CORPUS = corpus_load()
REJECTED = {name: case for name, case in CORPUS.items() if case.reason}
STORED = {name: case for name, case in CORPUS.items() if case.stored}
DUPLICATES = {name: case for name, case in CORPUS.items() if case.duplicate_of}
CONFLICTING = {name: case for name, case in CORPUS.items() if case.conflicting_duplicate_of}
