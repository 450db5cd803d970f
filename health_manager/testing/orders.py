"""Orders (health_manager/orders.py) for tests of what sends them, on a droplet the CC
describes as STARTED with `instances` wanted."""

from health_manager.constants import STAGED, STARTED
from health_manager.model.desired_app import DesiredApp
from health_manager.model.droplet import REASON_EXTRA_INSTANCE, Droplet
from health_manager.orders import StartOrder, StopOrder, StopTarget


def described_droplet(app_id, version="v1", instances=1, last_updated=100, now=0.0):
    droplet = Droplet(app_id, now)
    droplet.set_desired(DesiredApp(id=app_id, instances=instances, state=STARTED,
                                   version=version, package_state=STAGED,
                                   updated_at=last_updated, memory=256), now, now)
    return droplet


def start_order(app_id, index=0, flapping=False, droplet=None):
    droplet = droplet if droplet is not None else described_droplet(app_id)
    return StartOrder(droplet, droplet.live_version, index, flapping=flapping)


def stop_order(app_id, instances, running=None, reason=REASON_EXTRA_INSTANCE):
    """Stop `instances` ({guid: (version, index)}) of `app_id`."""
    droplet = described_droplet(app_id)
    targets = {guid: StopTarget(version, index, reason)
               for guid, (version, index) in instances.items()}
    return StopOrder(droplet, targets, running if running is not None else {})
