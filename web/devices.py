"""The signed-in account's devices, as pages and as JSON for scripts on the LAN.

An account sees and changes only its own devices: another account's device is
a 404, the same answer as a device that does not exist, so a device id alone
reveals nothing.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, ParamSpec, TypeVar

from flask import Blueprint, abort, flash, g, jsonify, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from hub.core.oauth import SCOPE_WORDS
from hub.core.origin import Origin
from hub.errors import AppRefused, CommandRefused, DeviceRefused, LinkHubError, SettingsRefused, UnlinkRefused
from hub.services.device_control import command_words
from hub.services.links import DeviceView
from hub.services.settings import DeviceSettingsView
from web.auth import login_required
from web.controls import BadControl, command_from_form, component_rows
from web.services import services
from web.values import setting_rows, show_value, typed_change, version_status, view_json

bp = Blueprint("devices", __name__)

# How long a control's POST waits for the device's answer before the page comes
# back: a device on the LAN answers in milliseconds; a slow one is shown as sent.
COMMAND_ANSWER_WAIT_S = 2.0

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


def own_device(device_id: str) -> tuple[DeviceView, DeviceSettingsView] | None:
    """The signed-in account's device and its settings, or None if it is not theirs.

    Ownership is checked before the settings service is asked, so looking at
    someone else's device id never even creates its settings record.
    """
    device = services().links.linked_device(device_id, g.account.id)
    if device is None:
        return None
    view = services().settings.device_view(device_id)
    return (device, view) if view is not None and view.account_id == g.account.id else None


def own_device_or_404(device_id: str) -> tuple[DeviceView, DeviceSettingsView]:
    """own_device for the pages: another account's device is the same 404 as no device."""
    found = own_device(device_id)
    if found is None:
        abort(HTTPStatus.NOT_FOUND)
    return found


@bp.get("/devices")
@login_required
def device_list() -> str:
    account_id = g.account.id
    views = {view.device_id: view for view in services().settings.list_views(account_id)}
    links = services().links
    apps = services().apps
    return render_template(
        "devices.html",
        devices=links.list_devices(account_id),
        apps=apps.linked_apps(account_id) if apps else [],
        scope_words=SCOPE_WORDS,
        views=views,
        # Approved devices that never came lose their credentials (issue 19 item 17).
        credentials_lifetime_s=links.unconfirmed_lifetime_s,
        expired=links.expired_unconfirmed(account_id),
    )


@bp.post("/apps/<family_id>/unlink")
@login_required
def unlink_app(family_id: str) -> BaseResponse:
    """Unlink an app: its tokens stop working at its next call (each call is checked)."""
    apps = services().apps
    if apps is None:
        abort(HTTPStatus.NOT_FOUND)
    try:
        app = apps.unlink(family_id, g.account.id, address=request.remote_addr)
    except AppRefused:
        flash("That app is not linked (any more).")
    else:
        flash(f"{app.app_name or app.client_id} is unlinked: it can no longer act for you.")
    return redirect(url_for("devices.device_list") + "#apps", HTTPStatus.SEE_OTHER)


@bp.get("/api/v1/devices")
@api_login_required
def device_list_json() -> BaseResponse:
    devices = services().links.list_devices(g.account.id)
    return jsonify(devices=[device_json(d) for d in devices])


def _device_page(
    device: DeviceView,
    view: DeviceSettingsView,
    *,
    key: str = "",
    value: str = "",
    error: str | None = None,
    new_name: str | None = None,
    command_error: str | None = None,
    http: int = 200,
) -> tuple[str, int]:
    others = [account for account in services().accounts.list_accounts() if account.id != device.account_id]
    control = services().control
    return (
        render_template(
            "device.html",
            device=device,
            view=view,
            rows=setting_rows(view),
            version_status=version_status(view, online=device.online if device.confirmed else None),
            key=key,
            value=value,
            error=error,
            new_name=new_name,
            members=others,
            components=component_rows(control.components(device.device_id)) if control else [],
            command_error=command_error,
        ),
        http,
    )


@bp.get("/devices/<device_id>")
@login_required
def device_page(device_id: str) -> tuple[str, int]:
    device, view = own_device_or_404(device_id)
    editing = request.args.get("edit", "")
    if editing in view.settings:
        # Edit: the form filled with the setting as it would be typed back in.
        return _device_page(device, view, key=editing, value=show_value(view.settings[editing]))
    return _device_page(device, view)


@bp.get("/devices/<device_id>/status.json")
@login_required
def device_status_json(device_id: str) -> BaseResponse:
    """The device page's live refresh (static/link.js, every 5 s): the state line
    and the settings' words, rendered as on the page so the two never differ."""
    device, view = own_device_or_404(device_id)
    control = services().control
    rows = component_rows(control.components(device_id)) if control else []
    return jsonify(
        state_html=render_template("_device_state.html", device=device),
        components={
            row.key: render_template("_component_live.html", row=row, device=device) for row in rows
        },
        sync=version_status(view, online=device.online if device.confirmed else None),
        synced=view.synced,
    )


@bp.post("/devices/<device_id>/settings")
@login_required
def change_device_setting(device_id: str) -> BaseResponse | tuple[str, int]:
    device, before = own_device_or_404(device_id)
    try:
        after = services().settings.set_device_settings(
            device_id, typed_change(request.form), origin=Origin.WEB
        )
    except SettingsRefused as exc:
        return _device_page(
            device,
            before,
            key=request.form.get("key", ""),
            value=request.form.get("value", ""),
            error=str(exc),
            http=HTTPStatus.BAD_REQUEST,
        )
    if after.desired_version == before.desired_version:
        flash("Nothing changed.")
    elif device.online:
        flash(f"Saved. {device.name} is online and gets it now.")
    else:
        flash(f"Saved. {device.name} is offline and gets it when it connects.")
    # Redirect after a post: reloading the page must not send the change again.
    return redirect(url_for("devices.device_page", device_id=device_id), HTTPStatus.SEE_OTHER)


@bp.post("/devices/<device_id>/command")
@login_required
def command_device(device_id: str) -> BaseResponse | tuple[str, int]:
    """A control on the device page: checked and sent, then back to the page
    showing the device's answer (it answers with its new state at once)."""
    device, view = own_device_or_404(device_id)
    control = services().control
    if control is None:
        abort(HTTPStatus.NOT_FOUND)
    key = request.form.get("key", "")
    description = control.description(device_id)
    component = description.component(key) if description is not None else None
    try:
        if component is None:
            raise BadControl(f"{device.name} has no control called {key[:32]!r}.")
        value = command_from_form(component, request.form)
        sent = control.send_command(
            device_id, key, value, origin=Origin.WEB, account_id=g.account.id, address=request.remote_addr
        )
    except (BadControl, CommandRefused) as exc:
        if isinstance(exc, CommandRefused) and exc.reason == "unknown_device":
            abort(HTTPStatus.NOT_FOUND)
        return _device_page(device, view, command_error=str(exc), http=HTTPStatus.BAD_REQUEST)
    words = command_words(sent.component, sent.value)
    if control.wait_answer(sent.command_id, COMMAND_ANSWER_WAIT_S):
        flash(f"{words} — {device.name} answered.")
    else:
        flash(
            f"{words} — sent to {device.name}, which has not answered yet. "
            "Its state here changes when it does."
        )
    return redirect(url_for("devices.device_page", device_id=device_id) + "#controls", HTTPStatus.SEE_OTHER)


@bp.post("/devices/<device_id>/rename")
@login_required
def rename_device(device_id: str) -> BaseResponse | tuple[str, int]:
    device, view = own_device_or_404(device_id)
    name = request.form.get("name", "")
    try:
        renamed = services().links.rename(device_id, g.account.id, name, address=request.remote_addr)
    except DeviceRefused as exc:
        if exc.reason == "unknown_device":
            abort(HTTPStatus.NOT_FOUND)
        return _device_page(device, view, error=str(exc), new_name=name[:64], http=HTTPStatus.BAD_REQUEST)
    flash(f"Renamed to {renamed.name}." if renamed.name != device.name else "Nothing changed.")
    return redirect(url_for("devices.device_page", device_id=device_id), HTTPStatus.SEE_OTHER)


def managed_device_or_404(device_id: str) -> DeviceView:
    """A device this person may give away or unlink: their own, or, for the
    household's owner, a member's (hub/services/handover.py)."""
    found = services().handover.managed_device(device_id, g.account.id, is_owner=g.account.is_owner)
    if found is None:
        abort(HTTPStatus.NOT_FOUND)
    return found


def _back_to(device: DeviceView) -> str:
    """Where a device's confirm pages lead back: its page for its own person,
    the household page for the owner acting on a member's device."""
    if device.account_id == g.account.id:
        return url_for("devices.device_page", device_id=device.device_id)
    return url_for("household.household_page")


@bp.post("/devices/<device_id>/give")
@login_required
def give_device(device_id: str) -> BaseResponse | tuple[str, int]:
    device = managed_device_or_404(device_id)
    try:
        to_account = int(request.form.get("account_id", ""))
    except ValueError:
        to_account = -1
    try:
        given = services().handover.give(
            device_id,
            to_account,
            by_account_id=g.account.id,
            by_owner=g.account.is_owner,
            origin=Origin.WEB,
            address=request.remote_addr,
        )
    except DeviceRefused as exc:
        if exc.reason == "unknown_device":
            abort(HTTPStatus.NOT_FOUND)
        flash(str(exc), "error")
        return redirect(_back_to(device), HTTPStatus.SEE_OTHER)
    receiver = services().accounts.get(given.account_id)
    flash(f"{device.name} is now {receiver.name if receiver else 'the other member'}'s. It stays connected.")
    target = "household.household_page" if g.account.is_owner else "devices.device_list"
    return redirect(url_for(target), HTTPStatus.SEE_OTHER)


@bp.get("/devices/<device_id>/unlink")
@login_required
def unlink_confirm(device_id: str) -> tuple[str, int]:
    """The confirm step: unlinking cannot be undone (the device must be linked anew)."""
    device = managed_device_or_404(device_id)
    return render_template("unlink.html", device=device, back=_back_to(device), error=None), 200


@bp.post("/devices/<device_id>/unlink")
@login_required
def unlink_device(device_id: str) -> BaseResponse | tuple[str, int]:
    """Unlink once the person confirmed (`confirm=yes`, from the confirm page's form).

    A post without it only shows the confirm step: no single click, and no
    script (the CSP forbids inline script), ever unlinks a device.
    """
    device = managed_device_or_404(device_id)
    back = _back_to(device)
    if request.form.get("confirm") != "yes":
        return render_template("unlink.html", device=device, back=back, error=None), 200
    try:
        services().handover.unlink(
            device_id,
            by_account_id=g.account.id,
            by_owner=g.account.is_owner,
            origin=Origin.WEB,
            address=request.remote_addr,
        )
    except DeviceRefused:
        abort(HTTPStatus.NOT_FOUND)
    except UnlinkRefused as exc:
        if exc.reason != "already_unlinked":
            abort(HTTPStatus.NOT_FOUND)
        flash(f"{device.name} was already unlinked.")  # e.g. from another tab a moment ago
    except LinkHubError as exc:
        # The broker did not confirm: nothing changed, the device is still linked.
        return render_template(
            "unlink.html",
            device=device,
            back=back,
            error=f"{device.name} was not unlinked: the hub could not reach its broker ({exc}). Try again.",
        ), HTTPStatus.SERVICE_UNAVAILABLE
    else:
        flash(
            f"{device.name} is unlinked: it was disconnected and its broker credentials are deleted. "
            "Its settings are kept. To use it again, link it again."
        )
    own = device.account_id == g.account.id
    return redirect(
        url_for("devices.device_list" if own else "household.household_page"), HTTPStatus.SEE_OTHER
    )


@bp.delete("/api/v1/devices/<device_id>")
@api_login_required
def unlink_device_json(device_id: str) -> tuple[BaseResponse, int]:
    """Unlink for scripts, signed in like the other /api/v1 routes.

    CSRF: Flask-WTF's CSRFProtect checks DELETE as it checks POST
    (WTF_CSRF_METHODS), so a script must send the session's token in the
    `X-CSRFToken` header (the `csrf_token` of any form on a signed-in page).
    It is kept rather than exempted although the cookie is SameSite=Lax: Lax
    treats every port of the same host as the same site, and a Pi often runs
    other web apps (Home Assistant, ...) whose pages must not be able to
    unlink devices. A cross-origin DELETE would also need a CORS preflight,
    which this app never grants; the token does not rely on that.
    """
    try:
        device = services().links.unlink(
            device_id, g.account.id, origin=Origin.API, address=request.remote_addr
        )
    except UnlinkRefused as exc:
        if exc.reason == "already_unlinked":
            return jsonify(error="already_unlinked", message=str(exc)), HTTPStatus.CONFLICT
        return jsonify(error="not_found", message="You have no device with that id."), HTTPStatus.NOT_FOUND
    except LinkHubError as exc:
        return jsonify(
            error="hub_unavailable", message=f"Not unlinked; the device is still linked: {exc}"
        ), HTTPStatus.SERVICE_UNAVAILABLE
    return jsonify(device_json(device) | {"unlinked": True}), HTTPStatus.OK


@bp.get("/api/v1/devices/<device_id>/settings")
@api_login_required
def device_settings_json(device_id: str) -> BaseResponse | tuple[BaseResponse, int]:
    found = own_device(device_id)
    if found is None:
        return jsonify(error="not_found", message="You have no device with that id."), 404
    return jsonify(view_json(found[1]))
