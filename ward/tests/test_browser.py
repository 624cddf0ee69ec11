"""The central station in a real browser (headless Chromium through Selenium), against the live
server and the test database: logging in, the ward and its live updates, a lost connection, 32
beds on a station screen and a tablet, a patient's trends, acknowledging an alarm.

Readings are written with the storage service the consumer uses (`reading_bulk_store`), alarms
with the factories; the pages see them only through the API, as in production. Screenshots are
kept in var/test-artifacts/.
"""

import colorsys
import itertools
import re
import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
from django.db import transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from patients.models import Patient
from patients.tests.factories import PatientFactory
from units.models import Admission, Bed, Unit
from vitals.contract import Reading
from vitals.emulator import patient_uuid_for_name
from vitals.heartbeat_services import alarm_processing_heartbeat_record
from vitals.models import Alarm, AlarmOff, AlarmProcessingHeartbeat, AuditEvent, PatientMetric
from vitals.services import alarm_limits_update, alarm_switch_off, reading_bulk_store
from vitals.tests.factories import AlarmFactory
from ward import events, views
from ward.events import ChangeWatcher
from ward.tests.conftest import POLL_SECONDS, STATION, viewport, wait_until

pytestmark = [
    pytest.mark.browser,
    pytest.mark.engine_neutral,
    pytest.mark.django_db(transaction=True),
]

NURSE = ("nurse", "correct-horse-9")  # the `user` fixture: a clinician
OBSERVER = ("observer", "x" * 16)  # the `viewer` fixture

NORMAL = {
    "pulse": 72,
    "resp_rate": 14,
    "systolic": 120,
    "diastolic": 80,
    "spo2": 98,
    "temperature": 36.8,
}


def reading(name: str, ago: float = 1.0, **values) -> Reading:
    """A reading of patient `name` taken `ago` seconds ago: normal adult values unless given."""
    return Reading(
        patient_uuid=patient_uuid_for_name(name),
        patient_name=name,
        measured_at=timezone.now() - timedelta(seconds=ago),
        **{**NORMAL, **values},
    )


def store(*readings: Reading, admit: bool = True) -> None:
    """Stores the readings; with `admit`, their patients in no bed yet are admitted (admit_all),
    in the order of their first reading."""
    reading_bulk_store(readings=list(readings))
    if admit:
        uuids = dict.fromkeys(r.patient_uuid for r in readings)
        admit_all(*(Patient.objects.get(uuid=uuid_) for uuid_ in uuids))


def admit_all(*patients: Patient) -> None:
    """Admits each patient in no bed yet to the first free bed of the unit "icu" (a new one if
    none is free), as AUTO_ADMIT would."""
    for found in patients:
        if Admission.objects.filter(patient=found, discharged_at__isnull=True):
            continue
        occupied = Admission.objects.filter(bed=OuterRef("pk"), discharged_at__isnull=True)
        free = Bed.objects.filter(unit__code="icu").exclude(Exists(occupied))
        bed = free.order_by("position").first()
        if bed is None:
            bed = unit_beds(Bed.objects.filter(unit__code="icu").count() + 1)[-1]
        Admission.objects.create(patient=found, bed=bed, admitted_at=timezone.now())


def unit_beds(count: int, code: str = "icu", name: str = "ICU A") -> list[Bed]:
    """The beds of unit `code` (named `name`), labelled "1" to `count` in their positions, in
    one transaction (a page polling meanwhile never sees the unit half made)."""
    with transaction.atomic():
        unit, _ = Unit.objects.get_or_create(code=code, defaults={"name": name})
        for position in range(1, count + 1):
            Bed.objects.get_or_create(
                unit=unit, position=position, defaults={"label": str(position)}
            )
    return list(Bed.objects.filter(unit=unit).order_by("position"))


def patient(name: str) -> Patient:
    return Patient.objects.get(name=name)


def tiles(browser: WebDriver) -> list[dict]:
    """What each tile shows, in the order on screen."""
    return browser.execute_script(
        """
        return [...document.querySelectorAll("#tiles > li[data-uuid]")].map((li) => ({
          bed: li.querySelector(".tile-bed").textContent,
          name: li.querySelector(".tile-name").textContent,
          classes: li.className,
          signs: Object.fromEntries([...li.querySelectorAll("[data-sign]:not([hidden])")].map(
            (sign) => [sign.dataset.sign, sign.querySelector(".value").textContent])),
          ages: Object.fromEntries([...li.querySelectorAll("[data-sign]:not([hidden])")].map(
            (sign) => [sign.dataset.sign, sign.querySelector(".sign-age").textContent])),
          news2Title: li.querySelector(".news2").title,
          news2: [li.querySelector(".news2-score").textContent,
                  li.querySelector(".news2-risk").textContent],
          news2Class: li.querySelector(".news2").className,
          alarms: [...li.querySelectorAll(".tile-alarms li")].map((a) => a.textContent),
          age: li.querySelector(".age").textContent,
        }));
        """
    )


def names(browser: WebDriver) -> list[str]:
    return [tile["name"] for tile in tiles(browser)]


HIGH_RED = "rgb(240, 62, 62)"  # --high
MEDIUM_YELLOW = "rgb(252, 196, 25)"  # --medium


def sign_looks(browser: WebDriver, name: str) -> dict[str, dict]:
    """How each value of `name`'s tile looks: its colour, its flashing (period in seconds and
    the share of it lit, from the running animation; 0 and None: steady) and what screen
    readers hear of its alarm."""
    return browser.execute_script(
        """
        const li = [...document.querySelectorAll("#tiles > li")].find(
          (li) => li.dataset.name === arguments[0]);
        return Object.fromEntries([...li.querySelectorAll("[data-sign]")].map((sign) => {
          const value = sign.querySelector(".value");
          const [flash] = value.getAnimations();
          const frames = flash ? flash.effect.getKeyframes() : [];
          const dark = frames.find((f) => f.backgroundColor !== frames[0].backgroundColor);
          return [sign.dataset.sign, {
            color: getComputedStyle(value).color,
            period: flash ? flash.effect.getTiming().duration / 1000 : 0,
            lit: dark ? dark.offset : null,
            label: sign.querySelector(".sign-alarm")?.textContent ?? null,
          }];
        }));
        """,
        name,
    )


def alarm_like(rgb: str) -> bool:
    """A saturated colour within 20 degrees of the hue of alarm red (0) or alarm yellow (45)."""
    r, g, b = (int(n) / 255 for n in re.findall(r"\d+", rgb)[:3])
    hue, _, saturation = colorsys.rgb_to_hls(r, g, b)
    return saturation > 0.3 and any(abs((hue * 360 - at + 180) % 360 - 180) < 20 for at in (0, 45))


def test_the_ward_shows_every_bed_and_updates_live(browser, login, user, screenshot):
    store(reading("ann"))  # NEWS2 0
    store(reading("ben", pulse=115, resp_rate=22, temperature=38.5))  # 2 + 2 + 1: 5, medium
    AlarmFactory(
        patient=patient("ben"),
        kind="pulse_high",
        priority="high",
        message="Pulse high: 155 /min (> 120)",
        raised_at=timezone.now(),
    )
    AlarmFactory(
        patient=patient("ben"),
        kind="resp_rate_high",
        priority="medium",
        message="Resp. rate high: 22 /min (> 20)",
        raised_at=timezone.now() - timedelta(seconds=5),
    )
    store(reading("cid", ago=600))  # its monitor silent for 10 minutes

    login(*NURSE)
    wait_until(browser, lambda b: len(tiles(b)) == 3, "three tiles")

    ben, ann, cid = tiles(browser)  # the most acute first
    assert ann["name"] == "ann"
    # No EtCO2 (ann is not ventilated); MAP: see the partial readings' test.
    assert {key: value for key, value in ann["signs"].items() if key != "map"} == {
        "pulse": "72",
        "spo2": "98",
        "bp": "120/80",
        "resp_rate": "14",
        "temperature": "36.8",
        "acvpu": "A · air",
    }
    assert (ann["news2"], ann["news2Class"]) == (["0", "low risk"], "news2 news2--low")
    assert re.fullmatch(r"\d s ago", ann["age"]), ann["age"]
    assert (ann["alarms"], ann["classes"]) == ([], "tile")
    assert ben["name"] == "ben"
    assert (ben["news2"], ben["news2Class"]) == (["5", "medium risk"], "news2 news2--medium")
    assert ben["alarms"] == [  # the priority in words
        "High Pulse high: 155 /min (> 120)",
        "Medium Resp. rate high: 22 /min (> 20)",
    ]
    assert ben["classes"] == "tile tile--alarm-high"
    # A value in alarm: its alarm's colour, flashing at its priority's rate (IEC 60601-1-8:
    # high 1.4-2.8 Hz, medium 0.4-0.8 Hz, each 20-60 % on); the others look normal.
    ben_signs, ann_signs = sign_looks(browser, "ben"), sign_looks(browser, "ann")
    pulse, resp = ben_signs["pulse"], ben_signs["resp_rate"]
    assert (pulse["color"], resp["color"]) == (HIGH_RED, MEDIUM_YELLOW)
    assert 1.4 <= 1 / pulse["period"] <= 2.8  # Hz
    assert 0.4 <= 1 / resp["period"] <= 0.8
    assert 0.2 <= pulse["lit"] <= 0.6
    assert 0.2 <= resp["lit"] <= 0.6
    assert (pulse["label"], resp["label"]) == (
        " in high priority alarm",
        " in medium priority alarm",
    )
    for sign, look in [*ann_signs.items(), *((k, ben_signs[k]) for k in ("spo2", "bp"))]:
        assert (look["period"], look["label"]) == (0, None), (sign, look)
        assert not alarm_like(look["color"]), (sign, look)  # a normal BP is not alarm red
    # Three beds grow to fill the screen below the top bar.
    found = geometry(browser)
    main = browser.find_element(By.ID, "tiles").rect
    covered = sum((t["right"] - t["left"]) * (t["bottom"] - t["top"]) for t in found["tiles"])
    assert covered > 0.8 * found["width"] * (found["height"] - main["y"]), found["tiles"]
    assert max(t["bottom"] for t in found["tiles"]) <= found["height"]
    assert (found["scrollWidth"], found["scrollHeight"]) == STATION
    assert cid["name"] == "cid"
    assert cid["age"].startswith("Stale · no reading for 10 min"), cid["age"]
    assert cid["classes"] == "tile tile--stale"
    assert browser.find_element(By.ID, "ward-count").text == "(3 of 3 beds)"
    assert browser.find_element(By.ID, "unit-name").text == "ICU A"
    assert [t["bed"] for t in (ben, ann, cid)] == ["2", "1", "3"]  # admitted in that order
    assert browser.execute_script("return location.search") == "?unit=icu"
    assert browser.find_element(By.TAG_NAME, "body").text.startswith("ICU Monitor")  # no {# #}
    assert browser.find_element(By.ID, "connection").text.startswith("Live · ")
    screenshot("ward")

    # A new reading, through the storage service: ann deteriorates and rises to the top, with
    # no reload of the page.
    browser.execute_script("window.notReloaded = true")
    store(reading("ann", ago=0, pulse=131, resp_rate=26, spo2=91))  # 3 + 3 + 3: 9, high
    wait_until(browser, lambda b: names(b)[0] == "ann", "ann at the top")
    ann = tiles(browser)[0]
    assert ann["signs"]["pulse"] == "131"
    assert (ann["news2"], ann["news2Class"]) == (["9", "high risk"], "news2 news2--high")
    assert names(browser) == ["ann", "ben", "cid"]
    assert browser.execute_script("return window.notReloaded") is True
    screenshot("deteriorated")

    # By name, and the choice kept in the address.
    Select(browser.find_element(By.ID, "ordering")).select_by_value("name")
    wait_until(browser, lambda b: names(b) == ["ann", "ben", "cid"], "by name")
    store(reading("ben", ago=0, pulse=140, resp_rate=30, spo2=85, systolic=85))
    wait_until(browser, lambda b: tiles(b)[1]["news2"][0] == "12", "ben's new score")
    assert names(browser) == ["ann", "ben", "cid"]
    assert browser.execute_script("return location.search") == "?unit=icu&ordering=name"
    # By bed: ann in 1, ben in 2, cid in 3.
    Select(browser.find_element(By.ID, "ordering")).select_by_value("bed")
    wait_until(browser, lambda b: [t["bed"] for t in tiles(b)] == ["1", "2", "3"], "by bed")


def test_a_reading_stored_is_pushed_to_the_ward_without_waiting_for_a_poll(
    browser, login, user, settings
):
    # Polls a minute apart: a reading shown within seconds was pushed (ward/events.py; the
    # live server is a threaded WSGI server: a stream a thread).
    settings.WARD_POLL_SECONDS = settings.WARD_PUSH_POLL_SECONDS = 60
    store(reading("ann"))
    login(*NURSE)
    wait_until(browser, lambda b: len(tiles(b)) == 1, "ann's tile")
    push = lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-push")  # noqa: E731
    wait_until(browser, lambda b: push(b) == "up", "the stream up")

    store(reading("ann", ago=0, pulse=131))
    wait_until(browser, lambda b: tiles(b)[0]["signs"]["pulse"] == "131", "pushed: pulse 131")
    store(reading("ben", ago=0))  # a new patient, admitted: a new tile
    wait_until(browser, lambda b: names(b) == ["ann", "ben"], "pushed: ben's tile")
    assert browser.find_element(By.ID, "connection").text.startswith("Live · ")

    # The patient page: its patient's changes only.
    browser.get(f"{browser.current_url.split('?')[0]}patients/{patient('ann').uuid}/")
    wait_until(browser, lambda b: push(b) == "up", "the patient page's stream up")
    pulse = """return document.querySelector('#patient-vitals [data-sign="pulse"] .value')
               .textContent"""
    store(reading("ann", ago=0, pulse=99))
    wait_until(browser, lambda b: b.execute_script(pulse) == "99", "pushed: ann's pulse 99")


# Counts the page's streams opened (EventSource's "open"), from before any of its own scripts.
COUNT_OPENS = """
window.__opened = 0;
window.EventSource = class extends EventSource {
  constructor(...args) {
    super(...args);
    this.addEventListener("open", () => (window.__opened += 1));
  }
};
"""


def test_a_stream_open_but_silent_is_not_taken_for_up_and_the_page_polls_on(
    browser, login, user, settings, monkeypatch
):
    # A watcher hung on a dead connection: the stream opens (the session was accepted) but no
    # heartbeat comes. Taken for up, the page would poll once a minute.
    silent = ChangeWatcher(max_clients=10)
    monkeypatch.setattr(silent, "ensure_running", lambda: None)
    monkeypatch.setattr(events, "_watcher", silent)
    settings.WARD_PUSH_POLL_SECONDS = 60
    script = browser.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument", {"source": COUNT_OPENS}
    )
    try:
        store(reading("ann"))
        login(*NURSE)
        wait_until(browser, lambda b: b.execute_script("return window.__opened"), "stream open")
        wait_until(browser, lambda b: len(tiles(b)) == 1, "ann's tile")
        for pulse in ("131", "132"):  # polled: the refresh as the stream opened showed one at most
            store(reading("ann", ago=0, pulse=int(pulse)))
            wait_until(browser, lambda b, p=pulse: tiles(b)[0]["signs"]["pulse"] == p, pulse)
        assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-push") is None
    finally:
        browser.execute_cdp_cmd(
            "Page.removeScriptToEvaluateOnNewDocument", {"identifier": script["identifier"]}
        )


def test_a_nurse_deactivated_while_her_ward_is_pushed_sees_her_session_lost_not_live(
    browser, login, user, settings
):
    # Polls a minute apart: only the stream's end can tell the page within seconds.
    settings.WARD_POLL_SECONDS = settings.WARD_PUSH_POLL_SECONDS = 60
    settings.WARD_PUSH_RECHECK_SECONDS = 0.5
    store(reading("ann"))
    login(*NURSE)
    push = lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-push")  # noqa: E731
    wait_until(browser, lambda b: push(b) == "up", "the stream up")
    live = lambda b: b.find_element(By.ID, "connection").text.startswith("Live · ")  # noqa: E731
    wait_until(browser, live, "live")

    user.is_active = False
    user.save(update_fields=["is_active"])

    wait_until(
        browser,
        lambda b: b.find_element(By.ID, "connection").text == "Not logged in",
        "the session shown lost",
    )
    banner = browser.find_element(By.ID, "connection-lost")
    assert banner.text.startswith("The server refuses this session")
    assert push(browser) == "down"


def test_a_ward_opened_by_a_user_who_holds_their_share_of_streams_polls_and_stays_live(
    browser, login, user, settings, monkeypatch
):
    # The nurse's login holds its one stream already (another station's screen): this page's
    # is refused (429), so it polls at its usual pace, and says Live as its polls succeed.
    watcher = ChangeWatcher(max_clients=10, max_per_user=1)
    monkeypatch.setattr(events, "_watcher", watcher)
    held = watcher.subscribe(patient=None, user=user.pk)
    try:
        store(reading("ann"))
        login(*NURSE)
        wait_until(browser, lambda b: len(tiles(b)) == 1, "ann's tile")
        store(reading("ann", ago=0, pulse=131))
        wait_until(browser, lambda b: tiles(b)[0]["signs"]["pulse"] == "131", "polled: 131")
        assert browser.find_element(By.ID, "connection").text.startswith("Live · ")
        assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-push") != "up"
        assert watcher.subscriptions == {held}
    finally:
        watcher.stopping.set()
        if watcher.thread is not None:
            watcher.thread.join(timeout=2)


def empty_beds(browser: WebDriver) -> list[str]:
    return browser.execute_script(
        "return [...document.querySelectorAll('#tiles > li.tile--empty')]"
        ".map((li) => li.textContent)"
    )


def test_a_clinician_admits_from_the_strip_transfers_and_discharges(
    browser, login, user, screenshot, csp_violations
):
    unit_beds(3)
    store(reading("hal"))  # in bed 1
    store(reading("gus", pulse=115), admit=False)  # a monitor sending, its patient in no bed
    # A patient in no bed is still monitored: his alarms show on the strip (the most urgent,
    # and how many more), never hidden because nobody admitted him.
    for kind, priority, message in [
        ("spo2_low", "high", "SpO2 low: 84 % (< 90)"),
        ("news2", "medium", "NEWS2 5 (medium risk)"),
    ]:
        AlarmFactory(patient=patient("gus"), kind=kind, priority=priority, message=message)
    login(*NURSE, path="/")

    strip = wait_until(
        browser, lambda b: b.find_element(By.ID, "unassigned").is_displayed() and b, "the strip"
    ).find_element(By.ID, "unassigned")
    wait_until(browser, lambda b: names(b) == ["hal"], "hal's tile")
    assert empty_beds(browser) == ["Bed 2 · empty", "Bed 3 · empty"]
    assert strip.find_element(By.TAG_NAME, "h2").text == "Unassigned monitors"
    [item] = strip.find_elements(By.CSS_SELECTOR, "#unassigned-list > li")
    assert item.find_element(By.CSS_SELECTOR, ".unassigned-name").text == "gus"
    assert item.find_element(By.CSS_SELECTOR, ".unassigned-alarm").text == (
        "HIGH SpO2 low: 84 % (< 90) +1 more"
    )
    assert "unassigned-item--alarm-high" in item.get_attribute("class")
    beds = Select(item.find_element(By.TAG_NAME, "select"))
    assert [o.text for o in beds.options] == ["Bed 2", "Bed 3"]  # the free beds
    assert item.find_element(By.TAG_NAME, "select").accessible_name == "Bed"
    # The strip takes its room above the beds: still nothing to scroll.
    found = geometry(browser)
    assert (found["scrollWidth"], found["scrollHeight"]) == STATION
    assert max(t["bottom"] for t in found["tiles"]) <= STATION[1]
    screenshot("unassigned")

    # Admit gus to bed 2: his tile appears in it, the strip goes.
    beds.select_by_visible_text("Bed 2")
    item.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_until(browser, lambda b: sorted(names(b)) == ["gus", "hal"], "gus's tile")
    assert {t["name"]: t["bed"] for t in tiles(browser)} == {"gus": "2", "hal": "1"}
    wait_until(browser, lambda b: not strip.is_displayed(), "the strip gone")
    assert empty_beds(browser) == ["Bed 3 · empty"]
    gus = Admission.objects.get(patient__name="gus")
    assert (gus.bed.label, gus.admitted_by, gus.discharged_at) == ("2", user, None)

    # His page: transfer to the unit's free bed (bed 3).
    gus_uuid = patient("gus").uuid
    browser.find_element(By.CSS_SELECTOR, f'li[data-uuid="{gus_uuid}"] a.tile-link').click()
    bed_text = wait_until(browser, lambda b: b.find_element(By.ID, "bed-text"), "the bed line")
    assert bed_text.text == "Bed 2 · ICU A"
    browser.find_element(By.ID, "transfer-open").click()
    # The bed line says why, if the free beds could not be loaded (a clean-clone run once
    # timed out here under load, with nothing to say why).
    form = wait_until(
        browser,
        lambda b: b.find_element(By.ID, "transfer-form").is_displayed() and b,
        "the transfer form",
        why=lambda: f"the bed line: {bed_text.text!r}",
    ).find_element(By.ID, "transfer-form")
    assert [o.text for o in Select(form.find_element(By.TAG_NAME, "select")).options] == ["Bed 3"]
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_until(browser, lambda b: bed_text.text == "Bed 3 · ICU A (transferred now)", "moved")
    moves = Admission.objects.filter(patient__name="gus").order_by("admitted_at")
    assert [(a.bed.label, a.end_reason, a.discharged_at is None) for a in moves] == [
        ("2", "transfer", False),
        ("3", "", True),
    ]

    # Discharge (confirmed): he leaves the ward, and is not an unassigned monitor either.
    browser.find_element(By.ID, "discharge").click()
    alert = browser.switch_to.alert
    assert alert.text == "Discharge gus from bed 3? They leave the ward; their history stays."
    alert.accept()
    wait_until(
        browser, lambda b: bed_text.text == "Discharged now: no longer on the ward.", "discharged"
    )
    assert not Admission.objects.filter(patient__name="gus", discharged_at__isnull=True)
    browser.find_element(By.CSS_SELECTOR, "a.back").click()
    wait_until(browser, lambda b: empty_beds(b) == ["Bed 2 · empty", "Bed 3 · empty"], "empty")
    assert names(browser) == ["hal"]
    assert not browser.find_element(By.ID, "unassigned").is_displayed()
    screenshot("discharged")

    # Another unit: chosen in the switcher, kept in the address and, for a bare `/`, in this
    # browser.
    unit_beds(2, code="icu-b", name="ICU B")

    def switcher_options() -> list[str]:
        # Read in one script: the page redraws the switcher as it polls.
        return browser.execute_script(
            "return [...document.getElementById('unit').options].map((o) => o.text)"
        )

    wait_until(
        browser,
        lambda b: switcher_options() == ["ICU A (1/3)", "ICU B (0/2)"],
        "the switcher's two units",
        why=lambda: f"it shows {switcher_options()}",
    )
    switcher = Select(browser.find_element(By.ID, "unit"))
    switcher.select_by_value("icu-b")
    wait_until(browser, lambda b: b.find_element(By.ID, "unit-name").text == "ICU B", "ICU B")
    wait_until(browser, lambda b: empty_beds(b) == ["Bed 1 · empty", "Bed 2 · empty"], "B's")
    assert names(browser) == []
    assert browser.execute_script("return location.search") == "?unit=icu-b"
    browser.get(browser.current_url.split("?")[0])
    wait_until(browser, lambda b: b.execute_script("return location.search") == "?unit=icu-b", "")
    assert csp_violations() == []


def test_a_lost_connection_is_shown_and_the_ward_recovers(
    browser, login, user, screenshot, settings, monkeypatch
):
    """And, unlike it, alarm processing stopped (no consumer's heartbeat): its own banner."""
    monkeypatch.setattr(views, "ALARM_PROCESSING_POLL_SECONDS", POLL_SECONDS)
    store(reading("ann"))
    login(*NURSE)
    wait_until(
        browser,
        lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-connection") == "live",
        "live",
    )
    banner = browser.find_element(By.ID, "connection-lost")
    assert not banner.is_displayed()

    browser.execute_cdp_cmd("Network.enable", {})
    offline = {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}
    browser.execute_cdp_cmd("Network.emulateNetworkConditions", offline)
    try:
        wait_until(browser, lambda b: banner.is_displayed(), "the connection-lost banner")
        assert banner.text.startswith(
            "Connection to the server lost: reconnecting… The values shown are from "
        )
        assert banner.get_attribute("role") == "alert"
        assert browser.find_element(By.ID, "connection").text == "Connection lost"
        assert "tiles--offline" in browser.find_element(By.ID, "tiles").get_attribute("class")
        # Nor can the page tell whether alarms are processed: never taken for "ok".
        stopped = browser.find_element(By.ID, "alarm-processing")
        wait_until(browser, lambda b: stopped.is_displayed(), "the status-unknown banner")
        assert stopped.text == (
            "ALARM PROCESSING STATUS UNKNOWN: no answer from the server. Do not rely on this "
            "screen for alarms until it is known."
        )
        screenshot("offline")
        store(reading("ann", ago=0, pulse=99))  # arrives while the station is cut off
    finally:
        browser.execute_cdp_cmd("Network.emulateNetworkConditions", {**offline, "offline": False})
        browser.execute_cdp_cmd("Network.disable", {})

    wait_until(browser, lambda b: not banner.is_displayed(), "the banner gone")
    wait_until(browser, lambda b: tiles(b)[0]["signs"]["pulse"] == "99", "the new reading")
    assert browser.find_element(By.ID, "connection").text.startswith("Live · ")
    assert "tiles--offline" not in browser.find_element(By.ID, "tiles").get_attribute("class")

    # No consumer's alarm sweep heard for 125 s (the login's heartbeat made old): the page is
    # connected, but no alarm is processed.
    wait_until(browser, lambda b: not stopped.is_displayed(), "no banner", lambda: stopped.text)
    settings.ALARM_PROCESSING_STOPPED_AFTER = 10
    AlarmProcessingHeartbeat.objects.update(beat_at=F("beat_at") - timedelta(seconds=125))
    since = timezone.localtime(AlarmProcessingHeartbeat.objects.get().beat_at)
    wait_until(browser, lambda b: stopped.is_displayed(), "the alarms-not-processed banner")
    assert stopped.text == (
        f"⚠ALARMS NOT PROCESSED since {since:%H:%M:%S}: no consumer is running. Patients are "
        "not being watched. Watch every patient at the bedside and call the on-call engineer "
        "to restart alarm processing."
    )
    assert stopped.get_attribute("role") == "alert"
    background = "return getComputedStyle(arguments[0]).backgroundColor"
    assert browser.execute_script(background, stopped) == HIGH_RED  # alarm red
    assert not banner.is_displayed()  # the page's own connection is fine
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-alarm-processing") == (
        "stopped"
    )
    screenshot("alarms-not-processed")

    alarm_processing_heartbeat_record(process="browser-tests")  # a consumer sweeps again
    wait_until(browser, lambda b: not stopped.is_displayed(), "the banner gone")
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-alarm-processing") == "ok"


def thirty_two_beds() -> None:
    """A full ward as a real one looks at its worst: mixed scores, MAP on every tile, a
    hypertensive crisis (BP 212/124), ventilated patients (EtCO2), three tiles with three alarms
    each (an escalated high one unanswered for minutes, with a long message; a "+1 more"), long
    names, and a silent monitor whose tile is stale with its no_data alarm."""
    now = timezone.now()
    readings = []
    for bed in range(32):
        name = f"Bed {bed + 1:02d} · " + (
            "Alexandra Konstantinopoulou" if bed % 7 == 3 else "Sam Lee"
        )
        values = {"map": 93}
        if bed % 4 == 1:
            values = {"pulse": 118, "resp_rate": 23, "temperature": 38.6, "map": 88}
        if bed % 8 == 2:  # respiratory failure, ventilated
            values = {
                "pulse": 134,
                "resp_rate": 27,
                "spo2": 89,
                "systolic": 88,
                "diastolic": 39,
                "map": 55,
                "etco2": 61,
                "on_oxygen": True,
                "consciousness": "C",
            }
        if bed == 5:  # the widest values
            values = {"pulse": 147, "resp_rate": 32, "systolic": 212, "diastolic": 124, "map": 153}
        readings.append(reading(name, ago=900 if bed == 30 else 1, **values))
    store(*readings)
    for bed in (2, 10, 18):
        p = patient(readings[bed].patient_name)
        # Raised at one moment: the list orders them by priority, then newest first (by id,
        # the tie-break on PostgreSQL as on SQLite): the escalated one is made last, to lead.
        for kind, priority, message, escalated in (
            ("pulse_high", "medium", "Pulse high: 134 /min (> 120)", False),
            ("news2", "high", "NEWS2 13 (high risk)", False),
            ("diastolic_low", "high", "Diastolic BP low: 39 mmHg (< 50)", True),
        ):
            AlarmFactory(
                patient=p,
                kind=kind,
                priority=priority,
                message=message,
                raised_at=now - timedelta(minutes=4),
                activated_at=now - timedelta(minutes=4),
                escalated_at=now - timedelta(minutes=1) if escalated else None,
            )
    AlarmFactory(
        patient=patient(readings[5].patient_name),
        kind="systolic_high",
        priority="high",
        message="Systolic BP high: 212 mmHg (> 200)",
        raised_at=now,
        activated_at=now - timedelta(minutes=5),
        escalated_at=now - timedelta(minutes=2),
    )
    AlarmFactory(
        patient=patient(readings[30].patient_name),
        kind="no_data",
        priority="medium",
        message="No data for 15 s (last reading received 11:27:36)",
        raised_at=now - timedelta(seconds=885),
        activated_at=now - timedelta(seconds=885),
    )


# Nothing on a tile cut off or over another: each visible part of a tile (its head, the signs,
# each alarm, ALARM OFF, the age) inside the tile and below the one before it; every value
# whole; every alarm one line, cut with an ellipsis at most, its whole text in its title.
TILE_DEFECTS = """
const defects = [];
for (const tile of document.querySelectorAll("#tiles > li")) {
  const box = tile.getBoundingClientRect();
  const name = tile.dataset.name;
  const parts = [...tile.querySelectorAll(
    ".tile-head, .tile-identity, .vitals, .tile-alarms > li, .tile-alarm-off, .age")]
    .filter((el) => el.getClientRects().length);
  let above = null;
  for (const el of parts) {
    const r = el.getBoundingClientRect();
    if (r.left < box.left || r.right > box.right || r.bottom > box.bottom - 2)
      defects.push([name, "outside", el.textContent]);
    if (above && r.top < above.bottom - 0.5)
      defects.push([name, "overlaps", above.el.textContent, el.textContent]);
    above = {el, bottom: r.bottom};
  }
  const inner = box.right - parseFloat(getComputedStyle(tile).borderRightWidth);
  let left = null;
  for (const dd of tile.querySelectorAll(".sign dd")) {
    if (!dd.getClientRects().length) continue;
    const r = dd.querySelector(".value").getBoundingClientRect();
    if (dd.scrollWidth > dd.clientWidth || r.right > inner)
      defects.push([name, "value cut", dd.textContent]);
    if (left && Math.abs(left.top - r.top) < 2 && r.left < left.right)
      defects.push([name, "values overlap", left.text, dd.textContent]);
    left = {top: r.top, right: r.right, text: dd.textContent};
  }
  for (const li of tile.querySelectorAll(".tile-alarms > li")) {
    const lineHeight = parseFloat(getComputedStyle(li).lineHeight);
    if (li.getBoundingClientRect().height > 1.5 * lineHeight)
      defects.push([name, "alarm not one line", li.textContent]);
    if (!li.classList.contains("alarm--more") && li.title !== li.textContent)
      defects.push([name, "alarm title", li.title, li.textContent]);
  }
}
return defects;
"""


def geometry(browser: WebDriver) -> dict:
    return browser.execute_script(
        """
        const root = document.documentElement;
        return {
          width: innerWidth, height: innerHeight, clientWidth: root.clientWidth,
          scrollWidth: root.scrollWidth, scrollHeight: root.scrollHeight,
          tiles: [...document.querySelectorAll("#tiles > li")].map((li) => {
            const r = li.getBoundingClientRect();
            return {left: r.left, top: r.top, right: r.right, bottom: r.bottom};
          }),
        };
        """
    )


def test_thirty_two_beds_fit_a_station_screen_and_a_tablet_scrolls_only_down(
    browser, login, user, screenshot
):
    thirty_two_beds()
    login(*NURSE)
    wait_until(browser, lambda b: len(tiles(b)) == 32, "32 tiles")

    # 1920x1080: every tile whole on the screen, nothing to scroll.
    found = geometry(browser)
    assert (found["width"], found["height"]) == STATION
    outside = [
        t
        for t in found["tiles"]
        if t["left"] < 0
        or t["top"] < 0
        or t["right"] > found["width"]
        or t["bottom"] > found["height"]
    ]
    assert outside == []
    assert (found["scrollWidth"], found["scrollHeight"]) == STATION
    shown = tiles(browser)
    assert shown[0]["news2"] == ["17", "high risk"]  # most acute first
    crowded = [t for t in shown if len(t["alarms"]) == 3]
    assert len(crowded) == 3
    for tile in crowded:
        first, second, more = tile["alarms"]
        assert re.fullmatch(
            r"High Diastolic BP low: 39 mmHg \(< 50\) · ESCALATED · unanswered 4 min 0\d s", first
        ), first
        assert re.fullmatch(r"High NEWS2 13 \(high risk\) · unanswered 4 min 0\d s", second)
        assert more == "+1 more"
        assert tile["signs"]["etco2"] == "61"  # ventilated
    assert next(t for t in shown if t["signs"]["bp"] == "212/124")["signs"]["map"] == "153"
    [stale] = [t for t in shown if "tile--stale" in t["classes"]]
    assert stale["alarms"][0].startswith("Medium No data for 15 s"), stale["alarms"]
    assert stale["age"].startswith("Stale · no reading for ")
    # Nothing cut off or overlapping on any tile: every value whole, every alarm on one line
    # (its whole text in its title), "+1 more" and the age always there.
    assert browser.execute_script(TILE_DEFECTS) == []
    # The signs in two rows of four: HR RR BP MAP / SpO2 Temp EtCO2 ACVPU.
    rows = browser.execute_script(
        """
        const tile = [...document.querySelectorAll("#tiles > li")].find(
          (li) => li.querySelector('[data-sign="etco2"]:not([hidden])'));
        const rows = new Map();
        for (const sign of tile.querySelectorAll("[data-sign]")) {
          const top = Math.round(sign.getBoundingClientRect().top);
          rows.set(top, [...(rows.get(top) ?? []), sign.dataset.sign]);
        }
        return [...rows.values()];
        """
    )
    assert rows == [["pulse", "resp_rate", "bp", "map"], ["spo2", "temperature", "etco2", "acvpu"]]
    screenshot("station-1920x1080")

    # Accessible names of the controls.
    assert browser.find_element(By.ID, "ordering").accessible_name == "Sort"
    assert browser.find_element(By.CSS_SELECTOR, ".logout button").accessible_name == "Log out"
    links = browser.find_elements(By.CSS_SELECTOR, "a.tile-link")
    assert sorted(link.accessible_name for link in links) == sorted(t["name"] for t in shown)

    # "+1 more" opens the patient, whose page lists every alarm. Each poll redraws a tile's
    # alarms, so the link is found, read and clicked again if a poll replaced it meanwhile.
    def open_more(b: WebDriver):
        try:
            more = b.find_element(By.CSS_SELECTOR, ".alarm--more a")
            seen = (more.text, more.accessible_name)
            uuid_ = more.find_element(By.XPATH, "ancestor::li[@data-uuid]").get_attribute(
                "data-uuid"
            )
            more.click()
        except StaleElementReferenceException:
            return None
        return seen, uuid_

    seen, crowded_uuid = wait_until(browser, open_more, "+1 more clicked")
    assert seen == ("+1 more", "1 more alarm")
    wait_until(
        browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "tr[data-alarm-id]")) == 3, "3"
    )
    assert browser.execute_script("return location.pathname") == f"/patients/{crowded_uuid}/"
    browser.back()
    wait_until(browser, lambda b: len(tiles(b)) == 32, "32 tiles again")

    # Tablets, landscape and portrait: the tiles reflow, nothing scrolls sideways.
    for width, height in ((1024, 768), (820, 1180)):
        viewport(browser, width, height)
        found = geometry(browser)
        # The page's width is the window's but for a vertical scroll bar.
        assert width - 20 < found["clientWidth"] <= width, (width, height)
        assert found["scrollWidth"] == found["clientWidth"], (width, height)
        assert all(t["left"] >= 0 and t["right"] <= found["clientWidth"] for t in found["tiles"])
        assert found["scrollHeight"] > height  # 32 beds: the page scrolls down instead
        # The tiles refit after the resize (and may redraw at a poll): no defect once settled.
        wait_until(
            browser,
            lambda b: b.execute_script(TILE_DEFECTS) == [],
            f"no tile defect at {width}x{height}",
            why=lambda: str(browser.execute_script(TILE_DEFECTS)[:5]),
        )
        screenshot(f"tablet-{width}x{height}")
    viewport(browser, *STATION)

    # 64 beds, the largest unit: all whole on the station's screen, without paging or
    # scrolling; the tiles smaller, every value still whole. (32 more patients, all normal.)
    store(*(reading(f"Bed {bed + 1:02d} · Sam Lee", map=93) for bed in range(32, 64)))
    wait_until(browser, lambda b: len(tiles(b)) == 64, "64 tiles")
    found = geometry(browser)
    assert [
        t
        for t in found["tiles"]
        if t["left"] < 0 or t["top"] < 0 or t["right"] > STATION[0] or t["bottom"] > STATION[1]
    ] == []
    assert (found["scrollWidth"], found["scrollHeight"]) == STATION
    assert browser.execute_script(TILE_DEFECTS) == []
    assert browser.find_element(By.ID, "ward-count").text == "(64 of 64 beds)"
    screenshot("station-64-beds")


def chart_summaries(browser: WebDriver) -> dict[str, str]:
    """The text under each chart, in the order on screen."""
    return dict(
        browser.execute_script(
            """
        return [...document.querySelectorAll("figure[data-chart]")].map(
          (f) => [f.dataset.chart, f.querySelector(".chart-summary").textContent]);
        """
        )
    )


def limit_labels(browser: WebDriver, chart: str) -> list[str]:
    """The labels of a chart's dashed lines, top to bottom, having checked that each is beside
    its line (touching it), inside the plot, and none over another."""
    labels = browser.execute_script(
        """
        const plot = document.querySelector(`[data-chart="${arguments[0]}"] .chart-plot`);
        const u = plot.uplot, over = u.over.getBoundingClientRect();
        return [...plot.querySelectorAll(".limit-label")].map((label) => {
          const r = label.getBoundingClientRect();
          return {text: label.textContent, top: r.top, bottom: r.bottom, left: r.left,
                  right: r.right, line: over.top + u.valToPos(Number(label.dataset.value), "y"),
                  inside: r.left >= over.left && r.right <= over.right};
        }).sort((a, b) => a.top - b.top);
        """,
        chart,
    )
    for label in labels:
        assert label["top"] - 2 <= label["line"] <= label["bottom"] + 2, label
        assert label["inside"], label
    for above, below in itertools.pairwise(labels):
        assert above["bottom"] <= below["top"], (above, below)
    return [label["text"] for label in labels]


def test_a_clinician_opens_a_patient_sees_the_trends_and_acknowledges_an_alarm(
    browser, login, user, screenshot
):
    # 20 minutes of readings, one every 10 s, the pulse climbing from 80 to about 125 (stored
    # in the order taken: the header shows the newest received).
    store(*(reading("dora", ago=10 * i, pulse=125 - i * 45 // 119) for i in reversed(range(120))))
    dora = patient("dora")
    alarm_limits_update(patient=dora, user=None, pulse_high=110)
    alarm = AlarmFactory(
        patient=dora,
        kind="pulse_high",
        priority="medium",
        message="Pulse high: 125 /min (> 110)",
        value=125,
        threshold=110,
        raised_at=timezone.now() - timedelta(minutes=2),
    )

    login(*NURSE)
    link = wait_until(
        browser, lambda b: b.find_element(By.CSS_SELECTOR, "a.tile-link"), "dora's tile"
    )
    link.click()
    wait_until(
        browser,
        lambda b: b.execute_script("return location.pathname") == f"/patients/{dora.uuid}/",
        "dora's page",
    )
    assert browser.find_element(By.TAG_NAME, "h1").text == "dora"
    wait_until(
        browser,
        lambda b: len(b.find_elements(By.CSS_SELECTOR, "figure[data-chart] canvas")) == 7,
        "seven charts (no EtCO2: not ventilated)",
    )

    summaries = chart_summaries(browser)
    assert list(summaries) == [
        "pulse",
        "resp_rate",
        "bp",
        "map",
        "spo2",
        "temperature",
        "news2",
    ]
    # The 15 minutes shown hold the pulse from about 91 up to 125, and dora's own limits.
    # "latest": the reading the header shows; the line's points are labelled as means.
    assert re.fullmatch(
        r"Pulse (9\d) to 125 /min, latest 125; last 5 s mean 125\. "
        r"Lines: low limit 50, high limit 110\.",
        summaries["pulse"],
    ), summaries["pulse"]
    assert summaries["spo2"] == "SpO2 98 to 98 %, latest 98; last 5 s mean 98. Lines: low limit 90."
    assert summaries["news2"].endswith("Lines: medium risk (5), high risk (7).")
    # Every axis has ticks enough to read a value off it.
    ticks = browser.execute_script(
        """return Object.fromEntries([...document.querySelectorAll("figure[data-chart]")].map(
          (f) => [f.dataset.chart, f.querySelector(".chart-plot").dataset.yTicks.split(",")]));"""
    )
    assert all(len(values) >= 4 for values in ticks.values()), ticks
    # The blood pressure's four dashed limits are labelled, each beside its line, none over
    # another (two limits at one value share a label).
    assert limit_labels(browser, "bp") == [
        "systolic high limit 160",
        "systolic low limit 90 · diastolic high limit 90",
        "diastolic low limit 50",
    ]

    # A new reading: the header and every chart's "latest" say the same at each moment.
    store(reading("dora", ago=0, pulse=131))  # NEWS2 3
    snapshot = """return [document.querySelector('#patient-vitals [data-sign="pulse"] .value')
        .textContent, document.querySelector("#patient-news2 .news2-score").textContent,
        document.querySelector('[data-chart="pulse"] .chart-summary').textContent,
        document.querySelector('[data-chart="news2"] .chart-summary').textContent]"""
    _, header_news2, pulse_summary, news2_summary = wait_until(
        browser,
        lambda b: (found := b.execute_script(snapshot))[0] == "131" and found,
        "the new reading in the header",
    )
    assert header_news2 == "3"
    assert ", latest 131; " in pulse_summary, pulse_summary
    assert ", latest 3; " in news2_summary, news2_summary
    assert browser.find_element(By.ID, "trend-note").text.startswith("Last 15 min, 5 s per point")

    ranges = browser.find_elements(By.CSS_SELECTOR, ".ranges button")
    assert [b.accessible_name for b in ranges] == ["15 min", "1 h", "6 h", "24 h"]
    assert browser.find_element(By.CSS_SELECTOR, ".ranges").accessible_name == "Time range"
    ranges[3].click()
    wait_until(
        browser,
        lambda b: b.find_element(By.ID, "trend-note").text.startswith("Last 24 h, 5 min per point"),
        "24 h",
    )
    assert [b.get_attribute("aria-pressed") for b in ranges] == ["false", "false", "false", "true"]
    # The whole history: 80 to 125, in 5-minute means.
    # The whole history in 5-minute means, labelled so; "latest" still the reading.
    assert re.match(
        r"Pulse 80 to 131 /min, latest 131; last 5 min mean 1\d\d(\.\d)?\. ",
        chart_summaries(browser)["pulse"],
    ), chart_summaries(browser)["pulse"]
    screenshot("patient")

    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-alarm-id="{alarm.pk}"]')
    button = row.find_element(By.CSS_SELECTOR, "button")
    assert button.accessible_name.startswith("Acknowledge Pulse high: 125 /min (> 110), raised ")
    assert row.find_element(By.CSS_SELECTOR, ".prio").text == "MEDIUM"
    button.click()
    wait_until(browser, lambda b: row.get_attribute("data-state") == "acknowledged", "acknowledged")
    assert row.find_elements(By.CSS_SELECTOR, "button") == []
    assert row.find_elements(By.TAG_NAME, "td")[4].text.startswith("nurse, ")
    assert (
        browser.find_element(By.ID, "alarm-message").text
        == "Acknowledged “Pulse high: 125 /min (> 110)”."
    )
    alarm.refresh_from_db()
    assert (alarm.state, alarm.acknowledged_by) == ("acknowledged", user)
    assert AuditEvent.objects.get(action="alarm.acknowledge").username == "nurse"
    screenshot("acknowledged")


# Holds the page's polls of the alarm list (not the acknowledgement) until released: the alarm
# stays on the screen as drawn while the server's changes under it.
HOLD_ALARM_POLLS = """
const real = window.fetch;
window.heldPolls = true;
window.fetch = async (url, options) => {
  if (String(url).includes("/api/alarms/") && !String(url).includes("/acknowledge/")) {
    while (window.heldPolls) await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return real(url, options);
};
"""


def test_a_click_on_a_medium_alarm_that_became_high_meanwhile_is_refused_and_it_still_flashes(
    browser, login, user
):
    store(reading("fay", spo2=88))
    fay = patient("fay")
    alarm = AlarmFactory(
        patient=fay, kind="spo2_low", priority="medium", message="SpO2 low: 88 % (< 90)"
    )

    login(*NURSE, path=f"/patients/{fay.uuid}/")
    row = wait_until(
        browser, lambda b: b.find_element(By.CSS_SELECTOR, f'tr[data-alarm-id="{alarm.pk}"]'), "row"
    )
    wait_until(browser, lambda b: row.find_elements(By.CSS_SELECTOR, "button"), "its button")
    browser.execute_script(HOLD_ALARM_POLLS)
    # Worse at once, between two polls: the nurse still sees MEDIUM.
    Alarm.objects.filter(pk=alarm.pk).update(priority="high", message="SpO2 low: 84 % (< 90)")
    wait_until(
        browser, lambda b: row.find_element(By.CSS_SELECTOR, ".prio").text == "MEDIUM", "MEDIUM"
    )
    wait_until(browser, lambda b: row.find_element(By.CSS_SELECTOR, "button").click() or 1, "click")

    message = browser.find_element(By.ID, "alarm-message")
    wait_until(browser, lambda b: message.text.startswith("Not acknowledged"), "the refusal")
    assert message.text == (
        f"Not acknowledged, the alarm got worse: Alarm {alarm.pk} is HIGH now, not MEDIUM as "
        "shown: SpO2 low: 84 % (< 90). Look at it again before acknowledging it."
    )
    browser.execute_script("window.heldPolls = false;")
    wait_until(browser, lambda b: row.find_element(By.CSS_SELECTOR, ".prio").text == "HIGH", "HIGH")
    assert row.get_attribute("data-state") == "active"
    assert "alarm--high" in row.get_attribute("class").split()
    assert row.find_elements(By.CSS_SELECTOR, "button")
    alarm.refresh_from_db()
    assert (alarm.state, alarm.acknowledged_at) == ("active", None)


def test_a_viewer_sees_the_alarms_but_no_acknowledge_button(browser, login, viewer):
    store(reading("eve", spo2=86))
    eve = patient("eve")
    AlarmFactory(patient=eve, raised_at=timezone.now())

    login(*OBSERVER, path=f"/patients/{eve.uuid}/")
    row = wait_until(
        browser, lambda b: b.find_element(By.CSS_SELECTOR, "tr[data-alarm-id]"), "the alarm"
    )
    wait_until(browser, lambda b: row.get_attribute("data-state") == "active", "its state")
    assert row.find_elements(By.CSS_SELECTOR, "button") == []
    assert browser.find_elements(By.CSS_SELECTOR, ".button--ack") == []
    # Her bed, without the clinician's Transfer and Discharge.
    assert browser.find_element(By.ID, "bed-text").text == "Bed 1 · ICU A"
    assert browser.find_elements(By.CSS_SELECTOR, "#bed-line button") == []
    assert Alarm.objects.get().state == "active"
    assert uuid.UUID(browser.execute_script("return location.pathname").split("/")[2]) == eve.uuid


def test_a_monitor_sending_another_name_is_shown_until_a_clinician_confirms_or_renames(
    browser, login, user, screenshot
):
    alice_uuid = patient_uuid_for_name("alice")
    store(reading("alice", ago=30))
    store(replace(reading("alice", ago=20), patient_name="Mallory Impostor"))

    login(*NURSE)
    warning = wait_until(
        browser, lambda b: b.find_element(By.CSS_SELECTOR, ".tile-identity:not([hidden])"), "tile"
    )
    assert warning.text == "⚠ Other name sent"
    assert warning.get_attribute("title") == "Monitor sends another name: 'Mallory Impostor'"
    assert names(browser) == ["alice"]

    browser.find_element(By.CSS_SELECTOR, "a.tile-link").click()
    banner = wait_until(
        browser,
        lambda b: b.find_element(By.CSS_SELECTOR, "#identity-warning:not([hidden])"),
        "banner",
    )
    assert banner.get_attribute("role") == "alert"
    [line] = banner.find_elements(By.CSS_SELECTOR, ".identity-conflict")
    assert re.fullmatch(
        r"Monitor sends another name: 'Mallory Impostor' \(since .+, 1 reading\)", line.text
    ), line.text
    buttons = banner.find_elements(By.TAG_NAME, "button")
    assert [b.text for b in buttons] == ["Confirm name “alice”", "Rename to “Mallory Impostor”"]
    screenshot("identity-warning")

    buttons[0].click()
    wait_until(browser, lambda b: not banner.is_displayed(), "the warning gone")
    assert browser.find_element(By.ID, "identity-message").text == "Name “alice” confirmed."
    assert AuditEvent.objects.get().action == "patient.confirm_name"

    # Yet another name: a new warning, and this time the monitor's name is the right one.
    store(replace(reading("alice", ago=10), patient_name="Alice Smith"))
    wait_until(browser, lambda b: banner.is_displayed(), "a new warning")
    rename = wait_until(
        browser,
        lambda b: b.find_element(By.XPATH, "//button[.='Rename to “Alice Smith”']"),
        "its rename button",
    )
    rename.click()
    wait_until(
        browser, lambda b: b.find_element(By.TAG_NAME, "h1").text == "Alice Smith", "renamed"
    )
    assert not banner.is_displayed()
    assert Patient.objects.get(uuid=alice_uuid).name == "Alice Smith"
    assert [e.action for e in AuditEvent.objects.order_by("id")] == [
        "patient.confirm_name",
        "patient.rename",
    ]


def test_unanswered_alarms_a_clock_ahead_and_ending_monitoring_are_shown(
    browser, login, user, screenshot
):
    """Issue 14 on the screen: how long an alarm has gone unanswered (and that it was
    escalated), a reading from a monitor whose clock is 290 s ahead (no negative age: it says
    so), and a clinician ending a patient's monitoring."""
    now = timezone.now()
    store(replace(reading("ezra", ago=-290), sent_at=now))
    ezra = patient("ezra")
    AlarmFactory(
        patient=ezra,
        kind="asystole",
        priority="high",
        message="No pulse: 0 /min",
        value=0,
        threshold=20,
        raised_at=now - timedelta(seconds=150),
        activated_at=now - timedelta(seconds=150),
        escalated_at=now - timedelta(seconds=30),
    )

    login(*NURSE)
    wait_until(browser, lambda b: tiles(b) and tiles(b)[0]["alarms"], "ezra's alarm")
    [tile] = tiles(browser)
    assert re.fullmatch(
        r"High No pulse: 0 /min · ESCALATED · unanswered 2 min 3\d s", tile["alarms"][0]
    ), tile["alarms"]
    assert re.fullmatch(
        r"\d s ago · stamped 4 min [45]\d s in the future \(monitor clock ahead\)", tile["age"]
    ), tile["age"]
    assert "tile--stale" not in tile["classes"]
    screenshot("unanswered")

    browser.find_element(By.CSS_SELECTOR, "a.tile-link").click()
    wait_until(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "tr[data-alarm-id]"), "alarms")
    state = browser.find_elements(By.CSS_SELECTOR, "tr[data-alarm-id] td")[3].text
    assert re.fullmatch(r"active · ESCALATED · unanswered 2 min 3\d s", state), state
    text = browser.find_element(By.ID, "monitoring-text")
    assert text.text == "Monitored: a silent monitor raises a no_data alarm."
    button = browser.find_element(By.ID, "monitoring-end")
    assert button.accessible_name == "End monitoring"
    button.click()
    alert = browser.switch_to.alert
    assert alert.text == (
        "End the monitoring of ezra? No alarm will sound when their monitor falls silent."
    )
    alert.accept()
    wait_until(browser, lambda b: text.text.startswith("Monitoring ended "), "monitoring ended")
    # " (now)" confirms the click until the page's next refresh redraws the line without it
    # (which can come first on a loaded machine).
    assert re.fullmatch(r"Monitoring ended \d\d:\d\d:\d\d by nurse( \(now\))?", text.text), (
        text.text
    )
    assert not button.is_displayed()
    ezra.refresh_from_db()
    assert ezra.monitoring_ended_by == user
    assert AuditEvent.objects.get(action="patient.monitoring_end").patient_uuid == ezra.uuid

    browser.find_element(By.CSS_SELECTOR, "a.back").click()
    wait_until(browser, lambda b: tiles(b) and "Monitoring ended" in tiles(b)[0]["age"], "tile")
    assert "tile--ended" in tiles(browser)[0]["classes"]


def test_alarms_switched_off_show_as_alarm_off_and_a_clinician_switches_them(
    browser, login, user, screenshot
):
    store(reading("fay", spo2=95))
    fay = patient("fay")
    alarm_switch_off(patient=fay, kind="spo2_low", reason="COPD, target 88-92", user=user)

    login(*NURSE)
    # The tile: ALARM OFF and the kind, in words; who and why on hover.
    off = wait_until(
        browser,
        lambda b: b.find_element(By.CSS_SELECTOR, ".tile-alarm-off:not([hidden])"),
        "fay's ALARM OFF",
    )
    assert off.text == "⊘ALARM OFF: SpO2 low"
    assert off.get_attribute("title") == "SpO2 low: COPD, target 88-92 (nurse)"
    screenshot("ward-alarm-off")

    browser.find_element(By.CSS_SELECTOR, "a.tile-link").click()
    item = wait_until(
        browser, lambda b: b.find_element(By.CSS_SELECTOR, 'li[data-kind="spo2_low"]'), "the list"
    )
    assert re.fullmatch(
        r"ALARM OFF SpO2 low: “COPD, target 88-92”, nurse, [\w ]+ \d\d:\d\d:\d\d Switch on",
        item.text,
    ), item.text
    assert browser.find_element(By.ID, "patient-alarm-off").text == "⊘ALARM OFF: SpO2 low"
    wait_until(
        browser,
        lambda b: (
            b.find_element(By.CSS_SELECTOR, '[data-chart="spo2"] .chart-alarm-off').text
            == "ALARM OFF: SpO2 low"
        ),
        "ALARM OFF beside the SpO2 limit",
    )
    assert browser.find_element(By.CSS_SELECTOR, '[data-chart="pulse"] .chart-alarm-off').text == ""

    # Switch the pulse high alarm off, with a reason; the SpO2 low alarm back on.
    Select(browser.find_element(By.ID, "alarm-off-kind")).select_by_visible_text("Pulse high")
    browser.find_element(By.ID, "alarm-off-reason").send_keys("AF, rate controlled")
    browser.find_element(By.CSS_SELECTOR, "#alarm-off-form button").click()
    wait_until(
        browser,
        lambda b: b.find_elements(By.CSS_SELECTOR, 'li[data-kind="pulse_high"]'),
        "pulse high off",
    )
    assert browser.find_element(By.ID, "alarm-off-message").text == "Pulse high alarm switched off."
    on = browser.find_element(By.CSS_SELECTOR, 'li[data-kind="spo2_low"] button')
    assert on.accessible_name == "Switch the SpO2 low alarm back on"
    on.click()
    wait_until(
        browser,
        lambda b: not b.find_elements(By.CSS_SELECTOR, 'li[data-kind="spo2_low"]'),
        "SpO2 low on",
    )
    assert browser.find_element(By.ID, "patient-alarm-off").text == "⊘ALARM OFF: Pulse high"
    screenshot("patient-alarm-off")

    assert list(AlarmOff.objects.values_list("patient__name", "kind", "reason", "by_username")) == [
        ("fay", "pulse_high", "AF, rate controlled", "nurse")
    ]
    assert list(
        AuditEvent.objects.order_by("id").values_list("action", "username", "after__kind")
    ) == [
        ("alarm.off", "nurse", "spo2_low"),
        ("alarm.off", "nurse", "pulse_high"),
        ("alarm.on", "nurse", "spo2_low"),
    ]


def test_the_pages_run_under_the_content_security_policy_without_a_violation(
    browser, login, user, live_server, csp_violations, screenshot
):
    """The strict policy (icu/tests/test_csp.py) breaks nothing: the login page, the ward, a
    patient's charts, Swagger UI and the browsable API all work, and the browser reports no
    violation on any of them."""
    store(*(reading("dora", ago=10 * i, pulse=90 + i % 20) for i in range(60)))
    dora = patient("dora")
    AlarmFactory(patient=dora, raised_at=timezone.now())

    login(*NURSE)
    wait_until(browser, lambda b: names(b) == ["dora"], "dora's tile")
    browser.get(f"{live_server.url}/patients/{dora.uuid}/")
    wait_until(
        browser,
        lambda b: len(b.find_elements(By.CSS_SELECTOR, "figure[data-chart] canvas")) == 7,
        "seven charts (no EtCO2: not ventilated)",
    )
    wait_until(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "tr[data-alarm-id]"), "alarm")
    screenshot("patient")
    browser.get(f"{live_server.url}/api/docs/")
    operations = wait_until(
        browser, lambda b: b.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"), "operations"
    )
    assert "/api/patients/" in [operation.text.replace("\u200b", "") for operation in operations]
    screenshot("swagger-ui")
    browser.get(f"{live_server.url}/api/patients/")
    wait_until(browser, lambda b: b.find_elements(By.CSS_SELECTOR, ".response-info"), "the API")
    # The browsable API's scripts ran (jQuery, its forms): its format menu opens.
    browser.find_element(By.CSS_SELECTOR, ".format-selection .dropdown-toggle").click()
    wait_until(browser, lambda b: b.find_element(By.CSS_SELECTOR, ".format-selection.open"), "menu")
    # Its Log out (DRF's own is a link with an inline onclick, which the policy does not run).
    browser.find_element(
        By.CSS_SELECTOR, ".navbar-right .dropdown-toggle, .pull-right .dropdown-toggle"
    ).click()
    browser.find_element(By.XPATH, "//button[normalize-space()='Log out']").click()
    wait_until(browser, lambda b: b.find_elements(By.LINK_TEXT, "Log in"), "logged out")

    assert csp_violations() == []


DASH = "\u2013"  # a sign without a value within its validity


def null_runs(values: list) -> int:
    """The longest run of nulls between two values of a chart's series."""
    found = [i for i, value in enumerate(values) if value is not None]
    longest = run = 0
    for value in values[found[0] : found[-1] + 1] if found else []:
        run = run + 1 if value is None else 0
        longest = max(longest, run)
    return longest


# For each chart named: its first sign's line (the mean) as uPlot drew it: the gaps it left
# (each as the seconds of the values either side), its values, how many null buckets lie between
# the first and last, the points drawn (isolated values), and whether the line's own colour is
# on the canvas halfway between the first two values (a line drawn joining them).
DRAWN_GAPS = """
const found = {};
for (const key of arguments[0]) {
  const u = document.querySelector(`[data-chart="${key}"] .chart-plot`)?.uplot;
  const s = u?.series[1];
  if (!s?._paths) return null;
  const xs = u.data[0], ys = u.data[1];
  const at = (px) => u.posToVal(px / devicePixelRatio - u.bbox.left / devicePixelRatio, "x");
  const idx = ys.map((y, i) => (y === null ? null : i)).filter((i) => i !== null);
  const filtered = s.points.filter ? s.points.filter(u, 1, false, s._paths.gaps) : null;
  let joined = false;
  if (idx.length >= 2) {
    const [a, b] = idx;
    const x = Math.round((u.valToPos(xs[a], "x", true) + u.valToPos(xs[b], "x", true)) / 2);
    const y = Math.round((u.valToPos(ys[a], "y", true) + u.valToPos(ys[b], "y", true)) / 2);
    const n = parseInt(s.stroke(u, 1).slice(1), 16);
    const want = [n >> 16, (n >> 8) & 255, n & 255];
    const pixels = u.ctx.getImageData(x - 3, y - 3, 7, 7).data;
    for (let p = 0; p < pixels.length; p += 4) {
      if (want.every((c, k) => Math.abs(pixels[p + k] - c) < 40)) joined = true;
    }
  }
  found[key] = {
    gaps: (s._paths.gaps ?? []).map(([l, r]) => [at(l), at(r)]),
    values: idx.map((i) => ys[i]),
    nulls: idx.length ? ys.slice(idx[0], idx.at(-1)).filter((y) => y === null).length : 0,
    points: filtered ?? [],
    joined,
  };
}
return found;
"""


def test_partial_readings_show_each_signs_own_age_dashes_beyond_validity_and_gaps(
    browser, login, user, live_server, screenshot
):
    """Issue 17: readings that carry some of the signs. gus's last 15 min carry pulse and SpO2
    only (no pulse from 10 to 5 min ago: a gap), his blood pressure is 40 min old (beyond its
    30 min): a dash, and NEWS2 incomplete. hal, ventilated: EtCO2 on his tile and its chart,
    blood pressure and MAP 12 min old (within): shown with their age. The rows are written
    directly, and latest_signs as the consumer keeps it."""
    now = timezone.now()
    old, twelve = now - timedelta(minutes=40), now - timedelta(minutes=12)

    def signs(at, **values) -> dict:
        return {
            key: {"value": value, "measured_at": at.isoformat()} for key, value in values.items()
        }

    gus = PatientFactory(name="gus")
    full = {"resp_rate": 16, "systolic": 118, "diastolic": 76, "map": 90, "temperature": 37.2}
    PatientMetric.objects.create(
        patient=gus, measured_at=old, received_at=old, pulse=80, spo2=96, **full
    )
    partial = {
        "news2_score": 1,
        "news2_risk": "low",
        # As the consumer scores it: SpO2 95 % scores 1; no valid respiratory rate or systolic.
        "news2_subscores": {
            "resp_rate": None,
            "spo2": 1,
            "on_oxygen": 0,
            "systolic": None,
            "pulse": 0,
            "consciousness": 0,
            "temperature": 0,
        },
        "news2_missing": ["resp_rate", "systolic"],
    }
    for i in reversed(range(90)):  # every 10 s, the newest now
        at = now - timedelta(seconds=10 * i)
        pulse = None if 300 < 10 * i <= 600 else 88
        PatientMetric.objects.create(
            patient=gus, measured_at=at, received_at=at, pulse=pulse, spo2=95, **partial
        )
    gus.latest_metric = PatientMetric.objects.filter(patient=gus).latest()
    gus.latest_signs = signs(now, pulse=88, spo2=95) | signs(
        old, **full, consciousness="A", on_oxygen=False
    )
    gus.save()
    hal = PatientFactory(name="hal")
    # 15 min before the blood pressure of 12 min ago, the one before it (and a NEWS2 of 16).
    before = twelve - timedelta(minutes=15)
    PatientMetric.objects.create(
        patient=hal,
        measured_at=before,
        received_at=before,
        systolic=150,
        diastolic=90,
        map=110,
        news2_score=16,
        news2_risk="high",
    )
    PatientMetric.objects.create(
        patient=hal, measured_at=twelve, received_at=twelve, pulse=100, spo2=93, **full
    )
    ventilated = {"pulse": 100, "resp_rate": 24, "spo2": 93, "etco2": 48}
    hal.latest_metric = PatientMetric.objects.create(
        patient=hal,
        measured_at=now,
        received_at=now,
        on_oxygen=True,
        news2_score=7,
        news2_risk="high",
        # Complete: blood pressure and temperature from 12 min ago, within their windows.
        news2_subscores={
            "resp_rate": 2,
            "spo2": 2,
            "on_oxygen": 2,
            "systolic": 0,
            "pulse": 1,
            "consciousness": 0,
            "temperature": 0,
        },
        **ventilated,
    )
    hal.latest_signs = signs(now, **ventilated, consciousness="A", on_oxygen=True) | signs(
        twelve, systolic=118, diastolic=76, map=90, temperature=37.2
    )
    hal.save()
    admit_all(gus, hal)

    login(*NURSE)
    wait_until(browser, lambda b: names(b) == ["hal", "gus"], "two tiles, hal the more acute")
    hal_tile, gus_tile = tiles(browser)
    assert gus_tile["signs"] == {  # no EtCO2: never measured
        "pulse": "88",
        "resp_rate": DASH,  # 40 min: beyond its 5 min
        "bp": DASH,  # 40 min: beyond its 30 min
        "map": DASH,
        "spo2": "95",
        "temperature": "37.2",  # 40 min: within its 60 min
        "acvpu": "A · air",
    }
    assert (gus_tile["ages"]["temperature"], gus_tile["ages"]["pulse"]) == (" · 40 min", "")
    assert gus_tile["news2"] == ["1", "incomplete, no valid Resp. rate, Systolic BP"]
    assert gus_tile["news2Class"] == "news2 news2--low news2--incomplete"  # not a low score's
    assert gus_tile["news2Title"] == "NEWS2 incomplete: no valid Resp. rate, Systolic BP"
    assert hal_tile["signs"] == {
        "pulse": "100",
        "resp_rate": "24",
        "bp": "118/76",
        "map": "90",
        "spo2": "93",
        "temperature": "37.2",
        "etco2": "48",
        "acvpu": "A · O₂",
    }
    assert (hal_tile["ages"]["bp"], hal_tile["ages"]["map"], hal_tile["ages"]["etco2"]) == (
        " · 12 min",
        " · 12 min",
        "",
    )
    assert (hal_tile["news2"], hal_tile["news2Title"]) == (["7", "high risk"], "")
    screenshot("partial-readings")

    # gus's charts: no EtCO2, and the pulse's 5 minutes without a value a gap, not a line.
    browser.get(f"{live_server.url}/patients/{gus.uuid}/")
    wait_until(
        browser,
        lambda b: len(b.find_elements(By.CSS_SELECTOR, "figure[data-chart] canvas")) == 7,
        "7",
    )
    series = browser.execute_script(
        """const u = (key) => document.querySelector(`[data-chart="${key}"] .chart-plot`).uplot;
        return {pulse: u("pulse").data[1], spo2: u("spo2").data[1],
                spanGaps: u("pulse").series[1].spanGaps};"""
    )
    assert series["spanGaps"] is False
    assert 55 <= null_runs(series["pulse"]) <= 62, series["pulse"]  # 300 s of 5 s buckets
    assert null_runs(series["spo2"]) <= 2  # a reading every 10 s: no gap of its own
    # A line joins two values no further apart than the sign's validity (5 min for both): the
    # SpO2 every 10 s (a null bucket between two) is one line; the pulse's 310 s without a value
    # are its one gap, from the value before to the value after.
    drawn = wait_until(browser, lambda b: b.execute_script(DRAWN_GAPS, ["pulse", "spo2"]), "drawn")
    assert drawn["spo2"]["gaps"] == [], drawn["spo2"]
    [(left, right)] = drawn["pulse"]["gaps"]
    assert 300 < right - left < 320, drawn["pulse"]  # seconds between the two values
    header = browser.find_element(By.CSS_SELECTOR, "#patient-news2 .news2-risk")
    assert header.get_attribute("textContent") == "incomplete, no valid Resp. rate, Systolic BP"

    browser.get(f"{live_server.url}/patients/{hal.uuid}/")
    summary = wait_until(
        browser,
        lambda b: b.find_elements(By.CSS_SELECTOR, '[data-chart="etco2"] .chart-summary'),
        "hal's EtCO2 chart",
    )[0]
    wait_until(browser, lambda b: "latest 48" in summary.text, "its latest")
    # Over the last hour: hal's blood pressures (and MAPs), 15 min apart (valid 30 min), joined
    # by a line drawn on the chart; his one temperature and one EtCO2, isolated, drawn as points.
    browser.find_element(By.CSS_SELECTOR, '.range[data-range="3600"]').click()
    drawn = wait_until(
        browser,
        lambda b: (
            (found := b.execute_script(DRAWN_GAPS, ["bp", "map", "temperature", "etco2"]))
            and len(found["bp"]["values"]) == 2
            and found
        ),
        "an hour of hal's charts",
    )
    for key in ("bp", "map"):
        assert drawn[key]["gaps"] == [], drawn[key]
        assert drawn[key]["joined"], drawn[key]
        assert drawn[key]["nulls"] > 50, drawn[key]  # 15 min of 15 s buckets between the two
        assert drawn[key]["points"] == [], drawn[key]
    assert drawn["bp"]["values"] == [150, 118]
    for key in ("temperature", "etco2"):
        assert len(drawn[key]["values"]) == len(drawn[key]["points"]) == 1, drawn[key]
    # NEWS2's two dashed lines (5 and 7) close on a chart up to 16: each its own label.
    assert limit_labels(browser, "news2") == ["high risk (7)", "medium risk (5)"]
    screenshot("ventilated")
