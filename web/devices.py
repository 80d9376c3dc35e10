"""The signed-in account's devices, as a page and as JSON for scripts on the LAN."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from flask import Blueprint, g, jsonify, render_template
from werkzeug.wrappers import Response as BaseResponse

from hub.link_service import DeviceView
from web.auth import login_required
from web.services import services

bp = Blueprint("devices", __name__)

P = ParamSpec("P")
R = TypeVar("R")


def device_json(device: DeviceView) -> dict[str, Any]:
    return dataclasses.asdict(device)


def api_login_required(view: Callable[P, R]) -> Callable[P, R | tuple[BaseResponse, int]]:
    """Like `login_required`, but a script gets a 401 it can read, not a sign-in page."""

    @functools.wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R | tuple[BaseResponse, int]:
        if g.account is None:
            return jsonify(error="unauthorized", message="Sign in first."), 401
        return view(*args, **kwargs)

    return wrapped


@bp.get("/devices")
@login_required
def device_list() -> str:
    return render_template("devices.html", devices=services().links.list_devices(g.account.id))


@bp.get("/api/v1/devices")
@api_login_required
def device_list_json() -> BaseResponse:
    devices = services().links.list_devices(g.account.id)
    return jsonify(devices=[device_json(d) for d in devices])
