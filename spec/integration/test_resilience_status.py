"""/varz and /healthz of a running health manager (issue 6, item 7): basic auth enforced,
compared in constant time, and neither the mbus password nor the bulk credentials ever shown
in /varz, the logs, or errors.
"""

import base64

from twisted.trial.unittest import TestCase

from health_manager.web import status_server
from health_manager.simulation.cloud_controller import FAULT_401
from spec.integration.support import (
    BULK_PASSWORD, MBUS_PASSWORD, STATUS_PASSWORD, STATUS_USER, LiveFoundation, LogCapture,
    wait_until)


class StatusAuthTests(TestCase):
    timeout = 60

    async def test_auth_required_and_no_secret_shown(self):
        """Without valid basic auth both paths answer 401; with it they answer; /varz and
        the logs never contain the mbus password or the bulk credentials, also after bulk
        errors."""
        logs = LogCapture()
        self.addCleanup(logs.stop)
        foundation = await LiveFoundation(self).start()
        foundation.place("app-a", 1)
        manager = await foundation.start_manager()
        await wait_until(manager.desired_state.is_fresh, what="desired state")
        foundation.cc.fault = FAULT_401
        await wait_until(lambda: not manager.desired_state.is_fresh(), what="401 seen")
        foundation.cc.fault = None
        await wait_until(manager.desired_state.is_fresh, what="recovered")
        port = manager.status_server.port
        wrong = [None, (STATUS_USER, "nope"), ("nope", STATUS_PASSWORD), ("", ""),
                 (STATUS_USER, STATUS_PASSWORD + "x")]
        for path in ("/varz", "/healthz"):
            for auth in wrong:
                code, _ = await foundation.status_get(port, path, auth=auth)
                self.assertEqual(code, 401, (path, auth))
            for header in (b"Basic !!!", b"Bearer x", b"Basic " + base64.b64encode(b"hm")):
                code, _ = await foundation.status_get(
                    port, path, auth=None, headers={b"authorization": [header]})
                self.assertEqual(code, 401, (path, header))
            code, _ = await foundation.status_get(port, path)
            self.assertEqual(code, 200)
        _, varz = await foundation.status_get(port, "/varz")
        for secret in (MBUS_PASSWORD, BULK_PASSWORD):
            self.assertNotIn(secret.encode(), varz)
            self.assertNotIn(secret, logs.text())
        self.assertNotIn(b'"mbus"', varz)

    def test_credentials_compared_in_constant_time(self):
        """User and password are both compared with hmac.compare_digest, whichever is
        wrong, so the answer time does not tell how much of either matched."""
        compared = []

        def compare_digest(a, b):
            compared.append((a, b))
            return a == b

        self.patch(status_server.hmac, "compare_digest", compare_digest)
        for user, password in (("x", "y"), ("u", "y"), ("x", "p"), ("u", "p")):
            header = b"Basic " + base64.b64encode(f"{user}:{password}".encode())
            del compared[:]
            valid = status_server.basic_auth_valid(header, "u", "p")
            self.assertEqual(valid, (user, password) == ("u", "p"))
            self.assertEqual(compared, [(user.encode(), b"u"), (password.encode(), b"p")])
