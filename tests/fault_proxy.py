"""A fault-injection HTTP proxy for tests: forwards to a real server, except where a rule says otherwise.

    proxy = FaultProxy("http://127.0.0.1:5000").start()
    proxy.fail(r"/registered-models/alias", "403", method="GET", query=r"alias=champion")
    proxy.fail_nth(r"/api/2\\.0/mlflow/(registered-models|model-versions)/", 3, "hang")

Faults: "403", "503" (any status code as a string, with an MLflow-style JSON error body), "hang" (accept the
request and never answer, until the proxy stops), "drop" (close the connection without an answer). A faulted
request never reaches the server, so the server's state is exactly what the client managed to do.
Standard library only: a threaded `http.server` and `http.client`.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "proxy-connection"}


@dataclass
class Rule:
    path: re.Pattern[str]
    fault: str
    method: str | None = None
    query: re.Pattern[str] | None = None
    nth: int | None = None  # only the nth matching request (0-based); None: every matching request
    seen: int = 0

    def applies(self, method: str, path: str, query: str) -> bool:
        if self.method and method != self.method:
            return False
        if not self.path.search(path) or (self.query is not None and not self.query.search(query)):
            return False
        self.seen += 1
        return self.nth is None or self.seen - 1 == self.nth


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)
        self.upstream = (target.hostname or "127.0.0.1", target.port or 80)
        self.rules: list[Rule] = []
        self.requests: list[tuple[str, str, str]] = []  # (method, path, query) of everything seen
        self.faulted: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    @property
    def uri(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail(self, path: str, fault: str, *, method: str | None = None, query: str | None = None) -> None:
        self.rules.append(Rule(re.compile(path), fault, method, re.compile(query) if query else None))

    def fail_nth(self, path: str, nth: int, fault: str) -> None:
        self.rules.append(Rule(re.compile(path), fault, nth=nth))

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.requests.clear()
            self.faulted.clear()

    def _fault_for(self, method: str, path: str, query: str) -> str | None:
        with self._lock:
            self.requests.append((method, path, query))
            for rule in self.rules:
                if rule.applies(method, path, query):
                    self.faulted.append((method, path, query))
                    return rule.fault
        return None

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: no keep-alive bookkeeping

            def log_message(self, *_: object) -> None:
                pass

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy._fault_for(self.command, parts.path, parts.query)
                if fault == "hang":
                    proxy._stopping.wait(600)
                    return
                if fault == "drop":
                    self.close_connection = True
                    return
                if fault is not None:
                    payload = json.dumps({"error_code": "TEMPORARILY_UNAVAILABLE" if fault == "503"
                                          else "PERMISSION_DENIED", "message": f"injected fault {fault}"}).encode()
                    self._reply(int(fault), [("Content-Type", "application/json")], payload)
                    return
                connection = http.client.HTTPConnection(*proxy.upstream, timeout=120)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                    connection.request(self.command, self.path, body=body or None, headers=headers)
                    response = connection.getresponse()
                    self._reply(response.status, [(k, v) for k, v in response.getheaders()
                                                  if k.lower() not in _HOP_BY_HOP], response.read())
                finally:
                    connection.close()

            def _reply(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def silent_listener() -> tuple[str, object]:
    """A socket that accepts connections and never answers (a hung server). Returns (uri, socket)."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    return f"http://127.0.0.1:{listener.getsockname()[1]}", listener
