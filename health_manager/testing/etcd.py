"""An in-memory etcd v2 keys API on a clock, for unit tests of ha/etcd.py's stores.

FakeEtcd keeps what the stores rely on: one global index that every write raises, a
node's createdIndex and modifiedIndex, TTLs (expired nodes vanish), `prevExist`,
`prevValue`, `prevIndex` and one-level `recursive` reads, with etcd's error
codes. FakeEtcdClient is one HM's client of it: it can be taken down, or made to hold
every request until `answer_held()` answers them in a chosen order.
"""

from twisted.internet import defer

from health_manager.ha.etcd import (
    COMPARE_FAILED,
    KEY_EXISTS,
    KEY_NOT_FOUND,
    EtcdAnswer,
    EtcdUnavailable,
)


class FakeEtcd:
    def __init__(self, clock, index=10):
        self._clock = clock
        self.index = index
        self.nodes = {}  # key -> {"key", "value", "createdIndex", "modifiedIndex", "expires"}

    def node(self, key):
        """The live node at `key`, or None."""
        node = self.nodes.get(key)
        if node is not None and node["expires"] is not None \
                and self._clock.seconds() >= node["expires"]:
            del self.nodes[key]
            return None
        return node

    def answer(self, method, key, params, value):
        return getattr(self, f"_{method.lower()}")(key, params, value)

    def _error(self, status, code):
        return EtcdAnswer(status, {"errorCode": code, "message": "fake", "index": self.index})

    def _ok(self, status, node):
        shown = {k: v for k, v in node.items() if k != "expires"}
        return EtcdAnswer(status, {"action": "fake", "node": shown})

    def _get(self, key, params, value):
        node = self.node(key)
        if node is not None:
            return self._ok(200, node)
        children = [self.node(k) for k in list(self.nodes) if k.startswith(key + "/")]
        children = [c for c in children if c is not None]
        if params.get("recursive") == "true" and children:
            return EtcdAnswer(200, {"node": {"key": key, "dir": True, "nodes": [
                {k: v for k, v in c.items() if k != "expires"} for c in children]}})
        return self._error(404, KEY_NOT_FOUND)

    def _put(self, key, params, value):
        node = self.node(key)
        if params.get("prevExist") == "false" and node is not None:
            return self._error(412, KEY_EXISTS)
        if ("prevValue" in params or "prevIndex" in params) and node is None:
            return self._error(404, KEY_NOT_FOUND)
        if node is not None and (
                ("prevValue" in params and node["value"] != params["prevValue"])
                or ("prevIndex" in params and node["modifiedIndex"] != int(params["prevIndex"]))):
            return self._error(412, COMPARE_FAILED)
        self.index += 1
        ttl = params.get("ttl")
        expires = None if ttl is None else self._clock.seconds() + int(ttl)
        created = self.index if node is None else node["createdIndex"]
        self.nodes[key] = {"key": key, "value": value, "createdIndex": created,
                           "modifiedIndex": self.index, "expires": expires}
        return self._ok(201 if node is None else 200, self.nodes[key])

    def _delete(self, key, params, value):
        node = self.node(key)
        if node is None:
            return self._error(404, KEY_NOT_FOUND)
        if "prevValue" in params and node["value"] != params["prevValue"]:
            return self._error(412, COMPARE_FAILED)
        self.index += 1
        del self.nodes[key]
        return self._ok(200, node)


class FakeEtcdClient:
    """The part of EtcdClient the stores use, on a FakeEtcd."""

    address = "etcd fake"

    def __init__(self, etcd):
        self._etcd = etcd
        self.connected = True
        self.down = False
        self.hold = False
        self.held = []  # (Deferred, method, key, params, value)
        self.requests = []  # (method, key, params)

    def stop(self):
        return defer.succeed(None)

    def get(self, key, **params):
        return self.request("GET", key, {"quorum": "true", **params})

    def request(self, method, key, params, value=None):
        self.requests.append((method, key, params))
        if self.down:
            self.connected = False
            return defer.fail(EtcdUnavailable("fake etcd down"))
        self.connected = True
        if self.hold:
            d: defer.Deferred[EtcdAnswer] = defer.Deferred()
            self.held.append((d, method, key, params, value))
            return d
        return defer.succeed(self._etcd.answer(method, key, params, value))

    def answer_held(self, order=None):
        """Answer the held requests, in `order` (indices) or as they came."""
        held, self.held = self.held, []
        for i in order if order is not None else range(len(held)):
            d, method, key, params, value = held[i]
            d.callback(self._etcd.answer(method, key, params, value))
