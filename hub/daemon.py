"""The running hub: wires the database, the broker, the MQTT shell and the link
service together. The shell here is thin: it parses at the edge, asks the
service what to answer, and publishes that answer.
"""

from __future__ import annotations

import importlib.metadata
import logging
import random
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

import linkhub_protocol as protocol
from hub.broker.connection import BrokerAddress, InboundMessage, MqttConnection, MqttResponder, Outbound
from hub.broker.dynsec import (
    HOME_ASSISTANT_USERNAME,
    CheckedIssuer,
    DynSecAdmin,
    expands_client_id,
    service_client_id,
)
from hub.broker.managed import (
    ADMIN_USERNAME,
    Bridge,
    ManagedBroker,
    ManagedBrokerConfig,
    RestartBudget,
    SupervisionHooks,
)
from hub.broker.retained import (
    ConnectionFactory,
    clear_device_retained,
    clear_retained_link_requests,
    retained_under,
    sweep_connection_factory,
)
from hub.config.model import HubConfig, link_page_url
from hub.core import home_assistant as ha
from hub.core.accounts import AccountDirectory
from hub.core.link_limits import LinkRequestLimits, LogEvery
from hub.core.rate_limits import DeviceLimits
from hub.errors import LinkHubError
from hub.net.addresses import lan_addresses
from hub.services import metrics
from hub.services.activity import ActivityLog
from hub.services.apps import AppService
from hub.services.device_control import DeviceControl
from hub.services.home_assistant import HomeAssistant, HomeAssistantLogin
from hub.services.links import Clock, InboundRequest, LinkPolicy, LinkService, OutboundReply
from hub.services.local_accounts import AccountService
from hub.services.outbox import Outbox
from hub.services.retention import Pruner
from hub.services.settings import SettingsService
from hub.store.engine import MB, SingleHubLock, SpaceGuard, guard_writes, make_engine
from hub.store.models import Device
from hub.store.secret_file import read_or_create_secret
from linkhub_protocol import (
    Command,
    DeviceReply,
    LinkReply,
    LinkRequest,
    Rejection,
    SettingsDesired,
    StateReport,
)

# hub.net.mdns (zeroconf, asyncio: ~4 MB resident) is imported only when mDNS is on.
if TYPE_CHECKING:
    from hub.net.mdns import HubAdvertiser, HubAnnouncement

log = logging.getLogger(__name__)

HUB_USERNAME_PREFIX = "linkhub-hub-"
# How often the broker's device identities are reconciled with the database.
MAINTENANCE_INTERVAL_S = 60.0


@dataclass(frozen=True, slots=True)
class HubEndpoints:
    link_page_url: str
    broker: BrokerAddress  # where the hub itself connects
    device_broker: BrokerAddress  # what devices are told
    # The TLS port devices are told (same host as device_broker); None without TLS.
    device_tls_port: int | None = None
    # The OAuth issuer apps are told (web/oauth/); None while oauth_port is 0.
    oauth_issuer: str | None = None


def oauth_issuer_url(config: HubConfig, public_host: str) -> str | None:
    """The issuer: oauth_issuer as given, else https://<public host>:<oauth_port>/oauth."""
    if not config.oauth_port:
        return None
    if config.oauth_issuer:
        return config.oauth_issuer
    host = f"[{public_host}]" if ":" in public_host else public_host
    port = "" if config.oauth_port == 443 else f":{config.oauth_port}"
    return f"https://{host}{port}/oauth"


def _version() -> str:
    try:
        return importlib.metadata.version("linkhub")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _read_or_create_secret(path: Path, n_bytes: int = 24) -> str:
    """Short ones (the hub's id) in hex, to read aloud; passwords URL-safe."""
    return read_or_create_secret(
        path, lambda: secrets.token_hex(n_bytes) if n_bytes < 16 else secrets.token_urlsafe(n_bytes)
    )


class Hub:
    def __init__(
        self,
        config: HubConfig,
        *,
        clock: Clock = time.time,
        rng: random.Random | None = None,
        broker_wait: Callable[[float], bool] | None = None,
    ) -> None:
        """`broker_wait(seconds)`: how the supervisor of the hub's own mosquitto waits
        before a restart, True to give up waiting (tests hold the broker down with it)."""
        self.config = config
        self._broker_wait = broker_wait
        self._clock = clock
        self._rng = rng
        self.engine: Engine | None = None
        self.space: SpaceGuard | None = None
        self.managed_broker: ManagedBroker | None = None
        self._admin: DynSecAdmin | None = None
        self._mqtt: MqttConnection | None = None
        self._link_responder: MqttResponder | None = None
        self._retained_sweep: ConnectionFactory | None = None
        self._links: LinkService | None = None
        self._accounts: AccountDirectory | None = None
        self._settings: SettingsService | None = None
        self._control: DeviceControl | None = None
        self._home_assistant: HomeAssistant | None = None
        self._hub_id: str | None = None
        self._linked_count: int | None = None
        self._activity: ActivityLog | None = None
        self._apps: AppService | None = None
        self._outbox: Outbox | None = None
        self._single_hub: SingleHubLock | None = None
        self._pruner: Pruner | None = None
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        self._advertiser: HubAdvertiser | None = None
        self.endpoints: HubEndpoints | None = None
        # Whether the broker confines link requests to each client's own id (%c); set at start.
        self.broker_expands_client_id: bool | None = None
        self._rejections_logged = LogEvery()
        self._routes = self._device_routes()
        # Unlinked devices whose retained topics are not all cleared yet:
        # device id -> (monotonic time of the next try, current delay).
        self._clearing: dict[str, tuple[float, float]] = {}
        self._clearing_lock = threading.Lock()
        # Called (once) when the hub cannot go on, with why: its managed mosquitto
        # kept dying. `linkhub run` then stops and exits non-zero.
        self.on_fatal: Callable[[str], None] | None = None
        self.fatal: str | None = None

    # --- lifecycle ------------------------------------------------------------
    def start(self) -> HubEndpoints:
        config = self.config
        if config.mdns:
            from hub.net.mdns import check_interfaces

            check_interfaces(config.mdns_interfaces)  # a typo fails before anything starts
        config.data_dir.mkdir(parents=True, exist_ok=True)
        # Several hubs may share a PostgreSQL database, never a SQLite file (hub/store/engine.py).
        self._single_hub = SingleHubLock.for_url(config.database_url)
        if self._single_hub is not None:
            self._single_hub.acquire()
        try:
            self.engine = make_engine(config.database_url)
        except BaseException:
            self.stop()
            raise
        self.space = SpaceGuard(config.data_dir, config.min_free_space_mb * MB)
        guard_writes(self.engine, self.space)
        self._accounts = self._account_directory()
        self._activity = ActivityLog(self.engine, self._clock)
        self._apps = AppService(
            self.engine,
            self._activity,
            self._clock,
            code_lifetime_s=config.code_lifetime_s,
            poll_interval_s=config.poll_interval_s,
            allow_unregistered=config.oauth_unregistered_apps,
            rng=self._rng,
        )
        self._outbox = Outbox(self.engine, self._accounts, clock=self._clock)
        device_limits = DeviceLimits(config.limits.device_rates())
        self._settings = SettingsService(
            self.engine,
            self,
            clock=self._clock,
            activity=self._activity,
            outbox_changed=self._outbox.notify,
            limits=device_limits,
        )
        self._control = DeviceControl(
            self.engine, self, clock=self._clock, activity=self._activity, limits=device_limits
        )
        self._control.start()
        broker, admin_user, admin_password = self._start_broker()
        try:
            self._admin = DynSecAdmin(broker, admin_user, admin_password)
            self._admin.start()
            # One broker identity per data directory: hubs that share a broker but
            # not a data directory never reset each other's password.
            hub_id = self._hub_id = _read_or_create_secret(config.data_dir / "hub-id", 6)
            hub_username = HUB_USERNAME_PREFIX + hub_id
            hub_password = _read_or_create_secret(config.data_dir / "hub-password")
            self._admin.ensure_hub_identity(hub_username, hub_password)
            self._retained_sweep = sweep_connection_factory(broker, hub_username, hub_password)
            issuer = CheckedIssuer(self._admin, self.check_broker_file)
            endpoints = self._endpoints(broker)
            self._links = LinkService(
                self.engine,
                LinkPolicy(
                    code_lifetime_s=config.code_lifetime_s,
                    poll_interval_s=config.poll_interval_s,
                    link_page_url=endpoints.link_page_url,
                    device_broker_host=endpoints.device_broker.host,
                    device_broker_port=endpoints.device_broker.port,
                    device_broker_tls_port=endpoints.device_tls_port,
                    device_broker_ca_cert=self.ca_certificate,
                    unconfirmed_lifetime_s=config.unconfirmed_device_lifetime_s,
                ),
                issuer=issuer,
                sender=self,
                clock=self._clock,
                activity=self._activity,
                retained=self,
                rng=self._rng,
                request_limits=LinkRequestLimits(config.limits, code_lifetime_s=config.code_lifetime_s),
            )
            self._mqtt = MqttConnection(
                broker,
                client_id=service_client_id("hub"),
                username=hub_username,
                password=hub_password,
                on_message=self._on_message,
                label="the hub's main connection",
                on_lost=self._broker_lost,
                # Home Assistant shows the hub, and every device through it, unavailable.
                will=(ha.hub_status_topic(hub_id), ha.HUB_OFFLINE) if config.home_assistant else None,
            )
            self._mqtt.start()
            # The bootstrap role needs to know whether this broker expands %c, which
            # takes the hub's own connection to find out; devices wait for it no
            # longer than for the subscription below.
            self.broker_expands_client_id = expands_client_id(self._mqtt)
            self._admin.ensure_bootstrap(per_client=self.broker_expands_client_id)
            self.check_broker_file()
            self._narrow_device_roles()
            # Link requests on a connection of their own, answered where they are read.
            self._link_responder = MqttResponder(
                broker,
                client_id=service_client_id("links"),
                username=hub_username,
                password=hub_password,
                topic_filter=protocol.link_request_subscription(),
                respond=self._answer_link_requests,
                max_payload_bytes=protocol.MAX_LINK_REQUEST_BYTES,
            )
            self._link_responder.start()
            # Retained link requests parked while no hub listened (the responder
            # clears those that arrive while it does).
            self._clear_retained_requests()
            metrics.of(self.engine).watch_broker(self._mqtt, self._link_responder)
            self._mqtt.subscribe(protocol.device_status_subscription())
            self._mqtt.subscribe(protocol.device_state_subscription())
            if config.home_assistant:
                self._home_assistant = HomeAssistant(
                    self._control,
                    self._links,
                    self,
                    ha.HubCard(hub_id, _version(), endpoints.link_page_url.removesuffix("/link")),
                    device_page=lambda device_id: f"{endpoints.link_page_url.removesuffix('/link')}"
                    f"/devices/{device_id}",
                    healthy=self._healthy,
                    clock=self._clock,
                )
                self._control.described = self._home_assistant.described
                self._links.renamed = self._home_assistant.renamed
                # Commands shared, so each is sent once; Home Assistant's birth to every hub.
                self._mqtt.subscribe(protocol.shared_subscription(ha.command_subscription()))
                self._mqtt.subscribe(ha.BIRTH_TOPIC)
            for topic_filter in protocol.device_inbound_subscriptions():
                self._mqtt.subscribe(topic_filter)
            self._outbox.start()
            self._maintain()  # identities left by a hub that died mid-approval, expired ones
            self._resume_clearings()
            self._reconcile_home_assistant()
            self._pruner = Pruner(self.engine, config.retention, clock=self._clock)
            self._pruner.start()
            if config.mdns:
                from hub.net.mdns import advertise_hub

                # Last: devices that find the hub must find its broker ready.
                self._advertiser = advertise_hub(
                    self._announcement(endpoints, hub_id), config.mdns_interfaces
                )
        except BaseException:
            self.stop()
            raise
        self._sweeper = threading.Thread(target=self._sweep, name="link-expiry", daemon=True)
        self._sweeper.start()
        self.endpoints = endpoints
        return endpoints

    def stop(self) -> None:
        self._stop.set()
        # Unregister first: a device looking now should not find a hub on its way out.
        if self._advertiser is not None:
            try:
                self._advertiser.stop()
            except Exception:
                log.exception("while withdrawing the mDNS records")
            self._advertiser = None
        # The sweeper first: it may be publishing, and must not wait on a closing connection.
        if self._sweeper is not None:
            self._sweeper.join(timeout=5)
        if (
            self._mqtt is not None
            and self._mqtt.connected.is_set()  # not stopped already
            and self._home_assistant is not None
            and self._hub_id is not None
        ):
            # A goodbye, not a will: Home Assistant shows the hub's devices unavailable.
            try:
                self._mqtt.publish(ha.hub_status_topic(self._hub_id), ha.HUB_OFFLINE, qos=1, retain=True)
            except LinkHubError as exc:
                log.warning("could not tell Home Assistant the hub is stopping (%s)", exc)
        if self._mqtt is not None:
            # Answer what devices already sent (a change sent just before SIGTERM is
            # stored and must get its reply), with nothing new coming in meanwhile.
            try:
                self._mqtt.drain()
            except Exception:
                log.exception("while draining the device messages that had arrived")
        parts = (self._pruner, self._outbox, self._control, self._link_responder, self._mqtt, self._admin)
        for part in parts:
            if part is not None:
                try:
                    part.stop()
                except Exception:  # stopping must go on to the broker whatever happens
                    log.exception("while stopping")
        if self.managed_broker is not None:
            self.managed_broker.stop()
        if self.engine is not None:
            self.engine.dispose()
        if self._single_hub is not None:
            self._single_hub.release()

    def _account_directory(self) -> AccountDirectory:
        assert self.engine is not None
        if self.config.account_service_url is None:
            return AccountService(self.engine, self._clock)
        from hub.services.remote_accounts import RemoteAccountService

        return RemoteAccountService(self.config.account_service_url, self.config.account_service_token or "")

    def _start_broker(self) -> tuple[BrokerAddress, str, str]:
        external = self.config.external_broker
        if external is not None:
            address = BrokerAddress(external.host, external.port)
            return address, external.admin_username, external.admin_password
        self.managed_broker = ManagedBroker(
            ManagedBrokerConfig(
                self.config.broker_dir,
                self.config.mqtt_host,
                self.config.mqtt_port,
                tls_port=self.config.mqtt_tls_port,
                tls_names=self._tls_names() if self.config.mqtt_tls_port else (),
                bridge=self._home_assistant_bridge(),
            )
        )
        self.managed_broker.start()
        assert self.engine is not None
        metrics.of(self.engine).broker_storage_problem = self.managed_broker.dynsec_file.storage_problem
        hub_metrics = metrics.of(self.engine)
        self.managed_broker.supervise(
            SupervisionHooks(down=hub_metrics.broker_down, up=hub_metrics.broker_up, gave_up=self._give_up),
            RestartBudget(
                limit=self.config.broker_restart_limit, window_s=self.config.broker_restart_window_s
            ),
            wait=self._broker_wait,
        )
        return self.managed_broker.address, ADMIN_USERNAME, self.managed_broker.admin_password

    def _home_assistant_bridge(self) -> Bridge | None:
        """--home-assistant-broker: the hub's mosquitto bridges Home Assistant's
        topics (hub/core/home_assistant.py bridge_topics) to that broker."""
        remote = self.config.home_assistant_broker
        if remote is None:
            return None
        hub_id = _read_or_create_secret(self.config.data_dir / "hub-id", 6)
        return Bridge(
            "linkhub-home-assistant",
            remote.host,
            remote.port,
            remote.admin_username,
            remote.admin_password,
            client_id=f"linkhub-bridge-{hub_id}",
            topics=tuple(ha.bridge_topics()),
        )

    def tls_names(self) -> tuple[str, ...]:
        """The names a TLS certificate of this hub must carry (the pages' HTTPS too)."""
        return self._tls_names()

    def _give_up(self, reason: str) -> None:
        if self.engine is not None:
            metrics.of(self.engine).broker_down(f"{reason}; given up: the hub is stopping")
        self.fatal = reason
        if self.on_fatal is not None:
            self.on_fatal(reason)

    def _broker_lost(self) -> None:
        """The main connection dropped: no device's status is known until they say it again."""
        if self.engine is not None:
            metrics.of(self.engine).broker_lost()
        if self._links is not None:
            self._links.broker_lost()

    def _tls_names(self) -> tuple[str, ...]:
        """Every host a device may be told to connect to (the public host, or the
        web page's or broker's address, the LAN addresses, --device-broker's host):
        the TLS certificate must name each, or the device's host-name check fails."""
        from hub.broker.tls import server_names  # `cryptography` costs 9 MB: only with TLS on

        config = self.config
        hosts = [config.public_host, config.http_host, config.mqtt_host, *lan_addresses()]
        if config.device_broker is not None:
            hosts.append(config.device_broker.host)
        return server_names(hosts, mdns_name=config.mdns_name)

    @property
    def ca_certificate(self) -> str | None:
        """The CA certificate (PEM) of the broker's TLS listener; public. None without TLS."""
        return self.managed_broker.ca_pem if self.managed_broker is not None else None

    def _announcement(self, endpoints: HubEndpoints, hub_id: str) -> HubAnnouncement:
        """What mDNS says about this hub. The broker's host is named only when it
        is not this machine's every address (an external broker, or one bound to
        a single address); hub.net.mdns drops it when it is one of the advertised ones."""
        from hub.net.mdns import HubAnnouncement

        config = self.config
        on_every_address = config.external_broker is None and config.mqtt_host in ("0.0.0.0", "")
        return HubAnnouncement(
            label=config.mdns_name,
            hub_id=hub_id,
            mqtt_port=endpoints.device_broker.port,
            mqtt_tls_port=endpoints.device_tls_port,
            http_port=config.http_port,
            broker_host=None if on_every_address else endpoints.device_broker.host,
            http_host=config.http_host,
        )

    def _endpoints(self, broker: BrokerAddress) -> HubEndpoints:
        config = self.config
        public_host = config.public_host
        if public_host is None:
            lan = lan_addresses()
            public_host = lan[0] if lan and config.http_host in ("0.0.0.0", "") else None
        if public_host is None:
            public_host = "127.0.0.1" if config.http_host in ("0.0.0.0", "") else config.http_host
        device_broker = BrokerAddress(broker.host, broker.port)
        if config.external_broker is None and config.mqtt_host in ("0.0.0.0", ""):
            device_broker = BrokerAddress(public_host, broker.port)
        if config.device_broker is not None:
            given = config.device_broker
            device_broker = BrokerAddress(given.host, given.port or broker.port)
        return HubEndpoints(
            link_page_url=link_page_url(
                public_host, http_port=config.http_port, https_port=config.https_port
            ),
            broker=broker,
            device_broker=device_broker,
            device_tls_port=config.mqtt_tls_port or None,
            oauth_issuer=oauth_issuer_url(config, public_host),
        )

    # --- what the hub is made of, for its shells and its tests (read-only) ---------
    @property
    def broker_admin(self) -> DynSecAdmin | None:
        """The dynamic-security connection (None before start or after stop)."""
        return self._admin

    @property
    def main_connection(self) -> MqttConnection | None:
        """The connection device status and settings messages arrive on."""
        return self._mqtt

    @property
    def link_responder(self) -> MqttResponder | None:
        """The connection link requests arrive and are answered on."""
        return self._link_responder

    @property
    def advertiser(self) -> HubAdvertiser | None:
        """The mDNS advertisement (None with mDNS off, or before start)."""
        return self._advertiser

    @property
    def sweeper_running(self) -> bool:
        """Whether the thread that expires codes and runs maintenance is alive."""
        return self._sweeper is not None and self._sweeper.is_alive()

    def clearing_jobs(self) -> set[str]:
        """Unlinked devices whose retained topics the sweeper is still clearing."""
        with self._clearing_lock:
            return set(self._clearing)

    @property
    def apps(self) -> AppService:
        """Apps linked over HTTP (OAuth's device authorization grant)."""
        if self._apps is None:
            raise LinkHubError("the hub is not started")
        return self._apps

    @property
    def links(self) -> LinkService:
        if self._links is None:
            raise LinkHubError("the hub is not started")
        return self._links

    @property
    def accounts(self) -> AccountDirectory:
        if self._accounts is None:
            raise LinkHubError("the hub is not started")
        return self._accounts

    @property
    def settings(self) -> SettingsService:
        if self._settings is None:
            raise LinkHubError("the hub is not started")
        return self._settings

    @property
    def control(self) -> DeviceControl:
        if self._control is None:
            raise LinkHubError("the hub is not started")
        return self._control

    @property
    def activity(self) -> ActivityLog:
        if self._activity is None:
            raise LinkHubError("the hub is not started")
        return self._activity

    @property
    def outbox(self) -> Outbox:
        if self._outbox is None:
            raise LinkHubError("the hub is not started")
        return self._outbox

    # --- the MQTT shell -------------------------------------------------------
    def send_reply(self, reply_to: str, reply: LinkReply, correlation: bytes | None) -> None:
        if self._mqtt is None:
            raise LinkHubError("the hub is not connected to its broker")
        self._mqtt.publish(reply_to, protocol.encode(reply), qos=1, correlation_data=correlation)

    def send_to_devices(
        self, messages: Sequence[tuple[str, str, SettingsDesired | DeviceReply | Command]]
    ) -> list[LinkHubError | float]:
        if self._mqtt is None:
            return [LinkHubError("the hub is not connected to its broker")] * len(messages)
        # Never retained: a replayed old change or command would override a newer
        # one (Tasmota issues 2929, 2053).
        return list(
            self._mqtt.publish_many(
                [
                    (protocol.device_topic(device_id, leaf), protocol.encode(message), None)
                    for device_id, leaf, message in messages
                ]
            )
        )

    def retain_state(self, device_id: str, report: StateReport | None) -> None:
        if self._mqtt is None:
            raise LinkHubError("the hub is not connected to its broker")
        payload = protocol.encode(report) if report is not None else b""
        self._mqtt.publish(protocol.device_topic(device_id, protocol.STATE), payload, qos=1, retain=True)

    # --- Home Assistant's retained configs (hub/services/home_assistant.py) ----------
    def publish_retained(self, messages: list[tuple[str, bytes]]) -> None:
        if self._mqtt is None:
            raise LinkHubError("the hub is not connected to its broker")
        for result in self._mqtt.publish_many([(t, p, None) for t, p in messages], retain=True):
            if isinstance(result, LinkHubError):
                raise result

    def retained_discovery_topics(self) -> set[str]:
        if self._retained_sweep is None or self._hub_id is None:
            raise LinkHubError("the hub is not connected to its broker")
        return retained_under(
            self._retained_sweep, ha.config_subscription(), ha.hub_status_topic(self._hub_id)
        )

    def home_assistant_login(self) -> HomeAssistantLogin:
        """Make Home Assistant's broker identity with a new password (the one
        before, if any, stops working): hub/broker/dynsec.py home_assistant_acls."""
        if self._admin is None or self.endpoints is None:
            raise LinkHubError("the hub is not started")
        password = secrets.token_urlsafe(24)
        self._admin.ensure_home_assistant(password)
        self.check_broker_file()
        broker = self.endpoints.device_broker
        return HomeAssistantLogin(
            broker.host, broker.port, HOME_ASSISTANT_USERNAME, password, self.endpoints.device_tls_port
        )

    @property
    def home_assistant(self) -> HomeAssistant | None:
        """Home Assistant discovery (None when it is off, or before start)."""
        return self._home_assistant

    def _reconcile_home_assistant(self) -> None:
        if self._home_assistant is None:
            return
        try:
            self._home_assistant.reconcile()
            self._linked_count = self.links.linked_count()
        except LinkHubError as exc:
            log.warning("could not bring Home Assistant's configs up to date (%s); trying again", exc)

    def _healthy(self) -> bool:
        """Whether the hub takes changes: for Home Assistant's "problem" sensor."""
        return self.space is None or self.space.shortage() is None

    def _watch_linked_count(self) -> None:
        """Home Assistant's count of linked devices, when it changed (sweeper)."""
        if self._home_assistant is None:
            return
        count = self.links.linked_count()
        if count != self._linked_count:
            self._linked_count = count
            try:
                self._home_assistant.linked()
            except LinkHubError as exc:
                log.warning("could not update Home Assistant's count of linked devices (%s)", exc)

    def clear_device_topics(self, device_id: str) -> list[str]:
        """An unlinked device's retained messages, emptied on a connection of its own
        (hub/broker/retained.py), so the hub's long-lived subscriptions stay as they are."""
        if self._control is not None:
            self._control.forget(device_id)
        if self._home_assistant is not None:
            try:
                self._home_assistant.unlinked(device_id)
            except LinkHubError as exc:  # the next start's reconciliation removes them
                log.warning("could not remove %s from Home Assistant (%s)", device_id, exc)
        if self._retained_sweep is None:
            raise LinkHubError("the hub is not connected to its broker")
        # The unlink left the clearing recorded as unfinished (revision 0007), so a
        # hub that stops before the job is done takes it up again at its start.
        try:
            cleared, done = clear_device_retained(self._retained_sweep, device_id)
        except LinkHubError:
            self._schedule_clearing(device_id)
            raise
        if not done:
            self._schedule_clearing(device_id)
            return cleared
        try:
            self.links.clearing_finished(device_id)
        except Exception:  # the unlink itself is committed: the job is done again, harmlessly
            log.exception("could not record that %s's retained topics are cleared", device_id)
            self._schedule_clearing(device_id)
        return cleared

    def retry_clearing(self, device_id: str) -> None:
        """Keep an unfinished clearing as a job the sweeper retries until it is
        done (issue 19: a sweep that gave up after 5 s left 93,047 retained
        messages for the life of the broker). Recorded in the database too, so
        a hub that stops first takes it up again at its next start."""
        self.links.clearing_unfinished(device_id)
        self._schedule_clearing(device_id)

    def _schedule_clearing(self, device_id: str) -> None:
        with self._clearing_lock:
            self._clearing.setdefault(device_id, (0.0, 1.0))

    def _resume_clearings(self) -> None:
        """At start: the clearings a hub on this database left unfinished."""
        unfinished = self.links.unfinished_clearings()
        for device_id in unfinished:
            self._schedule_clearing(device_id)
        if unfinished:
            log.info("taking up %d unfinished clearing(s) of retained topics", len(unfinished))

    def _run_clearing_jobs(self) -> None:
        now = time.monotonic()
        with self._clearing_lock:
            due = [device_id for device_id, (at, _) in self._clearing.items() if at <= now]
        for device_id in due:
            try:
                assert self._retained_sweep is not None
                cleared, done = clear_device_retained(self._retained_sweep, device_id)
            except LinkHubError as exc:
                cleared, done = [], False
                log.warning("clearing %s's retained topics failed again (%s); trying again", device_id, exc)
            if done:
                try:
                    self.links.clearing_finished(device_id)
                except Exception:  # the database away: the job stays and is done again
                    log.exception("could not record that %s's retained topics are cleared", device_id)
                    done = False
            with self._clearing_lock:
                if done:
                    self._clearing.pop(device_id, None)
                else:  # back off, up to a minute between tries
                    delay_s = min(self._clearing[device_id][1] * 2, 60.0)
                    self._clearing[device_id] = (time.monotonic() + delay_s, delay_s)
            more = "" if done else "; more to do"
            log.info("cleared %d more retained topic(s) of %s%s", len(cleared), device_id, more)

    def _send(self, outbound: OutboundReply | None) -> None:
        if outbound is None:
            return
        try:
            self.send_reply(outbound.reply_to, outbound.reply, outbound.correlation)
        except LinkHubError as exc:
            log.warning("reply to a link request not delivered (%s); the device will poll again", exc)

    def _answer_link_requests(self, batch: list[InboundMessage]) -> list[Outbound]:
        """Link requests that arrived together, answered together: one transaction,
        the answers in arrival order (MqttResponder publishes them)."""
        requests: list[InboundRequest] = []
        answers: list[OutboundReply] = []
        for message in batch:
            client_id = protocol.link_request_client_id(message.topic)
            refused: Rejection | None = None  # None: not on a request topic at all
            if client_id is not None:
                parsed = protocol.parse_link_request(
                    message.payload, message.response_topic, message.correlation_data, client_id=client_id
                )
                if isinstance(parsed, LinkRequest):
                    requests.append(InboundRequest(parsed, message.correlation_data, client_id))
                    continue
                refused = parsed
            answers.extend(self._answer_requests(requests))
            requests = []
            refusal = self._refuse_request(message, refused)
            if refusal is not None:
                answers.append(refusal)
        answers.extend(self._answer_requests(requests))
        return [(answer.reply_to, protocol.encode(answer.reply), answer.correlation) for answer in answers]

    def _answer_requests(self, requests: list[InboundRequest]) -> list[OutboundReply]:
        if not requests:
            return []
        started = time.perf_counter()
        try:
            replies = self.links.handle_requests(requests)
        except Exception:
            log.exception("could not answer %d link request(s); the devices will resend", len(requests))
            return []
        # Each request waited for the whole batch: that is its answer time.
        if self.engine is not None:  # always, once started: requests arrive only then
            metrics.of(self.engine).link_requests_answered(len(requests), time.perf_counter() - started)
        return replies

    def _refuse_request(self, message: InboundMessage, parsed: Rejection | None) -> OutboundReply | None:
        """A link request that does not parse: an error reply where one may go."""
        if parsed is None:
            log.warning("dropped a message on unexpected topic %s", message.topic)
            return None
        refused = self._rejections_logged.due(time.monotonic())
        if refused:  # garbage can come fast: one line a minute at most
            log.warning(
                "refused %d malformed link request(s) (at most one such line a minute); the latest: %s (%s)",
                refused,
                parsed.error,
                parsed.description,
            )
        correlation = message.correlation_data
        if correlation is not None and len(correlation) > protocol.MAX_CORRELATION_BYTES:
            correlation = None
        return self.links.handle_rejection(parsed, correlation)

    # --- routing: what arrives on which topic, and who handles it --------------
    # The one table. Link requests arrive on their own connection (MqttResponder,
    # protocol.link_request_subscription(), answered in _answer_link_requests);
    # everything else a device sends arrives on the main connection, under
    # linkhub/v1/devices/<device_id>/<leaf>, and goes by its leaf:
    #   status                     -> _on_status: LinkService (online, first connect)
    #   settings/get|reported|set  -> SettingsService.handle_device_message
    #   description                -> DeviceControl.handle_description
    #   state                      -> _on_state: DeviceControl.handle_state
    # (subscribed in start(): status and state per hub, settings and description shared.)
    def _device_routes(self) -> dict[str, Callable[[str, str, InboundMessage], None]]:
        """Built once, in __init__: `_on_message` looks a handler up per message."""
        return {
            protocol.STATUS: self._on_status,
            **{leaf: self._on_settings_message for leaf in protocol.DEVICE_INBOUND},
            protocol.DESCRIPTION: self._on_description,
            protocol.STATE: self._on_state,
        }

    def _on_message(self, message: InboundMessage) -> None:
        """Anything but a link request: by the device topic's leaf (_device_routes),
        or from Home Assistant (its commands, its birth)."""
        if self._home_assistant is not None:
            if message.topic.startswith(ha.COMMAND_ROOT + "/"):
                self._home_assistant.handle_command(message.topic, message.payload)
                return
            if message.topic == ha.BIRTH_TOPIC:
                self._home_assistant.handle_birth(message.payload)
                return
        device_topic = protocol.parse_device_topic(message.topic)
        handler = self._routes.get(device_topic[1]) if device_topic is not None else None
        if device_topic is None or handler is None:
            log.warning("dropped a message on unexpected topic %s", message.topic)
            return
        device_id, leaf = device_topic
        handler(device_id, leaf, message)

    def _on_status(self, device_id: str, _leaf: str, message: InboundMessage) -> None:
        if not message.payload:
            return  # a retained status being cleared (an unlink): nothing to record
        if self._is_ghost(device_id, message):
            return
        status = self.settings.checked_status(device_id, message.payload)
        if status is not None:
            self.links.device_status(device_id, status.online)

    def _on_settings_message(self, device_id: str, leaf: str, message: InboundMessage) -> None:
        self.settings.handle_device_message(device_id, leaf, message.payload)

    def _on_description(self, device_id: str, _leaf: str, message: InboundMessage) -> None:
        self.control.handle_description(device_id, message.payload)

    def _on_state(self, device_id: str, _leaf: str, message: InboundMessage) -> None:
        if message.payload and not self._is_ghost(device_id, message):
            self.control.handle_state(device_id, message.payload)

    def _is_ghost(self, device_id: str, message: InboundMessage) -> bool:
        """A retained message of a device this hub unlinked, e.g. left by a broker
        that was away during the unlink: cleared rather than handed to every
        subscriber (Home Assistant would show the device's last state)."""
        if message.retain and self.links.was_unlinked(device_id):
            self._clear_ghost(message.topic)
            return True
        return False

    def _clear_ghost(self, topic: str) -> None:
        if self._mqtt is None:
            return
        try:
            self._mqtt.publish(topic, b"", qos=1, retain=True)
        except LinkHubError as exc:
            log.warning("could not clear the retained %s of an unlinked device (%s)", topic, exc)

    def check_broker_file(self) -> None:
        """After an identity change: the hub's own mosquitto saved it whole (hub/broker/managed.py)."""
        if self.managed_broker is not None:
            self.managed_broker.dynsec_file.check()

    def _maintain(self) -> None:
        """Broker identities no linked device names are removed; devices approved but
        never connected lose their credentials (LinkService)."""
        try:
            self.links.reconcile_identities()
            self.links.expire_unconfirmed()
        except Exception:
            log.exception("reconciling the broker's device identities failed; trying again later")

    def _narrow_device_roles(self) -> None:
        """Devices linked by an older hub get today's role (hub/broker/dynsec.py
        `device_acls`: their fixed topics only). Each changed role kicks its
        device once, which reconnects; reading them costs a round trip per 100."""
        assert self.engine is not None and self._admin is not None
        with Session(self.engine) as session:
            linked = select(Device.device_id).where(col(Device.unlinked_at_s).is_(None))
            device_ids = session.exec(linked).all()
        changed = self._admin.narrow_device_roles(list(device_ids))
        if changed:
            log.info("brought %d device role(s) to today's topics (hub/broker/dynsec.py)", changed)

    def _clear_retained_requests(self) -> None:
        """Empty every retained link request (hub/broker/retained.py): at start, and when
        the responder saw more of them than it remembers."""
        if self._retained_sweep is None or self._link_responder is None:
            return
        self._link_responder.needs_retained_sweep.clear()
        try:
            cleared = clear_retained_link_requests(self._retained_sweep)
        except LinkHubError as exc:
            self._link_responder.needs_retained_sweep.set()  # the sweeper tries again
            log.warning("could not clear retained link requests (%s); trying again", exc)
            return
        if cleared:
            log.warning("cleared %d retained link request(s): nothing should retain one", len(cleared))

    def _sweep(self) -> None:
        """Tell devices their code expired when it does, not only when they poll;
        every MAINTENANCE_INTERVAL_S (on the hub's clock), `_maintain`."""
        maintained_at_s = self._clock()
        while not self._stop.wait(1.0):
            try:
                for outbound in self.links.expire_due():
                    self._send(outbound)
            except Exception:
                log.exception("expiry sweep failed; trying again in a second")
            if self._clock() - maintained_at_s >= MAINTENANCE_INTERVAL_S:
                maintained_at_s = self._clock()
                self._maintain()
            responder = self._link_responder
            if responder is not None and responder.needs_retained_sweep.is_set():
                self._clear_retained_requests()
            self._run_clearing_jobs()
            try:
                self._watch_linked_count()
            except Exception:
                log.exception("counting linked devices for Home Assistant failed; trying again")
