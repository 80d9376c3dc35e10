"""`linkhub-device fleet`: many simulated devices in one process, to load a hub
with a realistic population.

Each device is what `linkhub-device link` and `run` make of one state file
(`STATE_DIR/device-0001.json`, ...): it links through `firmware_sim.link.link`
(its own request, its own code, its own broker identity), then runs a
`firmware_sim.run.DeviceSession` on that identity: online status, the desired
settings applied and reported, button presses from `linkhub-device set` served.
A second run with the same state directory finds the credentials and only
reconnects.

What differs from N `run` processes is the I/O. paho's own loop (`loop_start`)
is a thread per client waiting in select(), and select() cannot watch a file
descriptor above 1023. Such a client holds three (its socket and a wake-up
pair), so one process with more than ~340 of them sees connections fail and
reconnect forever. So a connected fleet device is a paho client driven from
outside (`loop_read`, `loop_write`, `loop_misc`, paho's external-loop API) by
one epoll thread, `NetLoop`, and a few worker threads run the sessions: for
1,000 devices, 2 + workers threads and one socket per device (plus its lock
file) instead of 1,000 threads and 3,000 descriptors.

Linking keeps `link()` as it is (a paho thread per device being linked) in a
small pool, and runs before any device connects, while descriptors are few.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import queue
import resource
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from firmware_sim import buttons
from firmware_sim import state as state_file
from firmware_sim.events import Event, EventSink, error, from_mqtt_error
from firmware_sim.link import DEFAULT_RETRY_INTERVAL_S, link
from firmware_sim.mqtt_client import (
    RECONNECT_MAX_DELAY_S,
    RECONNECT_MIN_DELAY_S,
    DeviceMqttClient,
    Incoming,
    MqttError,
    Will,
)
from firmware_sim.run import DeviceSession, publish_status
from linkhub_protocol import DeviceInfo, DeviceStatus, device_status_topic, encode

DEFAULT_LINK_WORKERS = 8
DEFAULT_WORKERS = 4
DEFAULT_NAME_PREFIX = "Fleet Device"
DEFAULT_MODEL = "SIM-FLEET"
# Each session is ticked (resend a lost get, time out a press, look at the
# button spool) this often when nothing arrives for it.
TICK_S = 1.0
OP_TIMEOUT_S = 10.0
# On the way out: a device that cannot say "offline" within this gets its last will.
STOP_TIMEOUT_S = 2.0
APPROVE_TIMEOUT_S = 60.0
MISC_INTERVAL_S = 1.0  # paho's keepalive bookkeeping, per client


Approver = Callable[[str], None]
"""Approves one user code (e.g. through `linkhub link approve`); raises ApprovalError."""

IncomingHook = Callable[["FleetDevice", Incoming, float], None]
"""Sees everything a connected device receives, on the network thread, with the
`time.monotonic()` of its arrival (benchmarks time deliveries with it). Keep it cheap."""


class ApprovalError(Exception):
    """The approver could not approve a code."""


class _Abort(Exception):
    """Raised from a link's event sink to end that link at once (approval failed, stop)."""

    def __init__(self, event: Event | None) -> None:
        super().__init__("link aborted")
        self.event = event


# --- the network thread -------------------------------------------------------------
class NetLoop:
    """One thread doing the socket I/O of many paho clients with epoll.

    Every change to the selector happens on this thread: other threads only queue
    a command (or mark a client as having something to write) and wake it, so a
    socket is never registered twice or written from two threads.
    """

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._commands: list[Callable[[], None]] = []
        self._dirty: set[FleetMqttClient] = set()
        self._dirty_here: set[FleetMqttClient] = set()  # marked on this thread: no lock
        self._woken = False
        self._clients: set[FleetMqttClient] = set()
        self._reconnects: list[tuple[float, int, FleetMqttClient]] = []
        self._sequence = itertools.count()
        self._stopping = False
        # Called on this thread after each round of I/O (the workers are woken there, once).
        self.after_round: list[Callable[[], None]] = []
        self._thread = threading.Thread(target=self._run, name="fleet-net", daemon=True)
        self._thread.start()

    def on_thread(self) -> bool:
        return threading.current_thread() is self._thread

    # --- from any thread ------------------------------------------------------
    def call(self, command: Callable[[], None]) -> None:
        """Run `command` on the network thread: now if already there, else soon."""
        if self.on_thread():
            command()
            return
        with self._lock:
            self._commands.append(command)
        self._wake()

    def wants_write(self, client: FleetMqttClient) -> None:
        if self.on_thread():
            self._dirty_here.add(client)  # flushed at the end of this round; no wake-up needed
            return
        with self._lock:
            self._dirty.add(client)
        self._wake()

    def add(self, client: FleetMqttClient) -> None:
        with self._lock:
            self._clients.add(client)

    def forget(self, client: FleetMqttClient) -> None:
        with self._lock:
            self._clients.discard(client)

    def reconnect_later(self, client: FleetMqttClient, delay_s: float) -> None:
        self.call(
            lambda: heapq.heappush(
                self._reconnects, (time.monotonic() + delay_s, next(self._sequence), client)
            )
        )

    def stop(self) -> None:
        self._stopping = True
        self._wake(force=True)
        self._thread.join(timeout=5)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self, *, force: bool = False) -> None:
        with self._lock:
            if self._woken and not force:
                return
            self._woken = True
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")

    # --- on the network thread ------------------------------------------------
    def register(self, client: FleetMqttClient, sock: socket.socket) -> None:
        if client.paho.socket() is not sock:
            return  # closed again before we got here
        try:
            self._selector.register(sock, selectors.EVENT_READ, client)
        except (KeyError, ValueError, OSError):
            return
        client._registered = (sock, selectors.EVENT_READ)

    def unregister(self, client: FleetMqttClient, sock: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(sock)
        if client._registered is not None and client._registered[0] is sock:
            client._registered = None

    def _run(self) -> None:
        next_misc = time.monotonic() + MISC_INTERVAL_S
        while not self._stopping:
            now = time.monotonic()
            due = next_misc if not self._reconnects else min(next_misc, self._reconnects[0][0])
            try:
                ready = self._selector.select(max(0.0, min(due - now, MISC_INTERVAL_S)))
            except OSError:
                ready = []
            touched: set[FleetMqttClient] = set()
            for key, mask in ready:
                client = key.data
                if client is None:
                    with contextlib.suppress(BlockingIOError, OSError):
                        self._wake_r.recv(4096)
                    continue
                if client.paho.socket() is not key.fileobj:
                    continue  # closed earlier in this round
                if mask & selectors.EVENT_READ:
                    client.paho.loop_read()
                if mask & selectors.EVENT_WRITE and client.paho.socket() is key.fileobj:
                    client.paho.loop_write()
                touched.add(client)
            with self._lock:
                commands, self._commands = self._commands, []
                dirty, self._dirty = self._dirty, set()
                self._woken = False
            for command in commands:
                command()
            dirty |= self._dirty_here
            self._dirty_here = set()
            for client in touched | dirty:
                self._flush(client)
            now = time.monotonic()
            while self._reconnects and self._reconnects[0][0] <= now:
                _, _, client = heapq.heappop(self._reconnects)
                client.reconnect_now()
                self._flush(client)
            if now >= next_misc:
                next_misc = now + MISC_INTERVAL_S
                with self._lock:
                    clients = list(self._clients)
                for client in clients:
                    if client.paho.socket() is not None:
                        client.paho.loop_misc()
                        self._flush(client)
            for after in self.after_round:
                after()

    def _flush(self, client: FleetMqttClient) -> None:
        """Write what the client has queued; watch for writability only while some remains."""
        sock = client.paho.socket()
        if client._registered is None or sock is None or client._registered[0] is not sock:
            return
        if client.paho.want_write():
            client.paho.loop_write()
            sock = client.paho.socket()
            if client._registered is None or sock is None or client._registered[0] is not sock:
                return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.paho.want_write() else 0)
        if events != client._registered[1]:
            self._selector.modify(sock, events, client)
            client._registered = (sock, events)


class _Inbox(queue.Queue[Incoming]):
    """A device's inbox that also tells its worker there is something to do."""

    def __init__(
        self, device: FleetDevice, notify: Callable[[FleetDevice], None], hook: IncomingHook | None
    ) -> None:
        super().__init__()
        self._device = device
        self._notify = notify
        self._hook = hook

    def put(self, item: Incoming, block: bool = True, timeout: float | None = None) -> None:
        if self._hook is not None:
            self._hook(self._device, item, time.monotonic())
        super().put(item, block, timeout)
        self._notify(self._device)


class FleetMqttClient(DeviceMqttClient):
    """A `DeviceMqttClient` whose network I/O is done by a `NetLoop` instead of a
    paho thread of its own; the blocking API and the inbox are unchanged, so
    `DeviceSession` runs on it as it is."""

    def __init__(
        self,
        net: NetLoop,
        *,
        client_id: str,
        username: str,
        password: str,
        mqtt5: bool,
        will: Will | None,
        inbox: queue.Queue[Incoming],
    ) -> None:
        super().__init__(client_id=client_id, username=username, password=password, mqtt5=mqtt5, will=will)
        self.inbox = inbox
        self._net = net
        self._closing = False
        self._closed = threading.Event()
        self._registered: tuple[socket.socket, int] | None = None
        self._backoff_s = RECONNECT_MIN_DELAY_S
        self.paho = self._client
        self.paho.on_socket_open = self._socket_opened
        self.paho.on_socket_close = self._socket_closed
        self.paho.on_socket_register_write = self._register_write

    # --- paho's external-loop callbacks (any thread) --------------------------------
    def _socket_opened(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        # Without it every request/answer round trip waits for delayed ACKs (~40 ms).
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._closed.clear()
        self._net.call(lambda: self._net.register(self, sock))

    def _socket_closed(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        self._net.call(lambda: self._net.unregister(self, sock))
        self._closed.set()
        with self._lock:
            reconnect = self._connected_once and not self._closing
        if reconnect:
            self._net.reconnect_later(self, self._backoff_s)
            self._backoff_s = min(self._backoff_s * 2, RECONNECT_MAX_DELAY_S)

    def _register_write(self, _client: paho.Client, _userdata: Any, _sock: Any) -> None:
        self._net.wants_write(self)

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason_code: ReasonCode, properties: Any
    ) -> None:
        if not reason_code.is_failure:
            self._backoff_s = RECONNECT_MIN_DELAY_S
        super()._on_connect(client, userdata, flags, reason_code, properties)

    def reconnect_now(self) -> None:
        """On the network thread, when a scheduled reconnect is due."""
        if self._closing:
            return
        try:
            self.paho.reconnect()
        except (OSError, ValueError):
            self._net.reconnect_later(self, self._backoff_s)
            self._backoff_s = min(self._backoff_s * 2, RECONNECT_MAX_DELAY_S)

    # --- the blocking API ---------------------------------------------------------
    def _drive_network(self) -> None:
        self._net.add(self)

    def close(self) -> None:
        """Disconnect cleanly (no last will) and stop reconnecting. Idempotent."""
        if self._closing:
            return
        with self._lock:
            self._closing = True
        with contextlib.suppress(Exception):
            self.paho.disconnect()  # the network thread sends it, then closes the socket
        if self.paho.socket() is not None:
            self._closed.wait(STOP_TIMEOUT_S)
        self._net.forget(self)


# --- the fleet -------------------------------------------------------------------------
@dataclass(eq=False)
class FleetDevice:
    """One simulated device of the fleet and where it stands."""

    index: int
    key: str  # the state file's stem, e.g. device-0001; names the device in events
    state_path: Path
    name: str
    device_id: str | None = None
    newly_linked: bool = False
    failed: str | None = None  # the error code that took it out of the fleet
    online: bool = False
    client: FleetMqttClient | None = None
    session: DeviceSession | None = None
    lock: buttons.DeviceLock | None = None
    next_tick: float = 0.0


@dataclass(frozen=True, slots=True)
class FleetOptions:
    host: str
    port: int
    count: int
    state_dir: Path
    name_prefix: str = DEFAULT_NAME_PREFIX
    model: str = DEFAULT_MODEL
    mqtt5: bool = True
    link_workers: int = DEFAULT_LINK_WORKERS
    workers: int = DEFAULT_WORKERS
    link_timeout_s: float | None = None
    retry_interval_s: float = DEFAULT_RETRY_INTERVAL_S
    # What every device is (firmware_sim/profiles.py): it describes itself,
    # reports its state, obeys commands; None: settings only.
    profile: str | None = None


@dataclass(frozen=True, slots=True)
class Summary:
    total: int
    linked: int  # devices holding credentials
    new: int  # of which linked by this run
    online: int  # connected with their own identity now
    errors: int  # devices taken out by an error

    def line(self) -> str:
        return (
            f"fleet: linked={self.linked} online={self.online} errors={self.errors} "
            f"(of {self.total}; {self.new} linked by this run)"
        )

    def to_event(self, **extra: Any) -> Event:
        return {
            "event": "summary",
            "total": self.total,
            "linked": self.linked,
            "new": self.new,
            "online": self.online,
            "errors": self.errors,
            **extra,
        }


def state_name(index: int, count: int) -> str:
    """`device-0001` ... ; at least four digits, so that names sort in order."""
    return f"device-{index:0{max(4, len(str(count)))}d}"


def raise_file_limit(needed: int) -> None:
    """Lift this process's soft descriptor limit toward `needed` (never above the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class Fleet:
    """N devices: `link_all`, then `connect_all`, then they run until `close`.

    Events from every device go to `on_event` with a `device` member (the state
    file's stem); they may come from any thread, one at a time.
    """

    def __init__(
        self,
        options: FleetOptions,
        *,
        on_event: EventSink,
        approver: Approver | None = None,
        on_incoming: IncomingHook | None = None,
    ) -> None:
        self.options = options
        self._on_event = on_event
        self._approver = approver
        self._on_incoming = on_incoming
        self._event_lock = threading.Lock()
        self.devices = [
            FleetDevice(
                index=i,
                key=(key := state_name(i, options.count)),
                state_path=options.state_dir / f"{key}.json",
                name=f"{options.name_prefix} {i:04d}",
            )
            for i in range(1, options.count + 1)
        ]
        self._net: NetLoop | None = None
        self._workers: list[_Worker] = []

    # --- events -----------------------------------------------------------------
    def emit(self, device: FleetDevice | None, event: Event) -> None:
        tagged = event if device is None else {**event, "device": device.key}
        with self._event_lock:
            self._on_event(tagged)

    def _fail(self, device: FleetDevice, event: Event) -> None:
        device.failed = str(event.get("error", "error"))
        device.online = False
        self.emit(device, event)

    # --- linking -------------------------------------------------------------------
    def link_all(self, stop: threading.Event, on_progress: Callable[[int, int], None] | None = None) -> bool:
        """Link every device that holds no credentials yet, a few at a time.

        Returns False if `stop` was set first; links still under way are then
        left to end with the process (their state files keep the pending
        request, so the next run resumes it). Daemon threads, so they can be.
        """
        todo: queue.Queue[FleetDevice] = queue.Queue()
        for device in self.devices:
            try:
                st = state_file.load(device.state_path)
            except state_file.StateError as exc:
                self._fail(device, error("bad_state", str(exc)))
                continue
            if st.linked:
                device.device_id = st.device_id
            else:
                todo.put(device)
        total = todo.qsize()
        done = threading.Semaphore(0)
        workers = max(1, min(self.options.link_workers, total))
        for n in range(workers if total else 0):
            threading.Thread(
                target=self._link_worker, args=(todo, done, stop), name=f"fleet-link-{n}", daemon=True
            ).start()
        finished = 0
        while finished < total:
            if on_progress is not None:
                on_progress(finished, total)
            if stop.is_set():
                return False
            if done.acquire(timeout=0.2):
                finished += 1
        if on_progress is not None:
            on_progress(finished, total)
        return True

    def _link_worker(
        self, todo: queue.Queue[FleetDevice], done: threading.Semaphore, stop: threading.Event
    ) -> None:
        while not stop.is_set():
            try:
                device = todo.get_nowait()
            except queue.Empty:
                return
            try:
                self._link_one(device, stop)
            except Exception as exc:  # a bug must cost one device, not the fleet
                self._fail(device, error("link_failed", f"{type(exc).__name__}: {exc}"))
            finally:
                done.release()

    def _link_one(self, device: FleetDevice, stop: threading.Event) -> None:
        info = DeviceInfo(name=device.name, model=self.options.model)
        for attempt in range(2):
            outcome: list[Event] = []

            def sink(event: Event, device: FleetDevice = device, outcome: list[Event] = outcome) -> None:
                if stop.is_set():
                    raise _Abort(None)
                if event.get("event") == "error":
                    outcome.append(event)
                    return  # reported below, once it is known whether a retry follows
                self.emit(device, event)
                if event.get("event") == "code" and self._approver is not None:
                    try:
                        self._approver(str(event["user_code"]))
                    except ApprovalError as exc:
                        raise _Abort(error("approval_failed", str(exc))) from None

            try:
                code = link(
                    self.options.host,
                    self.options.port,
                    info,
                    device.state_path,
                    mqtt5=self.options.mqtt5,
                    timeout_s=self.options.link_timeout_s,
                    retry_interval_s=self.options.retry_interval_s,
                    on_event=sink,
                    profile=self.options.profile,
                )
            except _Abort as aborted:
                if aborted.event is not None:
                    self._fail(device, aborted.event)
                return
            if code == 0:
                st = state_file.load(device.state_path)
                device.device_id = st.device_id
                device.newly_linked = True
                return
            # A code that expired while nobody approved it (say, the previous run
            # stopped mid-link long ago): ask once more with a new request.
            if attempt == 0 and outcome and outcome[-1].get("error") == "expired_token":
                continue
            self._fail(device, outcome[-1] if outcome else error("link_failed", "linking failed"))
            return

    # --- running -------------------------------------------------------------------
    def connect_all(self, stop: threading.Event) -> None:
        """Connect every linked device (a worker each for its share) and start serving."""
        raise_file_limit(2 * self.options.count + 256)  # a socket and a lock file each
        self._net = NetLoop()
        runnable = [d for d in self.devices if d.device_id is not None and d.failed is None]
        n_workers = max(1, min(self.options.workers, len(runnable) or 1))
        self._workers = [_Worker(self, n, runnable[n::n_workers], stop) for n in range(n_workers)]
        for worker in self._workers:
            worker.attach(self._net)
            worker.start()
        for worker in self._workers:
            worker.connected.wait()

    def make_client(
        self, device: FleetDevice, st: state_file.DeviceState, notify: Callable[[FleetDevice], None]
    ) -> FleetMqttClient:
        assert self._net is not None and st.mqtt is not None and device.device_id is not None
        creds = st.mqtt
        return FleetMqttClient(
            self._net,
            client_id=creds.client_id,
            username=creds.username,
            password=creds.password,
            mqtt5=self.options.mqtt5,
            will=Will(device_status_topic(device.device_id), encode(DeviceStatus(online=False))),
            inbox=_Inbox(device, notify, self._on_incoming),
        )

    def close(self) -> None:
        """Every device says offline and disconnects; then the network thread stops."""
        for worker in self._workers:
            worker.stopping.set()
        for worker in self._workers:
            worker.join(timeout=STOP_TIMEOUT_S * 3 + 10)
        if self._net is not None:
            self._net.stop()
            self._net = None

    def summary(self) -> Summary:
        devices = self.devices
        return Summary(
            total=len(devices),
            linked=sum(d.device_id is not None for d in devices),
            new=sum(d.newly_linked for d in devices),
            online=sum(d.online and d.client is not None and d.client.is_connected() for d in devices),
            errors=sum(d.failed is not None for d in devices),
        )


class _Worker(threading.Thread):
    """Connects its share of the devices, then runs their sessions: whatever
    arrives for one of them (the network thread says which), and a tick each
    per TICK_S. Single-threaded per device, like `run`."""

    def __init__(self, fleet: Fleet, number: int, devices: Sequence[FleetDevice], stop: threading.Event):
        super().__init__(name=f"fleet-worker-{number}", daemon=True)
        self.fleet = fleet
        self.devices = list(devices)
        self.stop = stop
        self.stopping = threading.Event()
        self.connected = threading.Event()
        # Devices with something in their inbox. The network thread gathers them
        # for a round and wakes this worker once (waking it per message cost that
        # thread more than reading the message did).
        self.ready: queue.Queue[list[FleetDevice]] = queue.Queue()
        self._gathered: list[FleetDevice] = []
        self._net: NetLoop | None = None

    def attach(self, net: NetLoop) -> None:
        self._net = net
        net.after_round.append(self._wake)

    def notify(self, device: FleetDevice) -> None:
        if self._net is not None and self._net.on_thread():
            self._gathered.append(device)
        else:
            self.ready.put([device])

    def _wake(self) -> None:
        if self._gathered:
            gathered, self._gathered = self._gathered, []
            self.ready.put(gathered)

    def run(self) -> None:
        try:
            for device in self.devices:
                if self.stop.is_set() or self.stopping.is_set():
                    break
                self._connect(device)
        finally:
            self.connected.set()
        try:
            self._serve()
        finally:
            self._disconnect_all()

    def _connect(self, device: FleetDevice) -> None:
        fleet = self.fleet
        sink = self._sink(device)
        try:
            st = state_file.load(device.state_path)
        except state_file.StateError as exc:
            fleet._fail(device, error("bad_state", str(exc)))
            return
        if not st.linked:
            fleet._fail(device, error("not_linked", f"{device.state_path} holds no credentials"))
            return
        if fleet.options.profile is not None:
            st = replace(st, profile=fleet.options.profile)
        lock = buttons.DeviceLock(device.state_path)
        if not lock.acquire("run"):
            holder = lock.holder()
            who = f" (pid {holder[0]})" if holder is not None else ""
            fleet._fail(
                device,
                error(
                    "already_running",
                    f"another linkhub-device process{who} is connected as this device ({device.state_path})",
                ),
            )
            return
        device.lock = lock
        assert st.device_id is not None
        device.device_id = st.device_id
        client = fleet.make_client(device, st, self.notify)
        device.client = client
        try:
            assert st.mqtt is not None
            host, port = st.mqtt.host, st.mqtt.port
            client.connect_retrying(host, port, timeout=OP_TIMEOUT_S, retry_for_s=OP_TIMEOUT_S)
            session = DeviceSession(
                client, st.device_id, device.state_path, st, on_event=sink, announce_status=True
            )
            session.start()
        except MqttError as exc:
            client.close()
            lock.release()
            device.client, device.lock = None, None
            fleet._fail(device, from_mqtt_error(exc))
            return
        device.session = session
        device.online = True
        device.next_tick = time.monotonic() + TICK_S
        fleet.emit(device, {"event": "online", "device_id": st.device_id})

    def _sink(self, device: FleetDevice) -> EventSink:
        return lambda event: self.fleet.emit(device, event)

    def _serve(self) -> None:
        next_sweep = time.monotonic() + TICK_S
        while not (self.stop.is_set() or self.stopping.is_set()):
            try:
                wait_s = max(0.0, min(next_sweep - time.monotonic(), 0.5))
                devices = self.ready.get(timeout=wait_s)
            except queue.Empty:
                devices = []
            for device in dict.fromkeys(devices):
                self._drain(device)
            now = time.monotonic()
            if now >= next_sweep:
                # One pass a second over the quiet ones: cheap, and O(devices) only then.
                next_sweep = now + TICK_S
                for each in self.devices:
                    if each.session is not None and each.next_tick <= now:
                        self._handle(each, None)

    def _drain(self, device: FleetDevice) -> None:
        client = device.client
        while client is not None and device.session is not None:
            try:
                item = client.inbox.get_nowait()
            except queue.Empty:
                return
            self._handle(device, item)

    def _handle(self, device: FleetDevice, item: Incoming | None) -> None:
        session = device.session
        assert session is not None
        device.next_tick = time.monotonic() + TICK_S
        try:
            code = session.handle(item)
        except Exception as exc:  # a bug must cost one device, not the fleet
            code = 1
            self.fleet.emit(device, error("session_failed", f"{type(exc).__name__}: {exc}"))
        if code is not None:
            # Refused by the broker (the identity is gone): out of the fleet.
            device.session = None
            self._release(device)
            device.failed = device.failed or "refused"
            device.online = False

    def _disconnect_all(self) -> None:
        for device in self.devices:
            client = device.client
            if client is None:
                continue
            if device.session is not None and device.device_id is not None and client.is_connected():
                # Leave a truthful retained status; failing that, the last will says it.
                with contextlib.suppress(MqttError):
                    publish_status(client, device.device_id, online=False, timeout=STOP_TIMEOUT_S)
            device.session = None
            device.online = False
            self._release(device)

    @staticmethod
    def _release(device: FleetDevice) -> None:
        if device.client is not None:
            device.client.close()
            device.client = None
        if device.lock is not None:
            device.lock.release()
            device.lock = None


# --- the command -----------------------------------------------------------------------
def default_linkhub_command() -> list[str]:
    """The `linkhub` installed beside this Python (a venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "linkhub"
    return [str(beside)] if beside.exists() else ["linkhub"]


def shell_approver(account: str, data_dir: str | None, command: Sequence[str]) -> Approver:
    """Approve as a person at a shell would: `linkhub link approve CODE --account A`."""

    def approve(user_code: str) -> None:
        argv = [*command, "link", "approve", user_code, "--account", account]
        if data_dir is not None:
            argv += ["--data-dir", data_dir]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=APPROVE_TIMEOUT_S, stdin=subprocess.DEVNULL
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ApprovalError(f"{' '.join(argv[:3])} failed: {exc}") from exc
        if done.returncode != 0:
            raise ApprovalError(done.stderr.strip() or f"{argv[0]} exited with {done.returncode}")

    return approve


class StatusLine:
    """The progress bar and the summary line, on stderr.

    On a terminal one line rewritten in place; otherwise a line now and then
    (every `interval_s`), so that a log is not flooded.
    """

    def __init__(self, out: TextIO | None = None, interval_s: float = 5.0) -> None:
        self.out = out if out is not None else sys.stderr
        self.tty = bool(getattr(self.out, "isatty", lambda: False)())
        self.interval_s = 0.2 if self.tty else interval_s
        self._last = 0.0

    def show(self, text: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval_s:
            return
        self._last = now
        if self.tty:
            self.out.write("\r\033[K" + text)
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def done(self, text: str) -> None:
        """A line that stays (the final summary, a device's error), under the bar."""
        if self.tty:
            self.out.write("\r\033[K" + text + "\n")
        else:
            self.out.write(text + "\n")
        self.out.flush()


def human_sink(status: StatusLine) -> EventSink:
    """Without --json: only what a person must see. Codes to approve (when no one
    approves automatically), the hub that was found, and errors; the rest is in
    the summary line."""

    def sink(event: Event) -> None:
        who = event.get("device", "fleet")
        match event.get("event"):
            case "code":
                link_url = event["verification_uri_complete"]
                status.done(f"{who}: code {event['user_code']}, approve at {link_url}")
            case "hub":
                status.done(f"using the hub {event['name']!r} at {event['host']}:{event['port']}")
            case "error":
                status.done(f"{who}: error ({event['error']}): {event['error_description']}")
            case "unlinked":
                status.done(f"{who}: unlinked on the hub; its credentials are forgotten (link it again)")
            case _:
                pass

    return sink


def progress_bar(done: int, total: int, errors: int, width: int = 30) -> str:
    filled = width if total == 0 else width * done // total
    return f"linking [{'#' * filled}{'.' * (width - filled)}] {done}/{total} errors={errors}"


def run_fleet(
    options: FleetOptions,
    *,
    on_event: EventSink,
    stop: threading.Event,
    approver: Approver | None = None,
    duration_s: float | None = None,
    status: StatusLine | None = None,
    summary_interval_s: float = 5.0,
) -> int:
    """The `fleet` command: link, connect, keep running until `stop` or `duration_s`.

    0 when every device is linked and online and the stop was clean; 1 when any
    device failed (each failure was reported as an error event); 130 when
    stopped while linking.
    """
    status = status if status is not None else StatusLine()
    fleet = Fleet(options, on_event=on_event, approver=approver)

    def linking(done: int, total: int) -> None:
        if total:  # nothing to link: no bar
            errors = sum(d.failed is not None for d in fleet.devices)
            status.show(progress_bar(done, total, errors), force=done == total)

    if not fleet.link_all(stop, linking):
        status.done(f"interrupted while linking; {fleet.summary().line()}")
        on_event(fleet.summary().to_event(final=True, interrupted=True))
        return 130
    try:
        fleet.connect_all(stop)
        started = time.monotonic()
        deadline = None if duration_s is None else started + duration_s
        next_event = started
        while not stop.is_set():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            summary = fleet.summary()
            status.show(f"{summary.line()} up {now - started:.0f}s")
            if now >= next_event:
                on_event(summary.to_event(final=False))
                next_event = now + summary_interval_s
            stop.wait(min(0.5, max(0.0, (deadline or now + 0.5) - now)))
        summary = fleet.summary()
    finally:
        fleet.close()
    status.done(summary.line())
    on_event(summary.to_event(final=True))
    healthy = summary.errors == 0 and summary.online == summary.total
    return 0 if healthy else 1
