"""Black-box mode: advance_time requests are validated and advance the fake clock."""

import orjson
from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from health_manager.blackbox import MAX_SECONDS, parse_request


class ParseRequestTests(SynchronousTestCase):
    def test_valid(self):
        """{"seconds": N} with a whole N >= 0 is accepted; 0 is the readiness probe."""
        self.assertEqual(parse_request(b'{"seconds": 15}'), (15, None))
        self.assertEqual(parse_request(b'{"seconds": 0}'), (0, None))

    def test_invalid(self):
        """Negative, non-integer, huge and garbage requests are refused with a reason."""
        for data in (b'{"seconds": -1}', b'{"seconds": 1.5}', b'{"seconds": "3"}',
                     b'{"seconds": true}', orjson.dumps({"seconds": MAX_SECONDS + 1}),
                     b"garbage", b"[]", b"{}", b'{"seconds": 1e400}'):
            seconds, error = parse_request(data)
            self.assertIsNone(seconds, data)
            self.assertIsInstance(error, str)
