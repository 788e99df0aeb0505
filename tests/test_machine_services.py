"""The machine's PostgreSQL and Redis, when the environment names them.

Later plugins (storage, rate limits, locks) test against these servers.  When
``WISP_TEST_DATABASE_URL`` or ``WISP_TEST_REDIS_URL`` is set, an unreachable
server is a failure, never a skip, so CI cannot pass against nothing.
"""

from __future__ import annotations

import os
import socket
import struct
from urllib.parse import urlsplit

import pytest


def _open(url: str, default_port: int) -> socket.socket:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    try:
        return socket.create_connection((host, port), timeout=5)
    except OSError as exc:
        pytest.fail(f"{url.split('@')[-1]} is set for the tests but unreachable: {exc}")


def test_postgresql_answers_when_configured() -> None:
    url = os.environ.get("WISP_TEST_DATABASE_URL")
    if not url:
        pytest.skip("WISP_TEST_DATABASE_URL is not set")
    with _open(url, 5432) as sock:
        # SSLRequest: a PostgreSQL server answers with one byte, S or N.
        sock.sendall(struct.pack("!ii", 8, 80877103))
        assert sock.recv(1) in (b"S", b"N"), "not a PostgreSQL server"


def test_redis_answers_when_configured() -> None:
    url = os.environ.get("WISP_TEST_REDIS_URL")
    if not url:
        pytest.skip("WISP_TEST_REDIS_URL is not set")
    with _open(url, 6379) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(64).startswith(b"+PONG"), "not a Redis server"
