"""Errors of real HTTP clients land in the closed enum (not `unknown`): urllib against a local
upstream for real, and requests / httpx by their exception types' names and hierarchy (the
classes below mirror theirs; the classifier imports neither library)."""

from __future__ import annotations

import http.server
import socket
import threading
import urllib.error
import urllib.request

import pytest

from orchestrator.core.model import ErrorClass, classify


@pytest.fixture
def upstream():
    """A local HTTP upstream: GET /STATUS answers with that status; /stall never answers in time."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/stall":
                threading.Event().wait(2.0)
                return
            self.send_response(int(self.path.strip("/")))
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def raised(fn):
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the test wants the real exception
        return exc
    raise AssertionError("no exception")


@pytest.mark.parametrize("status, expected", [(503, ErrorClass.SERVER_ERROR), (500, ErrorClass.SERVER_ERROR),
                                              (429, ErrorClass.RATE_LIMIT), (504, ErrorClass.TIMEOUT),
                                              (400, ErrorClass.PARAM_ERROR)])
def test_urllib_http_errors(upstream, status, expected):
    exc = raised(lambda: urllib.request.urlopen(f"{upstream}/{status}", timeout=5))
    assert isinstance(exc, urllib.error.HTTPError) and classify(exc) is expected


def test_urllib_connection_refused_and_timeout(upstream):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    refused = raised(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5))
    assert isinstance(refused, urllib.error.URLError) and classify(refused) is ErrorClass.NETWORK
    stalled = raised(lambda: urllib.request.urlopen(f"{upstream}/stall", timeout=0.2))
    assert classify(stalled) is ErrorClass.TIMEOUT
    assert classify(ConnectionResetError(104, "Connection reset by peer")) is ErrorClass.NETWORK
    assert classify(OSError(113, "No route to host")) is ErrorClass.NETWORK
    assert classify(socket.timeout("timed out")) is ErrorClass.TIMEOUT


# requests' hierarchy (requests/exceptions.py): RequestException(IOError); HTTPError carries a
# response; ConnectionError; ConnectTimeout(ConnectionError, Timeout); ReadTimeout(Timeout)
class RequestException(IOError):
    def __init__(self, *args, response=None):
        super().__init__(*args)
        self.response = response


class HTTPError(RequestException):
    pass


class ConnectionError(RequestException):  # noqa: A001 - requests' own name
    pass


class Timeout(RequestException):
    pass


class ConnectTimeout(ConnectionError, Timeout):
    pass


class ReadTimeout(Timeout):
    pass


class Response:
    def __init__(self, status_code):
        self.status_code = status_code


# httpx's: HTTPError(Exception) > TransportError > TimeoutException > ReadTimeout / ConnectTimeout,
# TransportError > NetworkError > ConnectError; HTTPStatusError(HTTPError) with a response
class HttpxHTTPError(Exception):
    pass


class TransportError(HttpxHTTPError):
    pass


class TimeoutException(TransportError):
    pass


class HttpxReadTimeout(TimeoutException):
    pass


class NetworkError(TransportError):
    pass


class ConnectError(NetworkError):
    pass


class HTTPStatusError(HttpxHTTPError):
    def __init__(self, message, response):
        super().__init__(message)
        self.response = response


@pytest.mark.parametrize("exc, expected", [
    (ConnectionError("HTTPConnectionPool: Max retries exceeded (Connection refused)"), ErrorClass.NETWORK),
    (ConnectTimeout("connect timed out"), ErrorClass.TIMEOUT),
    (ReadTimeout("read timed out (read timeout=30)"), ErrorClass.TIMEOUT),
    (HTTPError("503 Server Error", response=Response(503)), ErrorClass.SERVER_ERROR),
    (HTTPError("Too many", response=Response(429)), ErrorClass.RATE_LIMIT),
    (ConnectError("[Errno 111] Connection refused"), ErrorClass.NETWORK),
    (HttpxReadTimeout("The read operation timed out"), ErrorClass.TIMEOUT),
    (HTTPStatusError("Server error '502 Bad Gateway'", Response(502)), ErrorClass.SERVER_ERROR),
    (HTTPStatusError("Client error", Response(429)), ErrorClass.RATE_LIMIT),
], ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else v.value)
def test_requests_and_httpx_errors_by_type(exc, expected):
    assert classify(exc) is expected
