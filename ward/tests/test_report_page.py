"""The alarm-burden report page (/units/<code>/report/, ward/report_views.py): its tables from
the server, its two plots drawn in the browser under the Content-Security-Policy."""

from datetime import timedelta

import pytest
from django.utils import timezone
from selenium.webdriver.common.by import By

from patients.tests.factories import PatientFactory
from units.models import Admission, Bed, Unit
from units.tests.test_report import alarm_at
from ward.tests.conftest import wait_until

OBSERVER = ("observer", "x" * 16)  # the `viewer` fixture
DASH = "\u2013"  # no figure: no bed-days


def _unit() -> Unit:
    """A unit of three beds, the last empty; over the last day: bed 1 with three alarms
    (one acknowledged after 45 s, one self-resolved, one technical), bed 2 with one."""
    now = timezone.now().replace(microsecond=0)
    unit = Unit.objects.create(code="icu-a", name="ICU A")
    Unit.objects.create(code="icu-b", name="ICU B")
    beds = [Bed.objects.create(unit=unit, label=f"A{i}", position=i) for i in (1, 2, 3)]
    ann, bob = PatientFactory(name="ann"), PatientFactory(name="bob")
    Admission.objects.create(patient=ann, bed=beds[0], admitted_at=now - timedelta(days=1))
    Admission.objects.create(patient=bob, bed=beds[1], admitted_at=now - timedelta(days=1))
    hour = timedelta(hours=1)
    alarm_at(ann, now - 5 * hour, "spo2_low", "medium", ack=45, resolved=300)
    alarm_at(ann, now - 4 * hour, "spo2_low", "medium", resolved=12)
    alarm_at(ann, now - 3 * hour, "spo2_probe_off", "low", resolved=90)
    alarm_at(bob, now - 2 * hour, "pulse_high", "high", ack=8, resolved=60)
    return unit


@pytest.mark.django_db
def test_the_page_shows_the_figures_and_links_the_csv(client, viewer):
    _unit()
    client.force_login(viewer)
    response = client.get("/units/icu-a/report/")
    assert response.status_code == 200
    page = response.content.decode()
    assert '<dd id="total-alarms">4</dd>' in page
    assert '<dd id="total-bed-days">2.0</dd>' in page
    assert "<tr><td>spo2_low</td><td>physiological</td><td>2</td><td>1.0</td><td>1</td>" in page
    assert '<td data-seconds="402.0">402.0 s</td>' in page  # bed A1: 300 + 12 + 90
    assert 'href="/api/units/icu-a/alarm-report/?since=' in page
    assert "format=csv" in page
    assert client.get("/units/nope/report/").status_code == 404
    bad = client.get("/units/icu-a/report/", {"since": "yesterday"})
    assert bad.status_code == 200
    assert "since: " in bad.content.decode()


@pytest.mark.django_db
def test_a_user_without_the_alarms_role_is_refused(client, django_user_model):
    _unit()
    client.force_login(django_user_model.objects.create_user("nobody", password="x" * 16))
    assert client.get("/units/icu-a/report/").status_code == 403
    client.logout()
    assert client.get("/units/icu-a/report/").status_code == 302


@pytest.mark.browser
@pytest.mark.engine_neutral
@pytest.mark.django_db(transaction=True)
def test_the_report_draws_its_two_plots_without_a_csp_violation(
    browser, login, viewer, csp_violations, screenshot
):
    _unit()
    login(*OBSERVER, path="/units/icu-a/report/")
    wait_until(browser, lambda b: b.find_element(By.CSS_SELECTOR, "body[data-ready]"), "plots")
    kinds = browser.find_elements(By.CSS_SELECTOR, "#plot-kinds rect[data-kind]")
    assert [bar.get_attribute("data-kind") for bar in kinds] == [
        "spo2_low",
        "pulse_high",
        "spo2_probe_off",
    ]
    ack = browser.find_elements(By.CSS_SELECTOR, "#plot-ack rect[data-bin]")
    assert sorted((b.get_attribute("data-priority"), b.get_attribute("data-bin")) for b in ack) == [
        ("high", "0"),
        ("medium", "30"),
    ]
    rows = browser.find_elements(By.CSS_SELECTOR, "#table-beds tbody tr")
    assert [r.text for r in rows] == [
        "A1 1.0 3 3.0 6 min 42 s",
        "A2 1.0 1 1.0 1 min 0 s",
        f"A3 0.0 0 {DASH} 0 s",
    ]
    screenshot("report")
    assert csp_violations() == []
