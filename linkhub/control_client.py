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


class HubWentAway(LinkHubError):
    """The hub took the request and closed the connection without an answer: it
    stopped or died in the middle. Whether a change was applied is not known."""


def _went_away(method: str, path: str, exc: Exception) -> HubWentAway:
    what = (
        f"the hub closed the connection before answering {method} {path} ({type(exc).__name__}); did it stop?"
    )
    if method == "GET":
        return HubWentAway(f"{what} Nothing was changed. Check that it is running and ask again.")
    return HubWentAway(
        f"{what} The change may or may not have been applied. Once the hub runs again "
        "(`systemctl status linkhub`, or start it with `linkhub run`), check with `linkhub activity` "
        "and `linkhub devices` (or `linkhub settings show`) before trying again."
    )


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
    except (http.client.HTTPException, ConnectionError, TimeoutError) as exc:
        # RemoteDisconnected, IncompleteRead, a reset or broken pipe, or no answer in
        # time: the request may have reached the hub, so its effect is unknown.
        raise _went_away(method, path, exc) from None
    finally:
        connection.close()
    if response.status >= 400:
        error = data if isinstance(data, dict) else {}
        raise ControlError(
            response.status, str(error.get("error", response.status)), str(error.get("message", data))
        )
    return data
