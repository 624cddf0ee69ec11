import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from io import StringIO

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError, CommandParser
from rest_framework.authtoken.models import Token

from core.cli import ExamplesCommand
from core.exceptions import KafkaUnavailable
from core.kafka import admin_create, bootstrap_address, broker_check
from core.permissions import CLINICIAN, VIEWER, role_groups_ensure, user_role_assign
from core.ports import port_free, port_free_next, port_holder
from core.process import die_with_parent, process_stop, stop_on_signals

DEMO_USERNAME = "admin"
DEMO_PASSWORD = "icu-demo-password"  # noqa: S105 (a local demo account, printed on purpose)
# Demo users of each role (core/permissions.py), with the same password.
DEMO_ROLE_USERS = {"nurse": CLINICIAN, "observer": VIEWER}
# A small ward that tells a story: one stable patient and two who deteriorate, so that NEWS2
# scores rise and alarms appear within minutes (with DEMO_SPEED).
DEFAULT_PATIENTS = ["alice:stable", "bob:sepsis", "carol:respiratory_failure"]
# On a ventilator: their readings carry end-tidal CO2 (the ward shows it, rising in carol's
# respiratory failure).
DEFAULT_VENTILATED = ["carol"]
# Simulated seconds per second: 6 hours of sepsis unfold in 6 minutes.
DEMO_SPEED = 60.0
# The HL7 gateway's port (MLLP's registered port, 2575) and the patient whose monitor speaks HL7.
HL7_PORT = 2575
HL7_DEMO_PATIENT = "dave"


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen | None = None
    # How it is asked to stop (process_stop).
    stop_signal: int = signal.SIGTERM


class Command(ExamplesCommand):
    help = """Run the whole pipeline on this machine, for development and demos (`make run`).

Starts, as child processes: the embedded broker (unless one already answers at
KAFKA_BOOTSTRAP_SERVERS), the consumer, one emulator with a few patients, Django's
development web server, whose central station (the ward, live) is at http://127.0.0.1:PORT/,
the push process that streams the pages' updates (server-sent events, /events/: gunicorn's asgi
worker on --push-port, as docker-compose.yml's `push` service; the pages are told its port
through WARD_EVENTS_PORT), the worker that runs the exports in the background (db_worker),
and the HL7 gateway (run_hl7_gateway, on --hl7-port) with one more patient, dave, whose
monitor speaks HL7 to it (IHE PCD-01 over MLLP, run_patient --via-hl7), as a real bedside
monitor would.
Creates a demo superuser, a clinician (nurse) and a viewer (observer), and prints the URLs and
the logins. Ctrl-C stops everything; if any part exits on its own, the rest is stopped too.

The default ward is alice (stable), bob (sepsis) and carol (respiratory failure), their
physiology running --speed times faster than the clock, so that within a few minutes bob's and
carol's NEWS2 rise and their alarms appear; carol is ventilated (end-tidal CO2 in her
readings). NAME:SCENARIO works as in run_patient; --ventilated NAME puts one of them on a
ventilator (its own emulator process, run_patient --ventilated).

Every port is checked before anything starts: when the web server's port (--port), the push
process's (--push-port), the HL7 gateway's (--hl7-port) or the broker's
(KAFKA_BOOTSTRAP_SERVERS) is taken (say, by a first `make run`), it says by what and
how to run a second instance, and exits having started nothing.

Local use only: it requires DEBUG=true and prints a known password.

examples:
  python manage.py run_dev
  python manage.py run_dev --name erin --name frank:cardiac_arrest --interval 1 --port 8001
  python manage.py run_dev --name erin --name frank:respiratory_failure --ventilated frank
  python manage.py run_dev --speed 1   # real time: sepsis takes 6 hours
  python manage.py run_dev --hl7-port 2576     # the HL7 gateway on another port
  python manage.py run_dev --push-port 8011    # the pages' stream on another port
  KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9093 python manage.py run_dev --port 8002 --hl7-port 2576
                                               # a second one (its stream on 8003)
"""

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--name",
            action="append",
            default=None,
            metavar="NAME[:SCENARIO]",
            help=f"Emulated patient; repeat for more (default: {', '.join(DEFAULT_PATIENTS)}).",
        )
        parser.add_argument(
            "--ventilated",
            action="append",
            default=None,
            metavar="NAME",
            help="A patient (of --name) on a ventilator: end-tidal CO2 in their readings; repeat "
            f"for more (default: {', '.join(DEFAULT_VENTILATED)} when --name is not given).",
        )
        parser.add_argument(
            "--speed",
            type=float,
            default=DEMO_SPEED,
            help="Simulated seconds per second for the emulated patients "
            f"(default {DEMO_SPEED:g}).",
        )
        parser.add_argument(
            "--interval",
            type=float,
            default=None,
            help="Seconds between readings (default METRICS_INTERVAL).",
        )
        parser.add_argument(
            "--port", type=int, default=8000, help="Web server port (default 8000)."
        )
        parser.add_argument(
            "--push-port",
            type=int,
            default=None,
            help="Port of the push process, the pages' stream of updates (default: --port + 1).",
        )
        parser.add_argument(
            "--hl7-port",
            type=int,
            default=HL7_PORT,
            help=f"HL7 gateway (MLLP) port (default {HL7_PORT}).",
        )

    def handle(self, *args: object, **options: object) -> None:
        if not settings.DEBUG:
            raise CommandError("run_dev is for local use: set DEBUG=true (make run does).")
        known = {n.split(":", 1)[0] for n in options["name"] or DEFAULT_PATIENTS}
        if unknown := sorted(set(options["ventilated"] or ()) - known):
            raise CommandError(
                f"--ventilated {', '.join(unknown)}: not an emulated patient "
                f"({', '.join(sorted(known))}); name them with --name too."
            )
        if HL7_DEMO_PATIENT in known:
            raise CommandError(
                f"--name {HL7_DEMO_PATIENT}: {HL7_DEMO_PATIENT} is the patient whose monitor "
                "speaks HL7 to the gateway (run_dev starts them); give another name."
            )
        # Before anything is started or written: a second `make run` touches nothing.
        push_port = options["push_port"] or options["port"] + 1
        hl7_port = options["hl7_port"]
        for option, other in (("--port", options["port"]), ("--hl7-port", hl7_port)):
            if push_port == other:
                raise CommandError(f"--push-port {push_port}: {option}'s too; give another.")
        broker_needed = ports_check(
            web_port=options["port"], push_port=push_port, hl7_port=hl7_port
        )
        if not port_free(host="127.0.0.1", port=hl7_port):
            raise CommandError(
                f"127.0.0.1:{hl7_port} (the HL7 gateway's port) is in use by "
                f"{port_holder(port=hl7_port)}; nothing was started. Give run_dev another "
                f"--hl7-port, e.g. --hl7-port {port_free_next(host='127.0.0.1', after=hl7_port)}."
            )
        token = demo_user_ensure()
        # The demo unit and its beds (units/; by command name: core imports no app above it).
        call_command("units_demo", stdout=StringIO())
        manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        names = options["name"] or DEFAULT_PATIENTS
        ventilated = options["ventilated"]
        if ventilated is None:
            ventilated = [] if options["name"] else DEFAULT_VENTILATED
        emulators = [
            (label, [n for n in names if (n.split(":", 1)[0] in ventilated) == on_ventilator])
            for label, on_ventilator in (("emulator", False), ("ventilated", True))
        ]
        timing = ["--speed", str(options["speed"]), "--broker-timeout", "30"]
        if options["interval"] is not None:
            timing += ["--interval", str(options["interval"])]
        address = f"127.0.0.1:{options['port']}"

        children = []
        if broker_needed:
            children.append(Child("broker", [*manage, "run_broker"]))
        children += [
            Child("consumer", [*manage, "consume_vitals", "--broker-timeout", "30"]),
            *(
                Child(
                    label,
                    [
                        *manage,
                        "run_patient",
                        *(arg for n in group for arg in ("--name", n)),
                        *timing,
                        *(["--ventilated"] if label == "ventilated" else []),
                    ],
                )
                for label, group in emulators
                if group
            ),
            Child("web", [*manage, "runserver", address, "--noreload"]),
            # The pages' stream of changes, served as in production (docker-compose.yml's
            # `push`): gunicorn's asgi worker, one process (one change watcher), an asyncio task
            # per page instead of runserver's thread.
            Child(
                "push",
                [
                    *(sys.executable, "-m", "gunicorn", "--chdir", str(settings.BASE_DIR)),
                    *("-c", str(settings.BASE_DIR / "gunicorn.conf.py")),
                    *("--worker-class", "asgi", "--workers", "1", "icu.asgi"),
                ],
                # gunicorn's quick shutdown: on SIGTERM it would wait graceful_timeout (20 s)
                # for the pages' streams, which last minutes, to end.
                stop_signal=signal.SIGINT,
            ),
            # The exports' jobs (django-tasks); polls the database every half second.
            Child("worker", [*manage, "db_worker", "--no-reload", "--interval", "0.5"]),
            Child(
                "gateway",
                [*manage, "run_hl7_gateway", "--port", str(hl7_port), "--broker-timeout", "30"],
            ),
        ]
        # dave's monitor speaks HL7 to the gateway (no broker for it: --broker-timeout is not
        # its option).
        speed = ["--speed", str(options["speed"]), *timing[4:]]
        via = ["--via-hl7", f"127.0.0.1:{hl7_port}"]
        demo = [*manage, "run_patient", "--name", HL7_DEMO_PATIENT, *via, *speed]
        children.append(Child("hl7-demo", demo))

        env = {
            **os.environ,
            "LOG_FORMAT": os.environ.get("LOG_FORMAT", "text"),
            "PYTHONUNBUFFERED": "1",  # lines reach the terminal as they are written
        }
        # The web server tells the pages where their stream is; the push process listens there
        # (gunicorn.conf.py's bind, which also names its Prometheus directory).
        child_env = {
            "web": {**env, "WARD_EVENTS_PORT": str(push_port)},
            "push": {
                **env,
                "GUNICORN_BIND": f"127.0.0.1:{push_port}",
                # The pages' origin, let in exactly (ward/views.py, _origin_allowed).
                "CSRF_TRUSTED_ORIGINS": ",".join(
                    [
                        *filter(None, [env.get("CSRF_TRUSTED_ORIGINS", "")]),
                        f"http://127.0.0.1:{options['port']}",
                        f"http://localhost:{options['port']}",
                    ]
                ),
            },
        }
        with stop_on_signals() as stop:
            try:
                for child in children:
                    child.process = subprocess.Popen(
                        child.argv,
                        env=child_env.get(child.name, env),
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        preexec_fn=die_with_parent,
                        # Own process group: Ctrl-C reaches only us; we stop the children in order.
                        start_new_session=True,
                    )
                    threading.Thread(target=self._relay, args=(child,), daemon=True).start()
                    if child.name == "broker":
                        self._wait_for_broker(child, stop)
                    if child.name == "gateway":
                        self._wait_for_port(child, hl7_port, stop)
                    if child.name == "push":
                        self._wait_for_port(child, push_port, stop)
                self._banner(
                    address,
                    token,
                    names,
                    ventilated,
                    options["speed"],
                    hl7_port=hl7_port,
                    push_port=push_port,
                )
                failed = self._supervise(children, stop)
            finally:
                self._stop_all(children)
        if failed:
            raise CommandError(f"{failed.name} exited with status {failed.process.returncode}.")

    def _relay(self, child: Child) -> None:
        """Copy a child's output to ours, each line prefixed with the child's name."""
        for raw in child.process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.stdout.write(f"{child.name:>8} | {line}")

    def _wait_for_broker(self, broker: Child, stop: threading.Event) -> None:
        deadline = time.monotonic() + 30
        while not stop.is_set() and broker.process.poll() is None:
            if _broker_answers() or time.monotonic() > deadline:
                return
            time.sleep(0.2)

    def _wait_for_port(self, child: Child, port: int, stop: threading.Event) -> None:
        """Until the child listens on `port` (30 s at most), so that who connects finds it."""
        deadline = time.monotonic() + 30
        while not stop.is_set() and child.process.poll() is None:
            if not port_free(host="127.0.0.1", port=port) or time.monotonic() > deadline:
                return
            time.sleep(0.2)

    def _supervise(self, children: list[Child], stop: threading.Event) -> Child | None:
        while not stop.is_set():
            for child in children:
                if child.process.poll() is not None:
                    return child
            stop.wait(0.5)
        return None

    def _stop_all(self, children: list[Child]) -> None:
        # Producers first, broker last: the consumer commits its offsets to a live broker. The
        # worker finishes the export it is running (up to process_stop's timeout).
        order = [
            "hl7-demo",
            "emulator",
            "ventilated",
            "gateway",
            "web",
            "push",
            "worker",
            "consumer",
            "broker",
        ]
        for child in sorted(children, key=lambda c: order.index(c.name)):
            if child.process is not None:
                process_stop(child.process, signum=child.stop_signal)

    def _banner(
        self,
        address: str,
        token: str,
        names: list[str],
        ventilated: list[str],
        speed: float,
        *,
        hl7_port: int,
        push_port: int,
    ) -> None:
        who = f"{HL7_DEMO_PATIENT}'s monitor speaks HL7 (PCD-01) to it"
        api = f"http://{address}/{settings.API_PREFIX}"
        lines = [
            "",
            "ICU Monitor is running. Ctrl-C stops everything.",
            f"  central station (ward):   http://{address}/",
            f"  pushed updates (SSE):     http://127.0.0.1:{push_port}/events/",
            f"  patients (browsable API): {api}patients/",
            f"  API docs (Swagger UI):    {api}docs/",
            f"  admin:                    http://{address}/admin/",
            f"  login:                    {DEMO_USERNAME} / {DEMO_PASSWORD}  (local demo only)",
            "  roles:                    "
            + ", ".join(f"{name} ({role})" for name, role in DEMO_ROLE_USERS.items())
            + ", same password",
            f'  curl:  curl -H "Authorization: Token {token}" {api}patients/',
            f"  alarms:                   {api}alarms/?state=active",
            f"  exports (FHIR, CSV):      POST {api}patients/<uuid>/exports/, then its status_url",
            f"  FHIR search:              http://{address}/fhir/Observation?patient=<uuid>",
            f"  emulated patients: {', '.join(names)} at {speed:g}x speed"
            + (f" ({', '.join(ventilated)} ventilated)" if ventilated else "")
            + f"; broker {settings.KAFKA_BOOTSTRAP_SERVERS} (in memory only)",
            f"  HL7 gateway (MLLP):       127.0.0.1:{hl7_port}  ({who})",
            "",
        ]
        self.stdout.write(self.style.SUCCESS("\n".join(lines)))


def demo_user_ensure() -> str:
    """Create (or reset) the local demo superuser and the demo users of each role; return the
    superuser's API token."""
    users = get_user_model().objects
    user, _ = users.get_or_create(
        username=DEMO_USERNAME, defaults={"is_staff": True, "is_superuser": True}
    )
    user.is_staff = user.is_superuser = user.is_active = True
    user.set_password(DEMO_PASSWORD)
    user.save()
    token, _ = Token.objects.get_or_create(user=user)
    role_groups_ensure()
    for username, role in DEMO_ROLE_USERS.items():
        member, _ = users.get_or_create(username=username)
        member.is_active = True
        member.set_password(DEMO_PASSWORD)
        member.save()
        user_role_assign(user=member, role=role)
    return token.key


def ports_check(*, web_port: int, push_port: int, hl7_port: int) -> bool:
    """Check every port run_dev would listen on, before it starts anything; return whether it
    must start the broker (False: one answers at KAFKA_BOOTSTRAP_SERVERS, e.g. docker compose's
    Kafka, and is used). A port in use raises a one-line CommandError: the port, what holds it
    and how to run a second instance."""
    try:
        host, broker_port = bootstrap_address()
    except KafkaUnavailable as exc:
        raise CommandError(exc.message) from None
    ports = {"web": web_port, "broker": broker_port, "hl7": hl7_port}
    if not port_free(host="127.0.0.1", port=web_port):
        where = f"127.0.0.1:{web_port} (the web server's port)"
        raise _port_in_use(where, port_holder(port=web_port), ports)
    if not port_free(host="127.0.0.1", port=push_port):
        where = f"127.0.0.1:{push_port} (the push process's port, the pages' stream)"
        holder = port_holder(port=push_port)
        if holder.startswith("run_dev "):  # another instance: its broker is in the way too
            raise _port_in_use(where, holder, ports)
        free = port_free_next(host="127.0.0.1", after=push_port, avoid={web_port, broker_port})
        raise CommandError(
            f"{where} is in use by {holder}; nothing was started. Give run_dev another "
            f"--push-port, e.g. --push-port {free}."
        )
    try:
        broker_free = port_free(host=host, port=broker_port)
    except OSError:  # not this machine: a broker elsewhere, used if it answers
        return not _broker_answers()
    if broker_free:
        return True
    where = f"{host}:{broker_port} (the broker's port, KAFKA_BOOTSTRAP_SERVERS)"
    holder = port_holder(port=broker_port)
    if holder.startswith("run_dev "):  # another run_dev's broker: not to be shared
        raise _port_in_use(where, holder, ports)
    if _broker_answers():
        return False
    raise _port_in_use(where, f"{holder}, which does not answer as a Kafka broker", ports)


def _port_in_use(where: str, holder: str, ports: dict[str, int]) -> CommandError:
    # A web port whose next is free too: the second instance's push process (--push-port's
    # default) listens there.
    web = port_free_next(host="127.0.0.1", after=ports["web"])
    while not port_free(host="127.0.0.1", port=web + 1):
        web = port_free_next(host="127.0.0.1", after=web + 1)
    broker = port_free_next(host="127.0.0.1", after=ports["broker"], avoid={web, web + 1})
    # The HL7 gateway's too, when the first instance holds it.
    hl7 = ""
    if not port_free(host="127.0.0.1", port=ports["hl7"]):
        avoid = {web, web + 1, broker}
        hl7 = f" --hl7-port {port_free_next(host='127.0.0.1', after=ports['hl7'], avoid=avoid)}"
    return CommandError(
        f"{where} is in use by {holder}; nothing was started. To run a second instance, give it "
        "its own ports (and so its own broker and topics): "
        f"KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{broker} .venv/bin/python manage.py run_dev "
        f"--port {web}{hl7}"
    )


def _broker_answers() -> bool:
    try:
        broker_check(admin_create(), timeout=1.0)
    except KafkaUnavailable:
        return False
    return True
