"""Fixtures of the central station's browser tests: one headless Chromium for the whole session
(Debian's `chromium` through its `chromium-driver`), a login through the real form for each
test, against pytest-django's live server, and screenshots kept as test artefacts.

The live server runs in a thread of the test process on the session's test database (for
SQLite, the same file: icu/settings_test.py), so a test's data is written with the real
services and a test flushes the tables at its end (transactional, as `live_server` requires).
"""

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import LazySettings
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from testing.processes import BASE_DIR
from vitals.heartbeat_services import alarm_processing_heartbeat_record

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# As root, Chromium needs --no-sandbox; the rest keep it from reaching for the network (this
# one is closed, and Chromium's background updates and services misbehave without it).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
ARTIFACTS = BASE_DIR / "var" / "test-artifacts"
STATION = (1920, 1080)
# The pages poll the API this often in the tests (WARD_POLL_SECONDS; 2 s by default).
POLL_SECONDS = 0.25
WAIT_SECONDS = 10


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> None:
    if call.when == "call":
        item.failed_call = call.excinfo is not None  # for the screenshot of a failure


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """Headless Chromium, one for the session (starting one takes a second or two)."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(
            "The browser tests need Debian's chromium and chromium-driver; `make test` installs "
            "them (apt-get install chromium chromium-driver).",
            pytrace=False,
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def viewport(browser: WebDriver, width: int, height: int) -> None:
    """The page's viewport exactly (a window's size would include the browser's own bars)."""
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )
    assert browser.execute_script("return [innerWidth, innerHeight]") == [width, height]


def wait_until(
    browser: WebDriver,
    condition: Callable[[WebDriver], object],
    what: str,
    why: Callable[[], str] | None = None,
):
    """The condition's first truthy value, polled every 50 ms, or a failure saying `what` (and
    `why()`, what the page shows that may explain it)."""
    try:
        # The pages redraw as they poll: an element read a moment ago may be gone (stale);
        # the condition is then tried again, as when it is not found yet.
        return WebDriverWait(
            browser,
            WAIT_SECONDS,
            poll_frequency=0.05,
            ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
        ).until(condition, what)
    except TimeoutException:
        if why is None:
            raise
        pytest.fail(f"{what}: not within {WAIT_SECONDS} s; {why()}")


@pytest.fixture
def screenshot(browser: WebDriver, request: pytest.FixtureRequest) -> Callable[[str], Path]:
    """screenshot("ward") saves var/test-artifacts/<test>-ward.png."""

    def save(name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{request.node.name}-{name}.png"
        assert browser.save_screenshot(str(path)), path
        return path

    return save


# Records every Content-Security-Policy violation of the pages in the tab's sessionStorage
# (kept across the tab's navigations on one origin), from before any of a page's own scripts.
CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", (event) => {
  const seen = JSON.parse(sessionStorage.getItem(KEY) || "[]");
  seen.push({page: location.pathname, directive: event.effectiveDirective,
             blocked: event.blockedURI, source: event.sourceFile, line: event.lineNumber,
             sample: event.sample});
  sessionStorage.setItem(KEY, JSON.stringify(seen));
}, true);
"""


@pytest.fixture
def csp_violations(browser: WebDriver) -> Iterator[Callable[[], list[dict]]]:
    """csp_violations(): the Content-Security-Policy violations of the pages this test has
    opened so far on the live server (a listener each page gets before its own scripts)."""
    key = json.dumps(f"csp-violations-{uuid.uuid4()}")
    script = browser.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument",
        {"source": f"const KEY = {key};{CSP_LISTENER}"},
    )

    def violations() -> list[dict]:
        return json.loads(browser.execute_script(f"return sessionStorage.getItem({key})") or "[]")

    yield violations
    browser.execute_cdp_cmd(
        "Page.removeScriptToEvaluateOnNewDocument", {"identifier": script["identifier"]}
    )


@pytest.fixture
def login(
    browser: WebDriver,
    live_server,
    settings: LazySettings,
    roles: dict,
    request: pytest.FixtureRequest,
    screenshot: Callable[[str], Path],
) -> Iterator[Callable[..., None]]:
    """login(username, password, path="/"): log in through the login form, as a user would,
    and land on `path` (the login page's ?next=). The page then polls every POLL_SECONDS
    (pushed changes come on top).
    At the end: a screenshot and the browser's console (in ARTIFACTS) if the test failed, then
    logged out."""
    # Also while the pushed stream is up (ward/events.py): the tests were written for polling,
    # and some change what the stream does not carry (units and beds made in one go).
    settings.WARD_POLL_SECONDS = settings.WARD_PUSH_POLL_SECONDS = POLL_SECONDS
    # No consumer runs here: one heartbeat taken as alive for the test, so that the pages show
    # no "ALARMS NOT PROCESSED" banner (test_browser.py's lost connection test shows it).
    settings.ALARM_PROCESSING_STOPPED_AFTER = 24 * 3600
    alarm_processing_heartbeat_record(process="browser-tests")
    viewport(browser, *STATION)

    def log_in(username: str, password: str, path: str = "/") -> None:
        browser.get(f"{live_server.url}/login/?next={path}")
        browser.find_element(By.ID, "id_username").send_keys(username)
        browser.find_element(By.ID, "id_password").send_keys(password)
        browser.find_element(By.CSS_SELECTOR, ".login-card button[type=submit]").click()
        wait_until(
            browser,
            lambda b: b.execute_script("return location.pathname") == path,
            f"{username} logged in and on {path}",
        )

    yield log_in
    if getattr(request.node, "failed_call", False):
        screenshot("FAILED")
        console = "\n".join(str(entry) for entry in browser.get_log("browser"))
        (ARTIFACTS / f"{request.node.name}-FAILED-console.log").write_text(console)
    # Every cookie of every site (delete_all_cookies only clears the current page's), and a
    # blank page: the next test starts logged out, with nothing polling.
    browser.execute_cdp_cmd("Network.clearBrowserCookies", {})
    browser.get("about:blank")
