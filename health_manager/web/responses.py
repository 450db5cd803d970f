"""How the status port's resources answer: headers set once, HEAD without a body."""

import orjson


def send(request, body, content_type):
    """Set the headers for `body` and return what render() returns for it."""
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"content-length", b"%d" % len(body))
    # For HEAD, the headers say what GET would send; the body is left out.
    return b"" if request.method == b"HEAD" else body


def json_body(value, pretty=False):
    option = orjson.OPT_NON_STR_KEYS | (orjson.OPT_INDENT_2 if pretty else 0)
    return orjson.dumps(value, default=str, option=option) + b"\n"


def send_json(request, value, pretty=False):
    return send(request, json_body(value, pretty), b"application/json")


def finish(request, body, content_type):
    """Write `body` to a request answered later (NOT_DONE_YET), unless the client left."""
    if request.finished or getattr(request, "_disconnected", False):
        return
    data = send(request, body, content_type)
    if data:
        request.write(data)
    request.finish()
