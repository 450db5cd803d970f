"""HM9000's app-state API over HTTP (HM9000.md §2.3): `POST /bulk_app_state`, asked by
the Cloud Controllers from 2014-10 on, on its own port (`hm9000.api_port`,
`hm9000.api_address`), plain HTTP (gorouter terminates TLS), with basic auth.

- Credentials are checked first, for every path. A failure answers 401 *with*
  `WWW-Authenticate: Basic realm="API Authentication"`, an empty body: CCs before 2016-10
  send their credentials only after such a challenge.
- Other paths 404; another method on the route 405.
- The body is a JSON array of `{droplet, version}`; the reply is always 200 with the object
  guid -> App JSON, or `{}` when the actual state is not fresh or the body does not parse.
  A big question is answered over several reactor turns (app_state_query).
"""

from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from health_manager.contracts.hm9000.app_state import (
    EMPTY,
    SLICE_BUDGET,
    AppStateRenderer,
    BadRequest,
    app_state_query,
    bulk_body,
    parse_bulk_request,
)
from health_manager.contracts.hm9000.serving import TEXT, PortService, refuse_other_routes
from health_manager.metrics import Hm9000Counters
from health_manager.web.responses import finish, send
from health_manager.web.status_server import QuietSite, basic_auth_valid

API = "bulk_app_state"
PATH = b"/bulk_app_state"
CHALLENGE = b'Basic realm="API Authentication"'
JSON = b"application/json"


class BulkAppStateResource(Resource):
    isLeaf = True
    log = Logger()

    def __init__(self, renderer: AppStateRenderer, reactor: IReactorTime,
                 counters: Hm9000Counters, user: str, password: str,
                 budget: float = SLICE_BUDGET) -> None:
        super().__init__()
        self._renderer = renderer
        self._reactor = reactor
        self._counters = counters
        self._user = user
        self._password = password
        self._budget = budget

    def render(self, request: Request) -> bytes | int:
        if not basic_auth_valid(request.getHeader(b"authorization"), self._user,
                                self._password):
            self._counters.app_state_auth_failures += 1
            request.setResponseCode(401)
            request.setHeader(b"www-authenticate", CHALLENGE)
            return send(request, b"", TEXT)
        refused = refuse_other_routes(request, PATH)
        if refused is not None:
            return refused
        self._counters.count_request(API)
        body = request.content.read()  # type: ignore[union-attr]  # set for every request
        try:
            requests = parse_bulk_request(body)
        except BadRequest as e:
            self._counters.count_bad_request(API)
            self.log.warn("answered {{}} to a POST /bulk_app_state body that does not "
                          "parse: {problem}", problem=e)
            return send(request, EMPTY, JSON)
        query = app_state_query(self._renderer, requests, self._reactor, self._budget)
        request.notifyFinish().addErrback(lambda _: query.cancel())
        answered = query.run()
        answered.addCallback(lambda found: finish(request, bulk_body(found), JSON))
        answered.addErrback(self._failed, request)
        return NOT_DONE_YET

    def _failed(self, failure: Any, request: Request) -> None:
        if failure.check(defer.CancelledError):
            return
        self.log.failure("answering POST /bulk_app_state failed", failure)
        finish(request, EMPTY, JSON)


class BulkAppStateServer(PortService):
    """`POST /bulk_app_state` on `address:port` (port 0: a free one, then in `port`)."""

    def __init__(self, reactor: Any, renderer: AppStateRenderer, counters: Hm9000Counters,
                 port: int, address: str, user: str, password: str,
                 budget: float = SLICE_BUDGET) -> None:
        """`reactor` provides listenTCP and the turns a big reply is rendered over."""
        resource = BulkAppStateResource(renderer, reactor, counters, user, password, budget)
        self.site = QuietSite(resource, reactor=reactor)
        self.site.noisy = False
        super().__init__(
            lambda port, address: reactor.listenTCP(port, self.site, interface=address),
            "hm9000.api_port", address, port, "HM9000 app-state API (POST /bulk_app_state)")
