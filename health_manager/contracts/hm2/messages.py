"""`health.start` and `health.stop` as HM 2.0 sent them (PROTOCOL.md §1.5, §1.6), with the
`running` maps the CC judges them by (§3.1, §3.2)."""

import orjson
from zope.interface import implementer

from health_manager.contracts import ICcContract
from health_manager.policy_parameters import PolicyParameters

START_SUBJECT = "health.start"
STOP_SUBJECT = "health.stop"


@implementer(ICcContract)
class Hm2Contract:
    name = "hm2"
    start_subject = START_SUBJECT
    stop_subject = STOP_SUBJECT
    policy = PolicyParameters()
    # HM 2.0 read its `total_users` from /bulk/counts, and both fields of every entry.
    fetch_user_counts = True
    require_memory_and_updated_at = True

    def start_message(self, order):
        droplet = order.droplet
        return orjson.dumps({
            "droplet": droplet.id,
            "last_updated": droplet.last_updated,
            "version": order.version,
            "indices": [order.index],
            "running": droplet.start_running_counts(),
            "flapping": order.flapping,
        })

    def stop_messages(self, order):
        """One message for all the instances: the CC counts them against `running`."""
        droplet = order.droplet
        return [orjson.dumps({
            "droplet": droplet.id,
            "last_updated": droplet.last_updated,
            "instances": {guid: target.version for guid, target in order.instances.items()},
            "running": order.running,
            "version": droplet.live_version,
        })]
