"""How an HM9000-era Cloud Controller reads the app-state API's reply (HM9000.md §2.4,
ccng `lib/cloud_controller/dea/hm9000/client.rb`), for the tests to judge the replies by
what the CC makes of them."""

FLAPPING_CRASH_COUNT_THRESHOLD = 3  # ccng `flapping_crash_count_threshold` default

# The App JSON's parts, field by field with their types (HM9000.md §2.2).
HEARTBEAT_FIELDS = {"droplet": str, "version": str, "instance": str, "index": int,
                    "state": str, "state_timestamp": float, "dea_guid": str}
CRASH_COUNT_FIELDS = {"droplet": str, "version": str, "instance_index": int,
                      "crash_count": int, "created_at": int}
DESIRED_FIELDS = {"id": str, "version": str, "instances": int, "state": str,
                  "package_state": str}


def healthy_instances(reply, guid, instances):
    """`healthy_instance_count`: distinct indices below `instances` with a STARTING or
    RUNNING entry; -1 ("unknown") when the reply has no App JSON for `guid`."""
    app = reply.get(guid)
    if app is None or app.get("instance_heartbeats") is None:
        return -1
    return len({beat["index"] for beat in app["instance_heartbeats"]
                if beat["index"] < instances and beat["state"] in ("RUNNING", "STARTING")})


def find_crashes(reply, guid):
    """`find_crashes`: every CRASHED entry as {instance, since}."""
    app = reply.get(guid)
    if not app:
        return []
    return [{"instance": beat["instance"], "since": beat["state_timestamp"]}
            for beat in app["instance_heartbeats"] if beat["state"] == "CRASHED"]


def find_flapping_indices(reply, guid, threshold=FLAPPING_CRASH_COUNT_THRESHOLD):
    """`find_flapping_indices`: every crash count at or above the threshold as
    {index, since}."""
    app = reply.get(guid)
    if not app:
        return []
    return [{"index": count["instance_index"], "since": count["created_at"]}
            for count in app["crash_counts"] if count["crash_count"] >= threshold]
