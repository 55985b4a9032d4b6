"""A real redis-server for the tests: Debian's package, one per test session, in a temporary folder.

Tests share it and keep apart by key prefix (`settings()` makes a fresh one), so nothing is
flushed between them. The fault tests stop and start it (`stop`, `start`): on the same port, so
clients reconnect as they would after a Redis restart in production.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from authz.config.model import RedisSettings

BINARY = shutil.which("redis-server")
MISSING = (
    "redis-server is not installed: `make test` installs Debian's redis-server where it runs as root"
    " with apt (apt-get install redis-server)"
)
_prefixes = itertools.count(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    def __init__(self, directory: Path, *, persist: bool = False) -> None:
        assert BINARY is not None, MISSING
        self.directory = directory
        self.persist = persist  # every write on disk before it is acknowledged: a restart keeps the data
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert BINARY is not None
        self.process = subprocess.Popen(
            [BINARY, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.persist else "no", "--appendfsync", "always",
             "--dir", str(self.directory), "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=os.setpgrp,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def settings(self, prefix: str | None = None, **overrides: object) -> RedisSettings:
        """Settings for this server under a prefix no other test uses."""
        values: dict[str, object] = {
            "url": self.url, "host": "127.0.0.1", "port": self.port, "db": 0, "username": None,
            "password": None, "tls": False, "key_prefix": prefix or f"test{next(_prefixes)}:", "timeout": 1.0,
        }  # fmt: skip
        values.update(overrides)
        return RedisSettings(**values)  # type: ignore[arg-type]
