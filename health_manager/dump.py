"""`health_manager dump`: what a running health manager knows, read over its HTTP API.

Owns finding the status URL and credentials (flags, else the `-c` config file: status.port,
status.user, status.password, and the local_route address the server binds), reading every
page of /v1/apps (or /v1/apps/GUID), and printing a table with unhealthy apps first, or the
JSON. It talks to the health manager only over HTTP; when that fails it prints one line
saying why and exits 1.
"""

import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

from health_manager.component import LOOPBACK, local_ip
from health_manager.config import ConfigError, load_config
from health_manager.tap import default_config_path

PAGE = 2000
TIMEOUT = 10.0
EXIT_UNREACHABLE = 1
EXIT_USAGE = 2


class DumpError(Exception):
    """Why the dump could not be made, in one line."""


def parse_args(argv, environ):
    parser = argparse.ArgumentParser(
        prog="health_manager dump",
        description="Print the app state a running health manager holds, read from its "
                    "status port (/v1/apps). Unhealthy apps come first.")
    parser.add_argument("-c", "--config", help="the health manager's config file (for the "
                        "status port and credentials; default: "
                        f"{default_config_path(environ)})")
    parser.add_argument("--url", help="status server URL, e.g. http://127.0.0.1:8080 "
                        "(default: from the config)")
    parser.add_argument("--user", help="status.user (default: from the config)")
    parser.add_argument("--password", help="status.password (default: from the config)")
    parser.add_argument("--app", metavar="GUID", help="one app in detail")
    parser.add_argument("--json", action="store_true", help="print the API's JSON")
    return parser.parse_args(argv)


def endpoint(args, environ, route_ip=local_ip):
    """(base URL, user, password) from the flags, completed from the config file."""
    url, user, password = args.url, args.user, args.password
    if url is None or user is None or password is None:
        path = args.config or default_config_path(environ)
        try:
            config, _warnings = load_config(path, environ)
        except ConfigError as e:
            raise DumpError(f"{e} (or pass --url, --user and --password)") from None
        status = config.status
        if url is None:
            if status.port == 0:
                raise DumpError(f"status.port is 0 (an ephemeral port) in {path}: "
                                "pass --url")
            ip = route_ip(config.local_route) if config.local_route else None
            url = f"http://{ip or LOOPBACK}:{status.port}"
        if user is None or password is None:
            if status.credentials_generated:
                raise DumpError(f"{path} sets no status.user/status.password (the health "
                                "manager generated them): pass --user and --password")
            user = status.user if user is None else user
            password = status.password if password is None else password
    return url.rstrip("/"), user, password


class Client:
    """GETs JSON from the status server with basic auth."""

    def __init__(self, base, user, password, opener=urllib.request.urlopen):
        self._base = base
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._auth = f"Basic {token}"
        self._open = opener

    def get(self, path):
        request = urllib.request.Request(self._base + path,
                                         headers={"Authorization": self._auth})
        try:
            with self._open(request, timeout=TIMEOUT) as response:
                return json.load(response)
        except urllib.error.HTTPError as e:
            if e.code == 401:
                raise DumpError(f"{self._base} refused the status credentials (HTTP 401)") \
                    from None
            if e.code == 404 and path.startswith("/v1/apps/"):
                raise DumpError(f"the health manager at {self._base} knows no app "
                                f"{urllib.parse.unquote(path[9:])}") from None
            raise DumpError(f"GET {self._base}{path} answered HTTP {e.code}") from None
        except urllib.error.URLError as e:
            raise DumpError(f"cannot reach the health manager at {self._base}: "
                            f"{getattr(e.reason, 'strerror', None) or e.reason}") from None
        except (OSError, ValueError) as e:
            raise DumpError(f"cannot read {self._base}{path}: {e}") from None

    def apps(self):
        """(summary, every app entry), following the pages."""
        start, apps, summary = 0, [], None
        while start is not None:
            page = self.get(f"/v1/apps?limit={PAGE}&start={start}")
            summary = page["summary"]
            apps.extend(page["apps"])
            start = page["next"]
        return summary, apps

    def app(self, guid):
        return self.get("/v1/apps/" + urllib.parse.quote(guid, safe=""))


def _cell(value):
    return "-" if value is None else str(value)


def table(header, rows):
    """Left-aligned columns, the last one unpadded (it holds the reason)."""
    rows = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = []
    for row in [header] + rows:
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths)] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def format_summary(s):
    parts = [f"role {s['ha_role']}", f"NATS {s['nats']}",
             f"desired state {s['desired_state']}", f"actual state {s['actual_state']}"]
    figures = (f"{s['apps']} apps, {_cell(s['instances'])} instances: "
               f"{_cell(s['running'])} running, {_cell(s['missing'])} missing, "
               f"{_cell(s['crashed'])} crashed, {_cell(s['flapping'])} flapping; "
               f"queue {s['queue_length']}")
    lines = ["health manager: " + ", ".join(parts), figures]
    if s.get("not_acting"):
        lines.append(f"not acting: {s['not_acting']}")
    return "\n".join(lines)


def format_apps(summary, apps):
    ordered = sorted(apps, key=lambda a: not a["unhealthy"])  # stable: registry order kept
    rows = [[a["app"], "UNHEALTHY" if a["unhealthy"] else "ok", a["state"],
             a["desired_instances"], a["running"], a["missing"], a["crashed"], a["flapping"],
             a["extra"], _seconds(a["next_restart_in"]), a["reason"] or ""]
            for a in ordered]
    header = ["APP", "HEALTH", "STATE", "DESIRED", "RUNNING", "MISSING", "CRASHED",
              "FLAPPING", "EXTRA", "RESTART IN", "REASON"]
    unhealthy = sum(1 for a in apps if a["unhealthy"])
    return "\n".join([format_summary(summary), "",
                      f"{unhealthy} of {len(apps)} apps unhealthy", "",
                      table(header, rows) if rows else "(no apps)"])


def _seconds(value):
    return None if value is None else f"{value:g} s"


def format_app(detail):
    lines = [f"app {detail['app']}: {detail['state']} {detail['package_state']}, version "
             f"{detail['version']}, {detail['desired_instances']} desired; "
             f"{detail['running']} running, {detail['missing']} missing, "
             f"{detail['crashed']} crashed, {detail['flapping']} flapping, "
             f"{detail['extra']} extra",
             f"desired state heard {_seconds(detail['desired_state_age'])} ago; next missing "
             f"check in {_seconds(detail['missing_check_in'])}"]
    if detail["reason"]:
        lines.append(f"reason: {detail['reason']}")
    rows = []
    for version, instances in detail["versions"].items():
        for i in instances:
            rows.append([version, i["index"], i["state"], i["guid"],
                         _seconds(i["heartbeat_age"]), i["crash_count"],
                         _seconds(i["next_restart_in"]), "yes" if i["given_up"] else "no",
                         i["reason"] or ""])
    header = ["VERSION", "INDEX", "STATE", "GUID", "HEARTBEAT AGE", "CRASHES", "RESTART IN",
              "GIVEN UP", "REASON"]
    return "\n".join(lines + ["", table(header, rows) if rows else "(no instances)"])


def main(argv=None, environ=None, out=None, err=None, opener=urllib.request.urlopen):
    """Run `health_manager dump`; returns the exit code."""
    environ = os.environ if environ is None else environ
    out = out or sys.stdout
    err = err or sys.stderr
    args = parse_args(sys.argv[1:] if argv is None else argv, environ)
    try:
        client = Client(*endpoint(args, environ), opener=opener)
        if args.app is not None:
            detail = client.app(args.app)
            text = (json.dumps(detail, indent=2) if args.json else format_app(detail))
        else:
            summary, apps = client.apps()
            text = (json.dumps({"summary": summary, "apps": apps}, indent=2) if args.json
                    else format_apps(summary, apps))
    except DumpError as e:
        err.write(f"health_manager dump: {e}\n")
        return EXIT_UNREACHABLE
    out.write(text + "\n")
    return 0
