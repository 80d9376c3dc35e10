"""Talks to a running hub over its control socket (`DATA/hub.sock`).

The socket is a file only the hub's user can open, so the CLI needs no password:
being able to read the data directory is the permission.
"""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any

from hub.errors import HubNotRunning, LinkHubError


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout_s: float) -> None:
        super().__init__("localhost", timeout=timeout_s)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(str(self._path))
        self.sock = sock


class ControlError(LinkHubError):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def call(socket_path: Path, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    connection = _UnixHTTPConnection(socket_path, timeout_s=30)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload else {}
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        data = json.loads(response.read() or b"null")
    except (FileNotFoundError, ConnectionRefusedError):
        raise HubNotRunning(
            f"no hub is running with data directory {socket_path.parent} "
            "(start it with `linkhub run`, or pass the same --data-dir)"
        ) from None
    finally:
        connection.close()
    if response.status >= 400:
        error = data if isinstance(data, dict) else {}
        raise ControlError(
            response.status, str(error.get("error", response.status)), str(error.get("message", data))
        )
    return data
