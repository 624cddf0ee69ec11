"""Every silence is itself an alarm: with no consumer running, nobody raises or sweeps alarms.
Each consumer's alarm sweep stamps a heartbeat with the database's clock
(vitals/heartbeat_services.py); the status (vitals/heartbeat_selectors.py) is ok, stopped or
never started; the API, the web's /metrics and the pages (ward/tests/test_browser.py) say so."""

import os
import socket
from datetime import UTC, datetime, timedelta

import pytest
from django.db import OperationalError
from django.db.models import F
from django.utils import timezone

from vitals import consumer as consumer_module
from vitals import health as health_module
from vitals import heartbeat_apis
from vitals import heartbeat_services as services_module
from vitals.heartbeat_selectors import AlarmProcessingStatus, alarm_processing_status
from vitals.heartbeat_services import alarm_processing_heartbeat_record
from vitals.models import AlarmProcessingHeartbeat
from vitals.tests.fakes import worker_create
from vitals.tests.test_metrics import SCRAPE_TOKEN, SCRAPER

pytestmark = pytest.mark.django_db

T = datetime(2026, 12, 3, 3, 12, 5, tzinfo=UTC)
THIS_PROCESS = f"{socket.gethostname()}:{os.getpid()}"


def beat(process: str, at: datetime) -> None:
    AlarmProcessingHeartbeat.objects.create(process=process, beat_at=at)


def test_alarm_processing_is_ok_stopped_or_never_started_by_the_latest_heartbeat(settings):
    assert alarm_processing_status(now=T, stopped_after=10) == AlarmProcessingStatus(
        status="never_started",
        last_heartbeat_at=None,
        checked_at=T,
        seconds_since_heartbeat=None,
        consumers=0,
        stopped_after=10,
    )

    beat("host-a:7", T - timedelta(seconds=10))
    beat("host-b:9", T - timedelta(hours=1))  # a consumer gone long ago
    assert alarm_processing_status(now=T, stopped_after=10) == AlarmProcessingStatus(
        status="ok",  # 10 s: not yet stopped
        last_heartbeat_at=T - timedelta(seconds=10),
        checked_at=T,
        seconds_since_heartbeat=10.0,
        consumers=1,
        stopped_after=10,
    )
    later = T + timedelta(milliseconds=500)
    assert alarm_processing_status(now=later, stopped_after=10) == AlarmProcessingStatus(
        status="stopped",
        last_heartbeat_at=T - timedelta(seconds=10),  # stopped since
        checked_at=later,
        seconds_since_heartbeat=10.5,
        consumers=0,
        stopped_after=10,
    )

    settings.ALARM_PROCESSING_STOPPED_AFTER = 30.0  # the default's setting
    found = alarm_processing_status(now=T + timedelta(seconds=20))
    assert (found.status, found.seconds_since_heartbeat, found.stopped_after) == ("ok", 30.0, 30.0)
    beat("host-c:1", T + timedelta(seconds=15))  # a second consumer
    found = alarm_processing_status(now=T + timedelta(seconds=20))
    assert (found.status, found.last_heartbeat_at, found.consumers) == (
        "ok",
        T + timedelta(seconds=15),
        2,
    )


def test_the_heartbeat_and_the_status_go_by_the_databases_clock_not_a_hosts(monkeypatch):
    """A consumer whose clock is an hour ahead fakes no life for an hour; a web host whose
    clock is an hour behind does not take an old heartbeat for a fresh one."""
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() + timedelta(hours=1))
    alarm_processing_heartbeat_record(process="skewed:1")
    row = AlarmProcessingHeartbeat.objects.get()
    assert abs(row.beat_at - datetime.now(tz=UTC)) < timedelta(seconds=5)

    AlarmProcessingHeartbeat.objects.update(beat_at=F("beat_at") - timedelta(minutes=5))
    monkeypatch.setattr(timezone, "now", lambda: real_now() - timedelta(minutes=5))
    found = alarm_processing_status(stopped_after=10)
    assert found.status == "stopped"
    assert 300 <= found.seconds_since_heartbeat < 305
    assert abs(found.checked_at - datetime.now(tz=UTC)) < timedelta(seconds=5)


def test_each_sweep_of_a_consumer_stamps_its_heartbeat_and_forgets_processes_gone_a_day():
    beat("gone:1", T - timedelta(days=2))
    beat("recent:2", datetime.now(tz=UTC) - timedelta(hours=1))
    worker, _, _ = worker_create(no_data_after=15, escalate_after=120)

    assert worker.sweep_alarms() == 0
    first = AlarmProcessingHeartbeat.objects.get(process=THIS_PROCESS).beat_at
    assert abs(first - datetime.now(tz=UTC)) < timedelta(seconds=5)
    assert set(AlarmProcessingHeartbeat.objects.values_list("process", flat=True)) == {
        THIS_PROCESS,
        "recent:2",
    }

    worker.sweep_alarms()  # one UPDATE of its row
    assert AlarmProcessingHeartbeat.objects.filter(process=THIS_PROCESS).count() == 1
    assert AlarmProcessingHeartbeat.objects.get(process=THIS_PROCESS).beat_at >= first
    assert alarm_processing_status().status == "ok"


@pytest.mark.parametrize("failing", ["alarm_no_data_sweep", "heartbeat"])
def test_a_sweep_the_database_does_not_answer_stamps_no_heartbeat(monkeypatch, failing):
    def refuse(**_kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    if failing == "heartbeat":
        monkeypatch.setattr(services_module.AlarmProcessingHeartbeat.objects, "filter", refuse)
    else:
        monkeypatch.setattr(consumer_module, failing, refuse)
    worker, _, _ = worker_create(no_data_after=15)

    assert worker.sweep_alarms() == 0  # never raises: tried again on the next sweep
    monkeypatch.undo()
    assert not AlarmProcessingHeartbeat.objects.exists()
    assert alarm_processing_status().status == "never_started"


# --- the API and the web's /metrics ----------------------------------------------------------
def test_the_api_says_whether_alarms_are_processed(viewer_client, monkeypatch):
    assert viewer_client.get("/api/alarm-processing/").json() == {
        "status": "never_started",
        "last_heartbeat_at": None,
        "checked_at": None,
        "seconds_since_heartbeat": None,
        "consumers": 0,
        "stopped_after_seconds": 10.0,
    }

    alarm_processing_heartbeat_record(process="host-a:7")
    AlarmProcessingHeartbeat.objects.update(beat_at=F("beat_at") - timedelta(seconds=125))
    last = AlarmProcessingHeartbeat.objects.get().beat_at
    body = viewer_client.get("/api/alarm-processing/").json()
    seconds = body.pop("seconds_since_heartbeat")
    checked_at = datetime.fromisoformat(body.pop("checked_at"))
    assert body == {
        "status": "stopped",
        "last_heartbeat_at": last.isoformat(),
        "consumers": 0,
        "stopped_after_seconds": 10.0,
    }
    assert 125 <= seconds < 130
    assert abs((checked_at - last).total_seconds() - seconds) <= 0.1

    alarm_processing_heartbeat_record(process="host-a:7")  # it sweeps again
    body = viewer_client.get("/api/alarm-processing/").json()
    assert (body["status"], body["consumers"]) == ("ok", 1)
    assert body["seconds_since_heartbeat"] < 5

    def unreadable():
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(heartbeat_apis, "alarm_processing_status", unreadable)
    response = viewer_client.get("/api/alarm-processing/")
    assert (response.status_code, response.json()) == (
        503,
        {
            "error": {
                "status": 503,
                "code": "alarm_processing_unknown",
                "message": "Whether alarms are processed cannot be read: the database does "
                "not answer.",
            }
        },
    )


def alarm_lines(anon_client) -> list[str]:
    body = anon_client.get("/metrics", **SCRAPER).content.decode()
    assert "icu_http_requests_total" in body  # the rest is served whatever the gauges do
    return [line for line in body.splitlines() if line.startswith("icu_alarm_processing")]


def test_the_web_metrics_say_whether_alarms_are_processed(anon_client, settings, monkeypatch):
    settings.METRICS_TOKEN = SCRAPE_TOKEN
    assert alarm_lines(anon_client) == ["icu_alarm_processing_up 0.0"]  # never started

    beat("host-a:7", datetime.now(tz=UTC) - timedelta(minutes=10))
    up, age = alarm_lines(anon_client)
    assert up == "icu_alarm_processing_up 0.0"
    assert age.startswith("icu_alarm_processing_heartbeat_age_seconds ")
    assert 600 <= float(age.split()[1]) < 605

    alarm_processing_heartbeat_record(process="host-a:7")
    up, age = alarm_lines(anon_client)
    assert up == "icu_alarm_processing_up 1.0"
    assert float(age.split()[1]) < 5

    def unreadable():
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(health_module, "alarm_processing_status", unreadable)
    assert alarm_lines(anon_client) == []  # unknown: never exported as up
