"""Schemathesis hooks for `make fuzz` (scripts/fuzz.sh loads them through SCHEMATHESIS_HOOKS).

The fuzzed server only calls back 127.0.0.1 (update.callback_allowed_hosts), so a generated
callback_url that the service would accept names a host it then refuses, and no update would
ever be accepted. Such a URL is pointed at a local receiver started here instead, which answers
200 to every callback: updates run, GET /api/v1/update/{update_id} finds them, and no callback
leaves the machine. Malformed URLs are sent as generated, to keep fuzzing their refusal.
"""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import schemathesis


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (the name http.server calls)
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass  # Quiet: the run's output is schemathesis's.


_server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
threading.Thread(target=_server.serve_forever, daemon=True).start()
CALLBACK_URL = f"http://127.0.0.1:{_server.server_address[1]}/callback"


def _acceptable(url):
    """Whether the service would take this as a callback URL, apart from its host."""
    if not url.startswith(("http://", "https://")):
        return False
    if any(c.isspace() or not c.isprintable() or c == "\\" for c in url):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # Raises for a port that is not a number in range.
    except ValueError:
        return False
    return bool(parts.hostname)


@schemathesis.hook
def before_call(ctx, case, kwargs):
    if case.operation.method.upper() != "POST" or case.operation.path != "/api/v1/update":
        return
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("callback_url"), str):
        if _acceptable(body["callback_url"]):
            case.body = {**body, "callback_url": CALLBACK_URL}
