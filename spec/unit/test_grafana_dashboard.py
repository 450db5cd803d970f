"""Unit test: the shipped Grafana dashboard queries only metrics the HM exports."""

import json
import os
import re

from twisted.trial.unittest import SynchronousTestCase

from health_manager.metrics import HealthFacts, Metrics

DASHBOARD = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "grafana",
                         "health_manager.json")
METRIC = re.compile(r"\bhealth_manager_[a-z0-9_]+")


def exported_series():
    """Every series name /metrics can carry (histograms with their three series)."""
    facts = HealthFacts(nats_connected=True, nats_reconnects=0, actual_fresh=True,
                        desired_fresh=True, desired_age=1.0, ha_role="single", ha_epoch=1,
                        ha_transitions=0)
    names = set()
    for name, kind, _help, _samples in Metrics().families(facts):
        if kind == "histogram":
            names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
        else:
            names.add(name)
    return names


def expressions(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "query", "definition") and isinstance(value, str):
                yield value
            else:
                yield from expressions(value)
    elif isinstance(node, list):
        for value in node:
            yield from expressions(value)


class DashboardTests(SynchronousTestCase):
    def test_every_expression_names_exported_metrics(self):
        """Each query of the dashboard names at least one metric, and every metric it
        names is one /metrics exports."""
        with open(DASHBOARD, encoding="utf-8") as f:
            dashboard = json.load(f)
        exported = exported_series()
        found = list(expressions(dashboard))
        self.assertGreater(len(found), 15)
        used = set()
        for expr in found:
            if expr == "prometheus":
                continue  # the datasource variable's plugin type
            names = set(METRIC.findall(expr))
            self.assertTrue(names, expr)
            self.assertEqual(names - exported, set(), expr)
            used |= names
        # Every family but the diagnostic counters has a panel.
        unused = {n for n in exported if not n.endswith(("_sum", "_count"))} - used
        self.assertEqual(unused, {"health_manager_bulk_credentials_requests_total",
                                  "health_manager_bulk_api_unauthorized_total"})
