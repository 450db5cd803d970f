"""The lease and the journal in etcd, through its v2 keys API (`ha.etcd`).

The etcd that cf-release foundations ran for HM9000 was 2.x: plain HTTP(S) requests to
`/v2/keys/...`, sent with treq to one member at a time (EtcdClient). A member that refuses
or closes the connection without an answer is skipped at once; one that does not answer
within the reply timeout, or answers 5xx or garbage, fails the call (the lease's retry loop
tries again) and the next call goes to the next member listed. Sending a call again is
always safe, even if the first one was applied: each store reads what it finds when its
condition fails (its own lease, its own epoch's entry) and carries on.

Keys, under `/{key_prefix}`:
- `leader`: the lease. Its value is the holder's id, its TTL the lease duration rounded up
  to whole seconds. Acquire is a create (`prevExist=false`), renew a compare-and-swap of
  the same value with a new TTL (`prevValue=holder`; not `refresh=true`, which etcd before
  2.3 ignores and would then blank the value), release a compare-and-delete (`prevValue`).
- `crash/{app}:{version}:{index}` and `start/...`: the journal's entries, each with its TTL.

The fence. The v2 API has no multi-key transaction, so the Redis fence (one script checks
the epoch and writes) cannot be copied. Instead:
1. The epoch is the lease key's `createdIndex`: etcd's global index at the write that
   created it. Every acquisition creates the key anew, so each lease ever won has its own
   epoch, and a later one always a higher epoch (the index only grows while the cluster
   keeps its data; an etcd rebuilt empty starts again from 1, and everything the epochs
   guarded is gone with it).
2. Every entry's value is an envelope `{"epoch": E, "record": ...}` naming its writer's
   epoch, and it is written by compare-and-swap on the entry's `modifiedIndex` (or with
   `prevExist=false` when absent). A CAS that fails re-reads the entry: if it carries a
   higher epoch, the write is refused; otherwise it is retried on the new index. So an
   entry's epoch never goes down while it lives: a deposed leader's late write can never
   replace what a newer leader wrote, even if it passed every earlier check.
3. Before each batch, the writer reads the lease key and writes nothing unless its
   `createdIndex` is still the writer's epoch (then the batch is refused and counted,
   as on Redis). This is a check, not a lock: a leader deposed between the check and its
   writes may still create entries the newer leader never wrote. Those carry crash
   facts all HMs heard, and (2) keeps them from overriding anything newer.
"""

import math
from urllib.parse import quote

import orjson
from treq.client import HTTPClient
from twisted.internet import defer, error
from twisted.internet.ssl import (
    Certificate,
    PrivateCertificate,
    optionsForClientTLS,
    trustRootFromCertificates,
)
from twisted.logger import Logger
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    RequestTransmissionFailed,
    ResponseNeverReceived,
)
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from health_manager.ha.journal import IJournalStore
from health_manager.ha.lease import ILeaseStore, LeaseUnavailable

# A member that closed or refused the connection without answering (killed, restarting).
_GONE = (error.ConnectError, RequestTransmissionFailed, ResponseNeverReceived)
# etcd v2 error codes (etcd's error/error.go) that are answers, not failures.
KEY_NOT_FOUND = 100
COMPARE_FAILED = 101
KEY_EXISTS = 105
# Entries written at once by one journal batch: etcd takes one key per request.
PARALLEL_WRITES = 8
# A CAS that keeps losing to another writer of an older or equal epoch gives up after
# this many tries (the journal retries the batch later).
CAS_ATTEMPTS = 3
# Entry indices remembered so that an update is one request; past this many, forgotten
# (an unknown index costs one more round trip, never a wrong write).
REMEMBERED_INDICES = 100_000


class EtcdUnavailable(LeaseUnavailable):
    """No etcd member answered, or the answer made no sense."""


class EtcdAnswer:
    """One answer of the keys API: the HTTP status, the decoded body, and etcd's error
    code when the body is an error."""

    def __init__(self, status, body):
        self.status = status
        self.body = body
        self.code = body.get("errorCode") if status >= 400 else None

    @property
    def ok(self):
        return self.code is None

    @property
    def node(self):
        return self.body.get("node") or {}

    def __repr__(self):
        return f"<etcd {self.status} {self.body.get('message') or self.body.get('action')}>"


@implementer(IPolicyForHTTPS)
class ClientTls:
    """TLS to the etcd members: checked against `ca_file` (else the system's roots), with
    the client certificate of `cert_file` and `key_file` when given."""

    def __init__(self, ca_file, cert_file, key_file):
        self._trust = None
        self._client = None
        if ca_file is not None:
            with open(ca_file, "rb") as f:
                pems = f.read()
            self._trust = trustRootFromCertificates(
                [Certificate.loadPEM(b"-----BEGIN CERTIFICATE-----" + block)
                 for block in pems.split(b"-----BEGIN CERTIFICATE-----")[1:]])
        if cert_file is not None:
            with open(cert_file, "rb") as cert, open(key_file, "rb") as key:
                self._client = PrivateCertificate.loadPEM(key.read() + b"\n" + cert.read())

    def creatorForNetloc(self, hostname, port):  # noqa: N802 (IPolicyForHTTPS)
        return optionsForClientTLS(hostname.decode("ascii"), trustRoot=self._trust,
                                   clientCertificate=self._client)


def _key_url(member, key):
    """The URL of etcd key `key` ("/a/b") at `member`; `%` in key names is sent escaped."""
    return f"{member}/v2/keys{quote(key, safe='/:@')}"


class EtcdClient:
    """Requests to the v2 keys API of the first member that answers."""

    log = Logger()

    def __init__(self, reactor, ha_config, reply_timeout=None):
        """`reply_timeout` (default: retry_period) bounds each call."""
        self._reactor = reactor
        self.members = list(ha_config.etcd)
        self._timeout = reply_timeout or ha_config.retry_period
        self._current = 0
        self._answering = None  # the member whose last answer was good, for the log
        # Whether the last call was answered (the journal skips writes while not); the
        # lease's call every retry_period on this same client keeps it current.
        self.connected = True
        tls = None
        if any(m.startswith("https:") for m in self.members):
            tls = ClientTls(ha_config.etcd_ca_file, ha_config.etcd_cert_file,
                            ha_config.etcd_key_file)
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = PARALLEL_WRITES
        agent = (Agent(reactor, contextFactory=tls, pool=self._pool,
                       connectTimeout=self._timeout)
                 if tls is not None else
                 Agent(reactor, pool=self._pool, connectTimeout=self._timeout))
        self._http = HTTPClient(agent)

    @property
    def address(self):
        """The members, for logs (etcd URLs carry no secret: TLS keys are files)."""
        return "etcd " + ",".join(self.members)

    @property
    def member(self):
        """The member the next call goes to."""
        return self.members[self._current]

    def stop(self):
        return self._pool.closeCachedConnections()

    def get(self, key, **params):
        return self.request("GET", key, {"quorum": "true", **params})

    def request(self, method, key, params, value=None):
        """Fire with the EtcdAnswer of the first member that answers (a member refusing
        the connection is skipped); fail with EtcdUnavailable."""
        return defer.Deferred.fromCoroutine(self._request(method, key, params, value))

    async def _request(self, method, key, params, value):
        tried = 0
        while True:
            member = self.member
            d = defer.Deferred.fromCoroutine(self._exchange(member, method, key, params, value))
            d.addTimeout(self._timeout, self._reactor, onTimeoutCancel=_timed_out)
            try:
                answer = await d
            except Exception as e:  # noqa: BLE001 (any failure: this member is out)
                tried += 1
                self._member_failed(member, e)
                if isinstance(e, _GONE) and tried < len(self.members):
                    continue  # closed without an answer: the next member is asked at once
                self.connected = False
                raise EtcdUnavailable(f"{self.address}: {member}: {_describe(e)}") from None
            self._member_answered(member)
            return answer

    async def _exchange(self, member, method, key, params, value):
        data = None if value is None else {"value": value}
        response = await self._http.request(
            method, _key_url(member, key), params={k: str(v) for k, v in params.items()},
            data=data)
        body = await response.content()
        if response.code >= 500:
            raise EtcdUnavailable(f"HTTP {response.code}: {body[:200]!r}")
        try:
            decoded = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise EtcdUnavailable(f"HTTP {response.code}, not JSON: {body[:200]!r}") from None
        if not isinstance(decoded, dict) or (response.code >= 400
                                             and not isinstance(decoded.get("errorCode"), int)):
            raise EtcdUnavailable(f"HTTP {response.code}, not an etcd answer: {body[:200]!r}")
        return EtcdAnswer(response.code, decoded)

    def _member_failed(self, member, e):
        if member == self.member:
            self._current = (self._current + 1) % len(self.members)
        if member == self._answering:
            self._answering = None
            self.log.warn("HA: etcd member {member} failed ({error}); next: {next}",
                          member=member, error=_describe(e), next=self.member)

    def _member_answered(self, member):
        self.connected = True
        if member != self._answering:
            self._answering = member
            self.log.info("HA: etcd member {member} answering", member=member)


def _timed_out(result, timeout):
    # Whatever the cancelled request failed with (treq wraps it): a member too slow to
    # answer is not skipped at once, the call fails.
    raise defer.TimeoutError(f"no answer within {timeout} s")


def _describe(e):
    if isinstance(e, defer.TimeoutError):
        return "no answer in time"
    return str(e) or type(e).__name__


def _seconds(ttl_ms):
    """A TTL for etcd, which counts whole seconds: rounded up, so never shorter."""
    return max(1, math.ceil(ttl_ms / 1000))


def _unexpected(what, answer):
    return EtcdUnavailable(f"etcd {what}: unexpected answer {answer!r}")


def _node_index(answer, field):
    value = answer.node.get(field)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _unexpected(f"node without {field}", answer)
    return value


class _OnClient:
    def __init__(self, client, key_prefix):
        self._client = client
        self._root = "/" + key_prefix.strip("/")

    @property
    def address(self):
        return self._client.address

    @property
    def connected(self):
        return self._client.connected


@implementer(ILeaseStore)
class EtcdLeaseStore(_OnClient):
    """The lease of `key_prefix` as the etcd key `/{key_prefix}/leader`; its epoch is the
    key's createdIndex (see the module's docstring)."""

    def __init__(self, client, key_prefix):
        super().__init__(client, key_prefix)
        self._key = self._root + "/leader"

    def start(self):
        """Nothing to open: each call is an HTTP request (on a persistent connection)."""

    def stop(self):
        return self._client.stop()

    def acquire(self, holder, ttl_ms, seen_epoch=0):
        # seen_epoch needs no help here: etcd's index never goes back (module docstring).
        return defer.Deferred.fromCoroutine(self._acquire(holder, ttl_ms))

    async def _acquire(self, holder, ttl_ms):
        created = await self._client.request(
            "PUT", self._key, {"prevExist": "false", "ttl": _seconds(ttl_ms)}, holder)
        if created.ok:
            return True, _node_index(created, "createdIndex"), holder
        if created.code != KEY_EXISTS:
            raise _unexpected("lease create", created)
        current = await self._client.get(self._key)
        if current.code == KEY_NOT_FOUND:
            return False, 0, None  # expired in between: the next try may win it
        if not current.ok:
            raise _unexpected("lease read", current)
        epoch = _node_index(current, "createdIndex")
        if current.node.get("value") != holder:
            return False, epoch, current.node.get("value")
        # Still this holder's (the answer to its last renewal was lost): keep it.
        renewed = await self._renew(holder, ttl_ms)
        if renewed is None:
            return False, epoch, None  # expired or taken in between
        return True, renewed, holder

    def renew(self, holder, ttl_ms):
        return defer.Deferred.fromCoroutine(self._renew(holder, ttl_ms))

    async def _renew(self, holder, ttl_ms):
        answer = await self._client.request(
            "PUT", self._key, {"prevValue": holder, "ttl": _seconds(ttl_ms)}, holder)
        if answer.code in (KEY_NOT_FOUND, COMPARE_FAILED):
            return None
        if not answer.ok:
            raise _unexpected("lease renewal", answer)
        return _node_index(answer, "createdIndex")

    def release(self, holder):
        return defer.Deferred.fromCoroutine(self._release(holder))

    async def _release(self, holder):
        answer = await self._client.request("DELETE", self._key, {"prevValue": holder})
        if answer.code in (KEY_NOT_FOUND, COMPARE_FAILED):
            return False
        if not answer.ok:
            raise _unexpected("lease release", answer)
        return True


def envelope(epoch, value):
    """The stored form of a journal entry: its writer's epoch and the record."""
    return b'{"epoch":%d,"record":%s}' % (epoch, value)


def _opened(text):
    """(epoch, record bytes) of a stored entry; (0, raw bytes) when it is no envelope (the
    journal then counts it as unreadable, and any epoch may replace it)."""
    raw = text.encode("utf-8", "replace") if isinstance(text, str) else b""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return 0, raw
    epoch = body.get("epoch") if isinstance(body, dict) else None
    if isinstance(epoch, bool) or not isinstance(epoch, int) or "record" not in body:
        return 0, raw
    return epoch, orjson.dumps(body["record"])


@implementer(IJournalStore)
class EtcdJournalStore(_OnClient):
    """The journal's entries as `/{key_prefix}/{kind}/{key}` with a TTL each, written by
    compare-and-swap and stamped with their writer's epoch (module docstring)."""

    def __init__(self, client, key_prefix):
        super().__init__(client, key_prefix)
        self._lease_key = self._root + "/leader"
        self._indices = {}  # etcd key -> modifiedIndex of its last write or load
        # One batch at a time: two writes of one entry never race each other.
        self._writing = defer.DeferredLock()
        self._parallel = defer.DeferredSemaphore(PARALLEL_WRITES)

    def _entry_key(self, kind, key):
        # "/" in a key (and "%", which etcd would decode) stays inside one key name.
        return f"{self._root}/{kind}/{quote(key, safe=':@')}"

    def write(self, epoch, entries):
        return self._writing.run(self._write, epoch, entries)

    async def _write(self, epoch, entries):
        lease = await self._client.get(self._lease_key)
        if lease.code == KEY_NOT_FOUND or (lease.ok and lease.node.get("createdIndex") != epoch):
            return False
        if not lease.ok:
            raise _unexpected("lease read", lease)
        abandoned: list[Exception] = []

        async def put(entry):
            if abandoned:  # etcd failed this batch: the entries not sent yet wait for a retry
                raise abandoned[0]
            try:
                return await self._put(epoch, *entry)
            except EtcdUnavailable as e:
                abandoned.append(e)
                raise

        # Every put ends before the batch does (and the lock is released), so no later
        # write of the same entry can run beside one of this batch.
        results = await defer.DeferredList(
            [self._parallel.run(put, entry) for entry in entries], consumeErrors=True)
        for succeeded, value in results:
            if not succeeded:
                value.raiseException()
        return all(value for _, value in results)

    async def _put(self, epoch, kind, key, value, ttl_ms):
        """Write one entry unless it carries a higher epoch; True when written."""
        path = self._entry_key(kind, key)
        stored = envelope(epoch, value).decode("utf-8")
        index = self._indices.get(path)
        for _ in range(CAS_ATTEMPTS):
            condition = {"prevIndex": index} if index else {"prevExist": "false"}
            answer = await self._client.request(
                "PUT", path, {**condition, "ttl": _seconds(ttl_ms)}, stored)
            if answer.ok:
                self._remember(path, _node_index(answer, "modifiedIndex"))
                return True
            if answer.code not in (KEY_NOT_FOUND, COMPARE_FAILED, KEY_EXISTS):
                raise _unexpected("journal write", answer)
            current = await self._client.get(path)
            if current.code == KEY_NOT_FOUND:
                index = None
                continue
            if not current.ok:
                raise _unexpected("journal read", current)
            if _opened(current.node.get("value"))[0] > epoch:
                self._indices.pop(path, None)
                return False
            index = _node_index(current, "modifiedIndex")
        raise EtcdUnavailable(f"{self.address}: {path} changed {CAS_ATTEMPTS} times while "
                              "being written")

    def _remember(self, path, index):
        if len(self._indices) >= REMEMBERED_INDICES:
            self._indices.clear()
        self._indices[path] = index

    async def load(self, kind):
        answer = await self._client.get(f"{self._root}/{kind}", recursive="true")
        if answer.code == KEY_NOT_FOUND:
            return []
        if not answer.ok:
            raise _unexpected("journal load", answer)
        values = []
        for node in answer.node.get("nodes") or ():
            if not isinstance(node, dict) or node.get("dir"):
                continue
            values.append(_opened(node.get("value"))[1])
            index = node.get("modifiedIndex")
            if isinstance(node.get("key"), str) and isinstance(index, int):
                self._remember(node["key"], index)
        return values
