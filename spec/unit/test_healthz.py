"""Unit tests: /healthz's text body and its choice between text and JSON (issue 18).

The CF collector's rule (cloudfoundry/collector `fetch_healthz`): healthy when
`body.strip.downcase == "ok"`. It must hold for every state and every reason text.
"""

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from health_manager.component import Component
from health_manager.metrics import Metrics
from health_manager.testing.bus import InMemoryBus
from health_manager.web.healthz import prefers_json, unavailable_body
from health_manager.web.status_server import StatusServer, Vitals
from spec.status_support import make_view
from spec.unit.test_status_server import START, VITALS, auth, http, make_config
from spec.unit.test_web_metrics import Standby
from spec.unit.view_rig import ViewRig


def collector_healthy(body: bytes) -> bool:
    """Ruby's `body.strip.downcase == "ok"` (strip: whitespace and NUL)."""
    return body.strip(b" \t\n\v\f\r\x00").lower() == b"ok"


class UnavailableBodyTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(st.sampled_from(["ok", "OK", " ok ", "\nok\n", "", "Ok\r\n"])
                    | st.text(), max_size=4))
    def test_never_reads_as_ok(self, reasons):
        """Whatever the reasons say (even `ok`, or nothing), the 503 body is not `ok`."""
        self.assertFalse(collector_healthy(unavailable_body(reasons)))

    def test_names_every_reason(self):
        """One line: `unavailable: ` and the reasons joined by `; `."""
        self.assertEqual(unavailable_body(["NATS is not connected", "desired state lost"]),
                         b"unavailable: NATS is not connected; desired state lost\n")


class PrefersJsonTests(SynchronousTestCase):
    def test_examples(self):
        """JSON only when application/json is named and ranks above text/plain."""
        cases = {
            None: False,
            "": False,
            "*/*": False,  # curl, HTTParty (the collector), Net::HTTP
            "text/plain": False,
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8": False,
            "application/json": True,
            "Application/JSON; charset=utf-8": True,
            "application/json, */*": True,
            "application/json;q=0.5, */*": False,
            "application/json, text/plain": False,
            "application/json, text/*;q=0.5": True,
            "text/plain;q=0.2, application/json;q=0.4": True,
            "application/json;q=0": False,
            "application/json;q=nonsense": False,
            "application/json;q=2, text/plain": False,
            "application/*": False,
        }
        for accept, expected in cases.items():
            self.assertEqual(prefers_json(accept), expected, accept)

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.text())
    def test_any_header_without_json_gets_text(self, accept):
        """No Accept header that does not name application/json gets JSON, and none
        raises."""
        result = prefers_json(accept)
        if "application/json" not in accept.lower():
            self.assertFalse(result)


class CollectorRuleTests(SynchronousTestCase):
    """The rule over the status server's real resource, in every state of NATS and the
    desired state, asked as the collector asks (no format, Accept */* or none) and the
    other ways that get text."""

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
    @given(connected=st.booleans(), fresh=st.booleans(),
           loaded_ago=st.none() | st.integers(0, 1000), elapsed=st.integers(0, 1000),
           request=st.sampled_from([(b"", None), (b"", b"*/*"), (b"", b"text/plain"),
                                    (b"?format=text", b"application/json")]))
    def test_ok_iff_200(self, connected, fresh, loaded_ago, elapsed, request):
        clock = Clock()
        clock.advance(START)
        config = make_config()
        metrics = Metrics()
        view, desired = make_view(config, clock, metrics, lambda: connected)
        clock.advance(elapsed)
        desired.fresh = fresh
        desired.last_success = None if loaded_ago is None else clock.seconds() - loaded_ago
        server = StatusServer(config, metrics, Component(config, InMemoryBus(clock), clock),
                              view, clock, clock, vitals=Vitals(clock, lambda: dict(VITALS)))
        query, accept = request
        headers = () if accept is None else ((b"Accept", accept),)
        code, _headers, body = http(server.site, b"GET", b"/healthz" + query, auth(),
                                    headers)
        self.assertEqual(collector_healthy(body), code == 200, body)
        # Healthy exactly when NATS is up and the desired state not lost (desired_state_lost
        # is 180 s, counted from start-up before the first load).
        stale_for = elapsed if loaded_ago is None else loaded_ago
        self.assertEqual(code, 200 if connected and (fresh or stale_for <= 180) else 503)


class StandbyTests(SynchronousTestCase):
    def test_healthy_standby_says_ok(self):
        """An HA standby that could lead is healthy: `ok` as text, ha_role standby in the
        JSON view."""
        rig = ViewRig(leadership=Standby())
        code, headers, body = rig.get(b"/healthz")
        self.assertEqual((code, headers[b"content-type"], body), (200, b"text/plain", b"ok"))
        code, _headers, body = rig.get(b"/healthz?format=json")
        self.assertEqual((code, orjson.loads(body)["ha_role"]), (200, "standby"))
