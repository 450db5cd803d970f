"""`hm9000.start` and `hm9000.stop` as HM9000 sent them (HM9000.md §1.1, §1.2): one
message per index or instance, each with a fresh UUID v4 `message_id` (the CC ignores it).

The CC counts nothing (§1.4): a stop with `is_duplicate: true` is executed
unconditionally. It is set only for a duplicate on a held index or an evacuated instance
whose replacement runs; the policy stops those only while another instance holds the index
(model/droplet.py plan_stops), so no such stop names the only instance of a wanted index.
"""

import uuid

import orjson
from zope.interface import implementer

from health_manager.contracts import ICcContract
from health_manager.contracts.hm9000.policy import POLICY, START_SUBJECT, STOP_SUBJECT
from health_manager.model.droplet import REASON_DUPLICATE, REASON_EVACUATED

# Stops the CC must carry out although the index is wanted: it only does with is_duplicate.
_DUPLICATE_REASONS = frozenset((REASON_DUPLICATE, REASON_EVACUATED))


def _message_id():
    return str(uuid.uuid4())


@implementer(ICcContract)
class Hm9000Contract:
    name = "hm9000"
    policy = POLICY
    # HM9000 never asked /bulk/counts; CCs from 2017-01 send entries without `memory` and
    # `updated_at` (cloud_controller_ng 80a53d8a7f).
    fetch_user_counts = False
    require_memory_and_updated_at = False

    def __init__(self, start_subject=START_SUBJECT, stop_subject=STOP_SUBJECT,
                 message_id=_message_id):
        self.start_subject = start_subject
        self.stop_subject = stop_subject
        self._message_id = message_id

    def start_message(self, order):
        return orjson.dumps({
            "message_id": self._message_id(),
            "droplet": order.droplet.id,
            "version": order.version,
            "instance_index": order.index,
        })

    def stop_messages(self, order):
        droplet_id = order.droplet.id
        return [orjson.dumps({
            "message_id": self._message_id(),
            "droplet": droplet_id,
            "version": target.version,
            "instance_guid": guid,
            "instance_index": target.index,
            "is_duplicate": target.reason in _DUPLICATE_REASONS,
        }) for guid, target in sorted(order.instances.items())]
