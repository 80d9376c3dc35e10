"""The one module that speaks mosquitto's dynamic-security `$CONTROL` API.

Facts this is built on (mosquitto 2.0.x, checked against the real broker by
tests/test_isolation.py and tests/test_identities.py):
- `%c`/`%u` are not expanded in ACL topics before 2.1 (mosquitto issue 3191),
  so each device gets its own role with literal topics. Where the broker does
  expand `%c`, the bootstrap identity may publish link requests only under its
  own client id; the hub finds out which broker it has by trying
  (`expands_client_id`), since a version string says less than behaviour.
- Editing a client or role kicks every connected client holding it, so the admin
  identity used here holds none of the roles it edits, and every call is
  idempotent so that it can simply be retried.
- Subscribe ACLs match the subscription filter as if it were a topic: a pattern
  allow on `reply/+` would also allow subscribing to `reply/+` itself. Literal
  denies on the wildcard filters, at a higher priority, close that hole.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import linkhub_protocol as protocol
from hub.broker.connection import BrokerAddress, InboundMessage, MqttConnection
from hub.core import home_assistant as ha
from hub.errors import BrokerAdminError, BrokerAdminRefused, BrokerRefused, BrokerTimeout, BrokerUnavailable

log = logging.getLogger(__name__)

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"

BOOTSTRAP_ROLE = "linkhub-bootstrap"
HUB_ROLE = "linkhub-hub"
HOME_ASSISTANT_ROLE = "linkhub-home-assistant"
HOME_ASSISTANT_USERNAME = "linkhub-homeassistant"
DEVICE_ROLE_PREFIX = "linkhub-device-"
# The hub publishes once to PROBE_ROOT/<its client id> at start, where its role
# denies PROBE_ROOT/%c: refused means the broker expands %c. Nobody subscribes.
PROBE_ROOT = f"{protocol.TOPIC_ROOT}/hub-probe"

_ALREADY = ("already exists", "already in")


@dataclass(frozen=True, slots=True)
class Acl:
    acltype: str
    topic: str
    allow: bool
    priority: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"acltype": self.acltype, "topic": self.topic, "allow": self.allow, "priority": self.priority}


def bootstrap_acls(*, per_client: bool) -> list[Acl]:
    """What an unlinked device may do: send link requests, read one reply topic
    whose name it chose (128+ random bits), and nothing with wildcards.

    `per_client` (a broker that expands %c): link requests only under the
    client's own id, so the per-client limit counts a client, not a claim.
    Without it any one-level id is allowed and the id is only what the client
    says it is (docs/security.md, "Link requests").
    """
    reply_any = f"{protocol.LINK_REPLY_ROOT}/+"
    request = f"{protocol.LINK_REQUEST_ROOT}/{'%c' if per_client else '+'}"
    return [
        Acl("publishClientSend", request, True),
        Acl("subscribeLiteral", reply_any, False, priority=10),
        Acl("subscribeLiteral", f"{protocol.LINK_REPLY_ROOT}/#", False, priority=10),
        Acl("subscribeLiteral", "#", False, priority=10),
        Acl("subscribePattern", reply_any, True),
        # Explicit, so replies arrive even on a broker whose default denies receiving.
        Acl("publishClientReceive", reply_any, True),
    ]


def hub_acls() -> list[Acl]:
    """The hub's service identity: the whole LinkHub tree, the shared request
    queue, and Home Assistant's discovery prefix (its configs, and its birth
    message: hub/core/home_assistant.py)."""
    tree = f"{protocol.TOPIC_ROOT}/#"
    discovery = f"{ha.DISCOVERY_PREFIX}/#"
    return [
        Acl("publishClientSend", discovery, True),
        Acl("publishClientReceive", discovery, True),
        Acl("subscribePattern", discovery, True),
        Acl("publishClientSend", tree, True),
        Acl("publishClientReceive", tree, True),
        Acl("subscribePattern", tree, True),
        # The shared subscriptions to what devices send (protocol.device_inbound_subscriptions):
        # mosquitto checks a `$share/...` filter whole, group prefix included.
        Acl("subscribePattern", protocol.shared_subscription(tree), True),
        Acl("subscribePattern", protocol.link_request_subscription(), True),
        Acl("subscribeLiteral", protocol.link_request_subscription(), True),
        Acl("publishClientSend", f"{PROBE_ROOT}/%c", False, priority=10),
    ]


def home_assistant_acls() -> list[Acl]:
    """Home Assistant's identity (`linkhub homeassistant`): it reads the discovery
    configs, every device's state and status and the hub's own; it may publish
    its birth message, and commands on the hub's command topics only, which the
    hub checks before anything reaches a device. Nothing else: not a device's
    command topic, not settings, not link requests."""
    reads = [
        f"{ha.DISCOVERY_PREFIX}/#",
        f"{protocol.DEVICES_ROOT}/+/{protocol.STATE}",
        f"{protocol.DEVICES_ROOT}/+/{protocol.STATUS}",
        f"{ha.HUB_ROOT}/+/status",
        f"{ha.HUB_ROOT}/+/state",
    ]
    return [
        *(Acl("subscribePattern", topic, True) for topic in reads),
        *(Acl("publishClientReceive", topic, True) for topic in reads),
        Acl("publishClientSend", ha.BIRTH_TOPIC, True),
        Acl("publishClientSend", ha.command_subscription(), True),
    ]


def expands_client_id(connection: MqttConnection) -> bool:
    """Whether the broker expands %c in dynamic-security ACLs (mosquitto 2.1+).

    `connection` is the hub's own (MQTT 5, so a refusal comes back as a PUBACK
    reason code) and its role denies PROBE_ROOT/%c only: a publish to
    PROBE_ROOT/<its client id> is refused exactly when %c was expanded.
    """
    try:
        connection.publish(f"{PROBE_ROOT}/{connection.client_id}", b"", qos=1)
    except BrokerRefused:
        return True
    return False


def device_acls(device_id: str) -> list[Acl]:
    """A linked device's own subtree and nothing else (literal: no %c on 2.0); and
    of it, it may publish only to the topics the protocol gives it (its status,
    the three settings topics, its description and state: protocol.DEVICE_SENDS,
    docs/protocol.md), so it can retain at most those: a device that retained
    thousands of topics under its subtree left the unlink a sweep it could not
    finish (issue 19). Roles made before a topic was added are brought to this
    at the hub's start (`narrow_device_roles`)."""
    subtree = f"{protocol.device_root(device_id)}/#"
    sends = [protocol.device_topic(device_id, leaf) for leaf in protocol.DEVICE_SENDS]
    return [
        *(Acl("publishClientSend", topic, True) for topic in sends),
        Acl("publishClientReceive", subtree, True),
        Acl("subscribePattern", subtree, True),
    ]


def service_client_id(kind: str) -> str:
    """A client id for one of the hub's own connections (`hub`, `links`, `admin`,
    `sweep`): 128 random bits, so that nobody can take it over by guessing it.

    mosquitto disconnects a connected client when another connects with its
    client id (MQTT-3.1.4-3), after authenticating the newcomer under its own
    username: a guest on the public bootstrap login who knew the hub's id could
    knock it off the broker (issue 19). The hub never logs it (MqttConnection
    and MqttResponder log their `label`); mosquitto's own log, in the 0700 data
    directory, does (docs/security.md, "The hub's own client ids").
    """
    return f"linkhub-{kind}-{secrets.token_hex(16)}"


def device_role(device_id: str) -> str:
    return DEVICE_ROLE_PREFIX + device_id


def _role_acls(get_role_response: dict[str, Any]) -> set[Acl]:
    return {
        Acl(str(a.get("acltype")), str(a.get("topic")), bool(a.get("allow")), int(a.get("priority", 0)))
        for a in get_role_response.get("data", {}).get("role", {}).get("acls", [])
    }


class DynSecAdmin:
    """Runs dynamic-security commands and waits for each one's answer."""

    def __init__(self, broker: BrokerAddress, username: str, password: str) -> None:
        self._connection = MqttConnection(
            broker,
            client_id=service_client_id("admin"),
            username=username,
            password=password,
            on_message=self._on_response,
            label="the hub's dynamic-security connection",
        )
        self._lock = threading.Lock()
        self._pending: dict[str, Future[dict[str, Any]]] = {}

    @property
    def client_id(self) -> str:
        return self._connection.client_id

    def start(self) -> None:
        self._connection.start()
        self._connection.subscribe(RESPONSE_TOPIC)

    def stop(self) -> None:
        self._connection.stop()

    # --- transport ----------------------------------------------------------
    def call(
        self, commands: list[dict[str, Any]], timeout_s: float = 5.0, *, tolerate: tuple[str, ...] = ()
    ) -> list[dict[str, Any]]:
        """Send commands in one message; return their responses in order.

        Raises BrokerAdminError for any error other than "already exists" and
        those containing one of `tolerate`.
        """
        futures: list[Future[dict[str, Any]]] = []
        tagged = []
        with self._lock:
            for command in commands:
                tag = secrets.token_hex(8)
                future: Future[dict[str, Any]] = Future()
                self._pending[tag] = future
                futures.append(future)
                tagged.append(command | {"correlationData": tag})
        try:
            self._connection.publish(CONTROL_TOPIC, json.dumps({"commands": tagged}).encode())
            deadline = time.monotonic() + timeout_s
            responses = [f.result(timeout=max(0.0, deadline - time.monotonic())) for f in futures]
        except FutureTimeout:
            raise BrokerAdminError(
                f"dynamic-security did not answer {[c['command'] for c in commands]} in {timeout_s} s"
            ) from None
        finally:
            with self._lock:
                for command in tagged:
                    self._pending.pop(command["correlationData"], None)
        for command, response in zip(commands, responses, strict=True):
            error = response.get("error")
            if error and not any(marker in str(error) for marker in (*_ALREADY, *tolerate)):
                raise BrokerAdminRefused(f"dynamic-security refused {command['command']}: {error}")
        return responses

    def call_with_retry(
        self,
        commands: list[dict[str, Any]],
        attempts: int = 3,
        pause: Callable[[float], None] = time.sleep,
        tolerate: tuple[str, ...] = (),
    ) -> list[dict[str, Any]]:
        """Every command we send is idempotent, so a lost answer is simply asked
        again. A refusal (by the plugin, or by the broker for the publish) is
        final: the same question gets the same answer."""
        for attempt in range(attempts):
            try:
                return self.call(commands, tolerate=tolerate)
            except (BrokerAdminRefused, BrokerRefused):
                raise
            except (BrokerAdminError, BrokerTimeout, BrokerUnavailable):
                if attempt == attempts - 1:
                    raise
                pause(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    def _on_response(self, message: InboundMessage) -> None:
        try:
            responses = json.loads(message.payload).get("responses", [])
        except (ValueError, AttributeError):
            return
        for response in responses:
            if not isinstance(response, dict):
                continue
            with self._lock:
                future = self._pending.pop(str(response.get("correlationData")), None)
            if future is not None and not future.done():
                future.set_result(response)

    # --- the operations LinkHub needs ----------------------------------------
    def sync_role(self, rolename: str, acls: list[Acl]) -> None:
        """Bring a role to exactly `acls`: add what is missing, remove what is not
        wanted (an older hub's rules). Unchanged roles are not touched, since every
        edit kicks the clients holding the role (mosquitto issue 2474)."""
        self.call_with_retry([{"command": "createRole", "rolename": rolename}])
        (response,) = self.call_with_retry([{"command": "getRole", "rolename": rolename}])
        current = {
            Acl(str(a.get("acltype")), str(a.get("topic")), bool(a.get("allow")), int(a.get("priority", 0)))
            for a in response.get("data", {}).get("role", {}).get("acls", [])
        }
        commands: list[dict[str, Any]] = [
            {"command": "removeRoleACL", "rolename": rolename, "acltype": a.acltype, "topic": a.topic}
            for a in sorted(current - set(acls), key=lambda a: (a.acltype, a.topic))
        ]
        commands += [
            {"command": "addRoleACL", "rolename": rolename} | a.to_json() for a in acls if a not in current
        ]
        if commands:
            self.call_with_retry(commands)

    def ensure_role(self, rolename: str, acls: list[Acl]) -> None:
        self.call_with_retry([{"command": "createRole", "rolename": rolename}])
        self.call_with_retry(
            [{"command": "addRoleACL", "rolename": rolename} | acl.to_json() for acl in acls]
        )

    def ensure_client(
        self,
        username: str,
        password: str,
        rolename: str,
        *,
        client_id: str | None = None,
        reset_password: bool = True,
    ) -> None:
        """Create the client, or bring an existing one to this role (and password).

        Changing an existing client kicks its connections (mosquitto issue 2474),
        so only what differs is changed, and the public bootstrap identity's
        password is never reset under devices that are mid-link.
        """
        create: dict[str, Any] = {
            "command": "createClient",
            "username": username,
            "password": password,
            "roles": [{"rolename": rolename}],
        }
        if client_id is not None:
            create["clientid"] = client_id
        (response,) = self.call_with_retry([create])
        if not response.get("error"):
            return
        (existing,) = self.call_with_retry([{"command": "getClient", "username": username}])
        client = existing.get("data", {}).get("client", {})
        if reset_password:
            self.call_with_retry(
                [{"command": "setClientPassword", "username": username, "password": password}]
            )
        if rolename not in {role.get("rolename") for role in client.get("roles", [])}:
            self.call_with_retry([{"command": "addClientRole", "username": username, "rolename": rolename}])
        if client_id is not None and client.get("clientid") != client_id:
            self.call_with_retry([{"command": "setClientId", "username": username, "clientid": client_id}])

    def ensure_bootstrap(self, *, per_client: bool) -> None:
        self.sync_role(BOOTSTRAP_ROLE, bootstrap_acls(per_client=per_client))
        self.ensure_client(
            protocol.BOOTSTRAP_USERNAME, protocol.BOOTSTRAP_PASSWORD, BOOTSTRAP_ROLE, reset_password=False
        )

    def ensure_hub_identity(self, username: str, password: str) -> None:
        self.ensure_role(HUB_ROLE, hub_acls())
        self.ensure_client(username, password, HUB_ROLE)

    def ensure_home_assistant(self, password: str) -> None:
        """Home Assistant's identity with this password (a new one each time it
        is asked for: the old one stops working)."""
        self.sync_role(HOME_ASSISTANT_ROLE, home_assistant_acls())
        self.ensure_client(HOME_ASSISTANT_USERNAME, password, HOME_ASSISTANT_ROLE)

    def issue_device(self, device_id: str, password: str) -> None:
        """The device's own client, bound to client id == username == device_id."""
        role = device_role(device_id)
        # One message, not three: mosquitto rewrites its whole dynamic-security
        # file after each message (docs/performance.md, "Approve").
        commands: list[dict[str, Any]] = [
            {"command": "createRole", "rolename": role},
            *({"command": "addRoleACL", "rolename": role} | acl.to_json() for acl in device_acls(device_id)),
            {
                "command": "createClient",
                "username": device_id,
                "password": password,
                "clientid": device_id,
                "roles": [{"rolename": role}],
            },
        ]
        responses = self.call_with_retry(commands)
        if responses[-1].get("error"):  # it existed (an approval retried): bring it to this password
            self.ensure_client(device_id, password, role, client_id=device_id)

    def device_clients(self) -> set[str]:
        return device_clients(self)
    def narrow_device_roles(self, device_ids: list[str], chunk: int = 100) -> int:
        """Bring linked devices' roles to today's rules (`device_acls`): a device
        linked by an older hub may publish anywhere under its subtree. Read in
        messages of `chunk` getRole commands; a role that is missing (a device
        this broker does not have) is left alone, an unchanged one too, since
        every edit kicks the device (mosquitto issue 2474). How many changed."""
        changed = 0
        for start in range(0, len(device_ids), chunk):
            ids = device_ids[start : start + chunk]
            reads = [{"command": "getRole", "rolename": device_role(device_id)} for device_id in ids]
            commands: list[dict[str, Any]] = []
            for device_id, response in zip(ids, self.call(reads, tolerate=("not found",)), strict=True):
                if response.get("error"):
                    continue
                role = device_role(device_id)
                current = {
                    Acl(
                        str(a.get("acltype")),
                        str(a.get("topic")),
                        bool(a.get("allow")),
                        int(a.get("priority", 0)),
                    )
                    for a in response.get("data", {}).get("role", {}).get("acls", [])
                }
                wanted = device_acls(device_id)
                if current == set(wanted):
                    continue
                changed += 1
                commands += [
                    {"command": "removeRoleACL", "rolename": role, "acltype": a.acltype, "topic": a.topic}
                    for a in sorted(current - set(wanted), key=lambda a: (a.acltype, a.topic))
                ]
                commands += [
                    {"command": "addRoleACL", "rolename": role} | a.to_json()
                    for a in wanted
                    if a not in current
                ]
            if commands:
                self.call_with_retry(commands)
        return changed

    def revoke_device(self, device_id: str) -> None:
        """Delete the client (which disconnects it at once) and its role."""
        for command in (
            {"command": "deleteClient", "username": device_id},
            {"command": "deleteRole", "rolename": device_role(device_id)},
        ):
            # Already gone (a retry after a lost answer, or an unlink asked twice) is done.
            self.call_with_retry([command], tolerate=("not found",))


# --- the broker's device identities, for the reconciler (issue 18 §4) ---------------
def device_clients(admin: DynSecAdmin) -> set[str]:
    """The usernames of the broker's device identities: clients holding their own
    device role (`device_role(username)`), the shape `issue_device` gives them.
    Other clients (the admin, the hub's, the bootstrap, anyone else's) never match.

    `listClients` with `verbose` lists each client with its roles
    (mosquitto plugins/dynamic-security/README.md, "List Clients").
    """
    (response,) = admin.call_with_retry(
        [{"command": "listClients", "verbose": True, "count": -1, "offset": 0}]
    )
    found: set[str] = set()
    for client in response.get("data", {}).get("clients", []):
        if not isinstance(client, dict):
            continue
        username = str(client.get("username", ""))
        roles = {str(role.get("rolename")) for role in client.get("roles", []) if isinstance(role, dict)}
        if username and device_role(username) in roles:
            found.add(username)
    return found


class CheckedIssuer:
    """The link service's credential issuer: DynSecAdmin, with `after_change` run
    after each identity change. With the hub's own mosquitto it checks that the
    broker's file still parses and keeps a copy (hub/broker/managed.py DynsecFileGuard).

    A device issued but not saved must fail its approval: after a restart the
    broker would not know it, and the device would be locked out for good. A
    revocation not saved only brings the identity back after a restart, where
    the reconciler removes it again; it is logged, not raised.
    """

    def __init__(self, admin: DynSecAdmin, after_change: Callable[[], None]) -> None:
        self._admin = admin
        self._after_change = after_change

    def issue_device(self, device_id: str, password: str) -> None:
        self._admin.issue_device(device_id, password)
        self._after_change()

    def revoke_device(self, device_id: str) -> None:
        self._admin.revoke_device(device_id)
        try:
            self._after_change()
        except BrokerAdminError as exc:
            log.error("%s removed on the broker but not saved (%s)", device_id, exc)

    def device_clients(self) -> set[str]:
        return device_clients(self._admin)
