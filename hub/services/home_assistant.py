"""Home Assistant's view of the linked devices, kept right (hub/core/home_assistant.py
says what the configs are): published when a device describes itself or is
renamed, emptied when it is unlinked or loses a component, published again
when Home Assistant starts, and reconciled with what the broker retains when
the hub starts, so that a crash or a restart never leaves a stale entity (the
"ghost devices" Home Assistant users know: home-assistant/core issue 77728).

Commands Home Assistant sends on the hub's command topics go to DeviceControl,
which checks them against the description like a person's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from hub.core import home_assistant as ha
from hub.core.link_limits import LogEvery
from hub.core.origin import Origin
from hub.errors import CommandRefused, LinkHubError
from hub.services.device_control import DeviceControl
from hub.services.links import LinkService
from linkhub_protocol import DeviceDescription, ProtocolError

log = logging.getLogger(__name__)

REFUSAL_LOG_INTERVAL_S = 60.0
# At start, the configs of devices unlinked this recently are emptied again: with
# --home-assistant-broker, an unlink's empty configs may have been lost with the
# hub's mosquitto before the bridge delivered them to Home Assistant's broker.
UNLINKED_RECONCILE_S = 30 * 86400.0


@dataclass(frozen=True, slots=True)
class HomeAssistantLogin:
    """What to type into Home Assistant's MQTT integration (`linkhub homeassistant`,
    the Settings page): the broker devices use, and Home Assistant's own login."""

    host: str
    port: int
    username: str
    password: str = field(repr=False)
    tls_port: int | None = None  # with the hub's CA (its /ca.pem) to check the broker

    def fields(self) -> list[tuple[str, str]]:
        """The MQTT integration's fields, by the names its form gives them."""
        rows = [
            ("Broker", self.host),
            ("Port", str(self.tls_port or self.port)),
            ("Username", self.username),
            ("Password", self.password),
        ]
        if self.tls_port is not None:
            rows += [
                ("Broker certificate validation", "Custom: upload the hub's CA (its web page's /ca.pem)"),
                ("MQTT transport", "TCP"),
            ]
        return rows


class RetainedPublisher(Protocol):
    def publish_retained(self, messages: list[tuple[str, bytes]]) -> None:
        """Publish each (topic, payload) retained, QoS 1; LinkHubError if the broker
        did not acknowledge them all."""
        ...

    def retained_discovery_topics(self) -> set[str]:
        """The discovery config topics the broker retains now (LinkHubError if it
        did not list them)."""
        ...


class HomeAssistant:
    def __init__(
        self,
        control: DeviceControl,
        links: LinkService,
        publisher: RetainedPublisher,
        hub: ha.HubCard,
        *,
        device_page: Callable[[str], str],
        healthy: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`device_page(device_id)`: the device's page on the hub (Home
        Assistant's "Visit" link)."""
        self._control = control
        self._links = links
        self._publisher = publisher
        self.hub = hub
        self._device_page = device_page
        self._healthy = healthy
        self._clock = clock
        # One publisher of configs at a time: a rename and a description must not
        # interleave their retained messages.
        self._lock = threading.Lock()
        self._refusals_logged = LogEvery(REFUSAL_LOG_INTERVAL_S)
        self.commands_refused = 0

    # --- the configs ------------------------------------------------------------
    def _device_configs(self, device_id: str, name: str) -> ha.Configs:
        description = self._control.description(device_id, fresh=True)
        if description is None:
            return {}
        card = ha.DeviceCard(device_id, name, self._device_page(device_id))
        return ha.device_configs(card, description, self.hub)

    def wanted(self) -> ha.Configs:
        """Every config that should be retained now: the hub's, and each linked
        device's that described itself."""
        configs = ha.hub_configs(self.hub)
        for device in self._links.list_devices():
            configs |= self._device_configs(device.device_id, device.name)
        return configs

    def _publish(self, configs: ha.Configs, remove: Iterable[str] = ()) -> None:
        messages = [(topic, b"") for topic in sorted(set(remove) - set(configs))]
        messages += [(topic, ha.encode_config(config)) for topic, config in configs.items()]
        if messages:
            self._publisher.publish_retained(messages)

    def _hub_state(self) -> list[tuple[str, bytes]]:
        count = self._links.linked_count()
        return [
            (ha.hub_status_topic(self.hub.hub_id), ha.HUB_ONLINE),
            (ha.hub_state_topic(self.hub.hub_id), ha.hub_state(self._healthy(), count)),
        ]

    # --- when things change -------------------------------------------------------
    def reconcile(self) -> int:
        """At start: publish what should be retained, and empty every config of
        ours the broker retains that should not be (a device unlinked or a
        component removed while the hub was down, or a crash between the two).
        Another hub's own entities are left alone. How many were emptied."""
        with self._lock:
            wanted = self.wanted()
            retained = self._publisher.retained_discovery_topics()
            stale = {topic for topic in retained - set(wanted) if self._is_ours(topic)}
            gone = self._recently_unlinked_configs() - set(wanted)
            self._publish(wanted, stale | gone)
            self._publisher.publish_retained(self._hub_state())
        if stale:
            log.info("removed %d stale Home Assistant entit(ies) left from before", len(stale))
        return len(stale)

    def _recently_unlinked_configs(self) -> set[str]:
        """Where the configs of devices unlinked lately were: emptied again, which
        costs nothing where they are gone already (hub/broker/managed.py Bridge)."""
        topics: set[str] = set()
        for device_id in self._links.unlinked_since(self._clock() - UNLINKED_RECONCILE_S):
            description = self._control.description(device_id, fresh=True)
            if description is not None:
                topics |= set(ha.device_configs(ha.DeviceCard(device_id, "", ""), description, self.hub))
        return topics

    def _is_ours(self, topic: str) -> bool:
        """A config this hub published: its own node, or a node of a device in its
        database. Hubs with databases of their own may share a broker (and Home
        Assistant): another hub's devices are not this one's to remove."""
        node = ha.config_node(topic)
        if node is None or not node.startswith(ha.NODE_PREFIX):
            return False
        if node.startswith(ha.HUB_NODE_PREFIX):
            return node == ha.hub_node_id(self.hub.hub_id)
        return self._links.knows_device(node.removeprefix(ha.NODE_PREFIX))

    def republish(self) -> None:
        """Home Assistant (re)started and said so: everything again."""
        with self._lock:
            self._publish(self.wanted())
            self._publisher.publish_retained(self._hub_state())

    def described(
        self, device_id: str, description: DeviceDescription, previous: DeviceDescription | None
    ) -> None:
        """A device described itself: its configs, and empty ones for the components it lost."""
        device = self._links.any_linked_device(device_id)
        if device is None:
            return
        card = ha.DeviceCard(device_id, device.name, self._device_page(device_id))
        with self._lock:
            configs = ha.device_configs(card, description, self.hub)
            gone = ha.device_configs(card, previous, self.hub) if previous is not None else {}
            self._publish(configs, gone)

    def renamed(self, device_id: str) -> None:
        """The new name in Home Assistant; the rename itself stands whatever happens here."""
        device = self._links.any_linked_device(device_id)
        if device is None:
            return
        try:
            with self._lock:
                self._publish(self._device_configs(device_id, device.name))
        except LinkHubError as exc:  # the next start's reconciliation publishes it
            log.warning("could not give Home Assistant %s's new name (%s)", device_id, exc)

    def unlinked(self, device_id: str) -> None:
        """Every entity of the device, and so the device itself, leaves Home Assistant."""
        description = self._control.description(device_id, fresh=True)
        with self._lock:
            if description is not None:
                card = ha.DeviceCard(device_id, "", "")
                self._publish({}, ha.device_configs(card, description, self.hub))
            self._publisher.publish_retained(self._hub_state())

    def linked(self) -> None:
        """A device was linked: the hub's count of linked devices changed."""
        with self._lock:
            self._publisher.publish_retained(self._hub_state())

    # --- what Home Assistant sends ----------------------------------------------------
    def handle_birth(self, payload: bytes) -> None:
        if payload.strip() == ha.BIRTH_ONLINE:
            try:
                self.republish()
            except LinkHubError as exc:
                log.warning("could not publish the discovery configs again for Home Assistant (%s)", exc)

    def handle_command(self, topic: str, payload: bytes) -> None:
        """A command from Home Assistant: checked and sent, or refused and logged.
        Never raises: Home Assistant gets no answer on MQTT but the device's state."""
        parsed = ha.parse_command_topic(topic)
        try:
            if parsed is None:
                raise CommandRefused("unknown_component", f"{topic!r} is not a command topic of the hub")
            device_id, key, attribute = parsed
            description = self._control.description(device_id)
            component = description.component(key) if description is not None else None
            if component is None:
                raise CommandRefused("unknown_component", f"{device_id} has no component {key!r}")
            try:
                value = ha.command_value(component, attribute, payload)
            except ProtocolError as exc:
                raise CommandRefused("invalid_value", exc.description) from None
            self._control.send_command(device_id, key, value, origin=Origin.HOME_ASSISTANT)
        except CommandRefused as exc:
            self.commands_refused += 1
            count = self._refusals_logged.due(time.monotonic())
            if count:
                log.warning(
                    "refused %d command(s) from Home Assistant (at most one such line a minute); "
                    "the latest: %s (%s)",
                    count,
                    exc.reason,
                    exc,
                )
