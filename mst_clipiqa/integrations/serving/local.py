"""A Ray-free server of the same protocol on the standard library's threaded HTTP server: one process, no
dynamic batching across clients. For tests, benchmarks and a reward beside one trainer; ``mst-clipiqa serve``
runs the Ray Serve deployment, which shares every line of request handling with it (:mod:`.service`)."""
from __future__ import annotations

import ipaddress
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .service import ScoringService, encode_answer, timed_out

__all__ = ["LocalServer", "check_exposure", "is_loopback"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: str | None) -> None:
    """A server that listens beyond loopback must ask for a bearer token."""
    if not is_loopback(host) and not token:
        raise ValueError(f"listening on {host} (beyond this machine) needs a bearer token: pass --token TOKEN (or "
                         "set MST_CLIPIQA_TOKEN); clients send 'Authorization: Bearer TOKEN'")


class LocalServer:
    """``service`` on ``host:port`` (port 0: a free one, see :attr:`url`), answering in threads, scoring one
    request at a time; at most ``max_pending`` requests are in the server (scored or waiting), the rest get 503
    with ``Retry-After``. A request not answered within ``service.limits.request_timeout_s`` gets 504 and the
    server goes on serving (its work still holds a place among the ``max_pending`` until it ends).
    ``with LocalServer(...)`` starts it in a background thread and stops it on exit."""

    def __init__(self, service: ScoringService, host: str = "127.0.0.1", port: int = 0, *, max_pending: int = 64):
        check_exposure(host, service.token)
        self.service = service
        self.slots = threading.BoundedSemaphore(max_pending)
        self.workers = ThreadPoolExecutor(max_pending, thread_name_prefix="mst-clipiqa-score")
        self.connections: set[socket.socket] = set()  # kept-alive ones too: stop() ends them
        self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        self.httpd.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LocalServer:
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="mst-clipiqa-serve", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and end every open connection, as a killed server would."""
        self.httpd.shutdown()
        self.httpd.server_close()
        for connection in list(self.connections):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self.thread is not None:
            self.thread.join()
        self.workers.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _handler(server: LocalServer) -> type[BaseHTTPRequestHandler]:
    service = server.service

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else a small answer waits ~40 ms for the client's delayed ACK

        def setup(self) -> None:
            super().setup()
            server.connections.add(self.connection)

        def finish(self) -> None:
            server.connections.discard(self.connection)
            super().finish()

        def do_GET(self) -> None:
            self._answer(b"")

        def do_POST(self) -> None:
            try:
                length = int(self.headers.get("content-length", ""))
            except ValueError:
                return self._send(411, {"error": "POST without a Content-Length; send the body's length"})
            if length > service.limits.max_body_bytes:
                self.close_connection = True  # the body is left unread
                return self._send(413, {"error": f"request body of {length} bytes; the limit is "
                                                 f"{service.limits.max_body_bytes}"})
            self._answer(self.rfile.read(length))

        def _answer(self, body: bytes) -> None:
            if not server.slots.acquire(blocking=False):
                return self._send(503, {"error": "server busy: too many requests at once; retry later"},
                                  {"Retry-After": "1"})
            work = server.workers.submit(service.handle, self.command, self.path, dict(self.headers), body)
            work.add_done_callback(lambda _: server.slots.release())
            try:
                answer = work.result(timeout=service.limits.request_timeout_s)
            except TimeoutError:
                late = timed_out(service.limits)
                answer = late.status, {"error": str(late)}
            except Exception as error:  # noqa: BLE001 - the server keeps serving; the client gets one line
                answer = 500, {"error": f"scoring failed: {' '.join(str(error).split()) or type(error).__name__}"}
            try:
                self._send(*answer)
            except OSError:  # the client hung up (its own timeout): nobody to answer
                self.close_connection = True

        def _send(self, status: int, answer: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = encode_answer(answer)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: a trainer's log is not the place for access lines

    return Handler

