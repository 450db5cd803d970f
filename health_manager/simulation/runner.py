"""`health_manager simulate`: an embedded nats-server, the simulated foundation and the
health manager in one process, a timeline of faults, the live view and the verdict.

Timeline: the apps start with some instances missing; for the first 60 % of `--duration`
(the chaos) instances are crashed or silently killed and one DEA is evacuated; then the
faults stop and the health manager must heal everything. The run ends as soon as the
foundation is healed after the chaos, and exits 0; at `--duration` plus `--grace` seconds at
the latest, NOT HEALED, exit 1. Interrupted (Ctrl-C, SIGTERM) it says so and exits 130.
Whatever happens nats-server is stopped before the process exits. The seed is printed, with
the command that reruns the same foundation and faults.

`--cc-protocol hm9000`: the CC speaks HM9000's contract (HM9000.md §1.4), every other DEA
heartbeats over HTTPS with a client certificate (certificates made for the run in a temporary
directory, removed at the end), and DEAs evacuate with EVACUATING heartbeats, once as
before Jun 2016 (with `droplet.exited` DEA_EVACUATION too) and once as after.
"""

import argparse
import math
import random
import shutil
import socket
import sys
import tempfile

from twisted.internet import defer
from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)
from zope.interface import implementer

from health_manager.bus import NatsBus
from health_manager.config import build_config
from health_manager.manager import Manager
from health_manager.simulation import ha_run
from health_manager.simulation.certificates import (
    LISTENER_HOST,
    client_tls_options,
    make_certificates,
)
from health_manager.simulation.foundation import (
    EVACUATE_BY_EXITS,
    EVACUATE_BY_EXITS_AND_HEARTBEATS,
    EVACUATE_BY_HEARTBEATS,
    Foundation,
    Scenario,
    demo_config,
    hm9000_demo_config,
)
from health_manager.simulation.heartbeats import HttpsHeartbeats
from health_manager.simulation.nats_server import NatsServer
from health_manager.simulation.timers import SimulationTimers
from health_manager.simulation.view import Progress, View
from health_manager.tap import install_asyncio_reactor

CHAOS_FRACTION = 0.6
SHUTDOWN_TIMEOUT = 8.0
EXIT_NOT_HEALED = 1
EXIT_FAILED = 2
EXIT_INTERRUPTED = 130
BASE_GRACE = 15
CC_PROTOCOLS = ("hm2", "hm9000")


def demo_starts_per_second():
    """The demo configuration's rate limit (queue_batch_size per request_queue): healing
    can go no faster, so the default grace grows with the foundation's size."""
    intervals = demo_config("", "")["intervals"]
    return intervals["queue_batch_size"] / intervals["request_queue"]
# The options that decide a run, in the order the rerun command lists them.
RERUN_OPTIONS = ("apps", "instances", "crashy", "flapping", "missing", "deas", "duration",
                 "grace", "crash_period", "fault_interval")


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="health_manager simulate",
        description="Run a simulated Cloud Foundry foundation (fake Cloud Controller, "
                    "simulated DEAs, embedded nats-server) with the health manager, inject "
                    "faults, and show it being healed.")
    parser.add_argument("--apps", type=int, default=20, help="apps to create (20)")
    parser.add_argument("--instances", type=int, default=3, help="instances per app (3)")
    parser.add_argument("--crashy", type=float, default=0.2,
                        help="fraction of apps crashing every --crash-period s while the "
                             "faults last (0.2)")
    parser.add_argument("--flapping", type=float, default=0.1,
                        help="fraction of apps crashing on every start (0.1)")
    parser.add_argument("--missing", type=float, default=0.2,
                        help="fraction of instances not running at the start (0.2)")
    parser.add_argument("--deas", type=int, default=4, help="simulated DEAs (4)")
    parser.add_argument("--duration", type=float, default=40, help="seconds to run (40)")
    parser.add_argument("--grace", type=float, default=None,
                        help="extra seconds allowed for healing after --duration (default: "
                             f"{BASE_GRACE}, plus the seconds the health manager's rate "
                             f"limit of {demo_starts_per_second():g} starts/s needs to start "
                             "every desired instance once)")
    parser.add_argument("--crash-period", type=float, default=12,
                        help="seconds between crashes of a crashy app (12)")
    parser.add_argument("--fault-interval", type=float, default=2,
                        help="seconds between injected crashes/kills (2)")
    parser.add_argument("--no-evacuation", action="store_true",
                        help="do not evacuate a DEA")
    parser.add_argument("--cc-protocol", choices=CC_PROTOCOLS, default="hm2",
                        help="the Cloud Controller's contract: hm2 (HM 2.0's, default) or "
                             "hm9000 (HM9000's; half the DEAs heartbeat over HTTPS)")
    parser.add_argument("--seed", type=int, default=None,
                        help="random seed (default: a new one, printed)")
    parser.add_argument("--plain", action="store_true",
                        help="plain periodic lines even on a terminal")
    parser.add_argument("--log", metavar="FILE", help="write the full log to FILE")
    ha_run.add_arguments(parser)
    args = parser.parse_args(argv)
    ha_run.check_arguments(parser, args)
    if args.ha and args.cc_protocol != "hm2":
        parser.error("--ha runs the hm2 contract only")
    for name in ("apps", "instances", "deas"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    for name in ("crashy", "flapping", "missing"):
        if not 0 <= getattr(args, name) <= 1:
            parser.error(f"--{name} must be a fraction between 0 and 1")
    if args.crashy + args.flapping > 1:
        parser.error("--crashy plus --flapping must not exceed 1")
    for name in ("duration", "crash_period", "fault_interval"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.grace is None:
        args.grace = BASE_GRACE + math.ceil(args.apps * args.instances
                                            / demo_starts_per_second())
    if args.grace < 0:
        parser.error("--grace must not be negative")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)
    return args


def rerun_command(args):
    """The command line that runs the same foundation and faults again."""
    words = ["health_manager", "simulate", "--seed", str(args.seed)]
    for name in RERUN_OPTIONS:
        words += [f"--{name.replace('_', '-')}", f"{getattr(args, name):g}"]
    if args.no_evacuation:
        words.append("--no-evacuation")
    if args.cc_protocol != "hm2":
        words += ["--cc-protocol", args.cc_protocol]
    return " ".join(words)


async def start_foundation_and_hm(reactor, nats_url, scenario, rng, connected,
                                  cc_protocol="hm2", certificates_dir=None):
    """A new bus to `nats_url`, the foundation of `scenario` on it and the health manager on
    the demo configuration: (bus, foundation, manager), the apps populated once the health
    manager runs. `connected(bus)` fires once the bus is connected. With `cc_protocol`
    "hm9000" the certificates for HTTPS heartbeats are written to `certificates_dir`."""
    bus = NatsBus(reactor, nats_url, name="simulation")
    bus.start()
    await connected(bus)
    hm9000 = None
    if cc_protocol == "hm9000":
        hm9000 = HttpsHeartbeatSetup(reactor, certificates_dir)
    foundation = Foundation(reactor, bus, scenario, rng, cc_protocol=cc_protocol,
                            https_heartbeats=hm9000.sender if hm9000 else None)
    foundation.cc.listen()
    await foundation.start()
    await bus.flush()
    if hm9000 is None:
        raw = demo_config(nats_url, foundation.cc.url)
    else:
        raw = hm9000_demo_config(nats_url, foundation.cc.url, foundation.cc.user,
                                 foundation.cc.password, hm9000.port, hm9000.files)
    config, warnings = build_config(raw, environ={})
    for warning in warnings:
        _log.warn("health manager configuration: {warning}", warning=warning)
    manager = Manager(config, reactor)
    manager.startService()
    foundation.populate()
    return bus, foundation, manager


class HttpsHeartbeatSetup:
    """What HTTPS heartbeats need: certificates in `directory`, a free loopback port for the
    health manager's listener, and a sender per DEA posting there."""

    def __init__(self, reactor, directory):
        self._reactor = reactor
        self.files = make_certificates(directory)
        self.port = free_port()
        self.url = f"https://{LISTENER_HOST}:{self.port}"
        self._tls = client_tls_options(self.files, LISTENER_HOST)

    def sender(self, dea_uuid):
        return HttpsHeartbeats(self._reactor, self.url, self._tls)


def evacuation_plan(cc_protocol, chaos_end):
    """(seconds into the run, how) of each DEA evacuation: in the HM9000 era DEAs evacuated
    with EVACUATING heartbeats, until Jun 2016 also announcing `droplet.exited`
    DEA_EVACUATION (HM9000.md §3.5, §5.6), so such a foundation sees one of each."""
    if cc_protocol == "hm9000":
        return [(chaos_end / 3, EVACUATE_BY_EXITS_AND_HEARTBEATS),
                (chaos_end * 2 / 3, EVACUATE_BY_HEARTBEATS)]
    return [(chaos_end / 2, EVACUATE_BY_EXITS)]


def https_heartbeat_counts(senders):
    """(accepted, refused, failed) over HttpsHeartbeats senders; None when there are none."""
    if not senders:
        return None
    return (sum(s.accepted for s in senders), sum(s.refused for s in senders),
            sum(s.failed for s in senders))


def free_port():
    """A loopback TCP port nothing listens on right now. The health manager binds it a
    moment later; another process taking it first makes the listener fail loudly."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


_log = Logger()


@implementer(ILogObserver)
class ErrorCounter:
    """A log observer counting error events (shown in the view) and, in plain mode,
    echoing them to stderr."""

    def __init__(self, echo=None):
        self.count = 0
        self._echo = echo

    def __call__(self, event):
        if event.get("log_level") in (LogLevel.error, LogLevel.critical):
            self.count += 1
            if self._echo is not None:
                self._echo(event)


class SimulationRun:
    """One run: builds everything on `reactor`, drives the timeline, always cleans up."""

    log = Logger()

    def __init__(self, reactor, args, out, errors):
        self._reactor = reactor
        self._args = args
        self._errors = errors
        self._rng = random.Random(args.seed)
        self.scenario = Scenario(
            apps=args.apps, instances=args.instances, crashy=args.crashy,
            flapping=args.flapping, missing=args.missing, deas=args.deas,
            crash_period=args.crash_period)
        self._out = out
        self.view = View(out, tty=not args.plain and out.isatty())
        self.nats = NatsServer(die_with_parent=True)
        self.exit_code = EXIT_FAILED
        self.phase = "starting"
        self.calm_at = None  # when the chaos ended
        self.healed_at = None
        self.injected_crashes = self.injected_kills = self.evacuations = 0
        # Set by start(); the timeline callbacks below run only after it.
        self.bus: NatsBus | None = None
        self.foundation: Foundation | None = None
        self.manager: Manager | None = None
        self.status_url = ""
        self._timers = SimulationTimers(reactor)
        self._certificates_dir = (tempfile.mkdtemp(prefix="hm-simulate-")
                                  if args.cc_protocol == "hm9000" else None)
        self._began = None
        self._finished = False

    # --- start -----------------------------------------------------------------------------

    def begin(self):
        d = defer.Deferred.fromCoroutine(self._begin())
        d.addErrback(self._failed)

    async def _begin(self):
        self.nats.start()
        self.bus, self.foundation, self.manager = await start_foundation_and_hm(
            self._reactor, self.nats.url, self.scenario, self._rng,
            lambda bus: self._connected(bus, timeout=10), cc_protocol=self._args.cc_protocol,
            certificates_dir=self._certificates_dir)
        status = demo_config("", "")["status"]
        self.status_url = (f"http://{status['user']}:{status['password']}@"
                           f"{self.manager.status_server.host}/")
        if not self.view.tty:
            self._out.write(f"status page: {self.status_url}\n")
        self._began = self._reactor.seconds()
        self.phase = "chaos"
        chaos_end = self._args.duration * CHAOS_FRACTION
        self._timers.every(self._args.fault_interval, self._inject_fault, now=False)
        self._timers.every(0.5, self._tick, now=True)
        if not self._args.no_evacuation:
            for at, how in evacuation_plan(self._args.cc_protocol, chaos_end):
                self._reactor.callLater(at, self._evacuate, how)
        self._reactor.callLater(chaos_end, self._calm_down)

    def _connected(self, bus, timeout):
        """Fires once `bus` is connected; fails after `timeout` seconds."""
        connected: defer.Deferred[None] = defer.Deferred()

        def changed(up):
            if up and not connected.called:
                connected.callback(None)

        bus.add_connection_listener(changed)
        changed(bus.connected)
        return connected.addTimeout(timeout, self._reactor)

    def _failed(self, failure):
        self.log.failure("simulation failed", failure)
        sys.stderr.write(f"health_manager simulate: {failure.getErrorMessage()}\n")
        self.exit_code = EXIT_FAILED
        self._finished = True
        self._reactor.stop()

    # --- the timeline ----------------------------------------------------------------------

    def _inject_fault(self):
        if self.phase != "chaos":
            return
        # Two crashes (reported by droplet.exited) for each silent kill (found by the
        # missing-heartbeat check).
        assert self.foundation is not None
        if (self.injected_crashes + self.injected_kills) % 3 == 2:
            if self.foundation.kill_random() is not None:
                self.injected_kills += 1
        elif self.foundation.crash_random() is not None:
            self.injected_crashes += 1

    def _evacuate(self, how):
        assert self.foundation is not None
        if self.foundation.evacuate_one(how) is not None:
            self.evacuations += 1

    def _calm_down(self):
        self.phase = "settling"
        self.calm_at = self._reactor.seconds()
        assert self.foundation is not None
        self.foundation.calm_down()

    def _tick(self):
        assert self.foundation is not None
        snapshot = self.foundation.snapshot()
        elapsed = self._reactor.seconds() - self._began
        if self.phase == "settling" and snapshot.healthy and self.healed_at is None:
            self.healed_at = self._reactor.seconds()
        self.view.update(snapshot, self.progress(elapsed))
        if self.phase == "settling" and (
                snapshot.healthy or elapsed >= self._args.duration + self._args.grace):
            self.finish()

    def progress(self, elapsed):
        assert self.manager is not None and self.foundation is not None
        metrics = self.manager.metrics
        return Progress(
            elapsed=elapsed, duration=self._args.duration, phase=self.phase,
            injected_crashes=self.injected_crashes, injected_kills=self.injected_kills,
            evacuations=self.evacuations,
            hm_starts_sent=metrics.health_start_messages_sent,
            hm_stops_sent=metrics.health_stop_messages_sent,
            hm_given_up=metrics.flapping_restarts_given_up,
            errors=self._errors.count,
            heal_time=(None if self.healed_at is None else self.healed_at - self.calm_at),
            start_subject=self.foundation.cc.start_subject,
            stop_subject=self.foundation.cc.stop_subject,
            https_heartbeats=https_heartbeat_counts(self.foundation.https_senders),
            status_url=self.status_url)

    # --- the end ---------------------------------------------------------------------------

    def finish(self, stop_reactor=True):
        """Print the summary, decide the exit code, stop the reactor (once)."""
        if self._finished:
            return
        self._finished = True
        if self.foundation is not None and self._began is not None:
            snapshot = self.foundation.snapshot()
            if self.phase != "settling":
                self.phase = "interrupted"
            progress = self.progress(self._reactor.seconds() - self._began)
            self.view.summary(snapshot, progress)
            if self.phase == "interrupted":
                self.exit_code = EXIT_INTERRUPTED
            else:
                self.exit_code = 0 if snapshot.healthy else EXIT_NOT_HEALED
        if stop_reactor:
            self._reactor.stop()

    def shutdown(self):
        """Before reactor shutdown (also on Ctrl-C / SIGTERM): stop everything, bounded."""
        self.finish(stop_reactor=False)
        d = defer.Deferred.fromCoroutine(self._shutdown())
        d.addTimeout(SHUTDOWN_TIMEOUT, self._reactor)
        d.addErrback(lambda f: self.log.failure("shutdown did not finish cleanly", f))
        d.addBoth(lambda _: self.nats.stop())
        return d

    async def _shutdown(self):
        self._timers.stop()
        if self.manager is not None and self.manager.running:
            await self.manager.stopService()
        if self.foundation is not None:
            await defer.maybeDeferred(self.foundation.stop)
        if self.bus is not None:
            await self.bus.stop()
        if self._certificates_dir is not None:
            shutil.rmtree(self._certificates_dir, ignore_errors=True)


def _start_logging(args, tty):
    errors = ErrorCounter(echo=None if tty else textFileLogObserver(sys.stderr))
    observers: list[ILogObserver] = [errors]
    if args.log:
        log_file = open(args.log, "a", encoding="utf-8")
        observers.append(FilteringLogObserver(
            textFileLogObserver(log_file),
            [LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)]))
    globalLogBeginner.beginLoggingTo(observers, redirectStandardIO=False)
    return errors


def main(argv=None, out=None):
    """Run the simulation; returns the process exit code."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    out = out or sys.stdout
    reactor = install_asyncio_reactor()
    errors = _start_logging(args, tty=not args.plain and out.isatty())
    if args.ha:
        return ha_run.run(reactor, args, out)
    out.write(f"seed {args.seed}; to run the same foundation and faults again:\n"
              f"  {rerun_command(args)}\n")
    out.flush()
    run = SimulationRun(reactor, args, out, errors)
    reactor.addSystemEventTrigger("before", "shutdown", run.shutdown)
    reactor.callWhenRunning(run.begin)
    try:
        reactor.run()
    finally:
        # Also on an exception escaping the reactor: never leave nats-server behind.
        run.nats.stop()
    return run.exit_code
