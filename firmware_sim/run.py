"""A linked device at work: online on its own broker identity until told to stop.

Also home of `connect_as_device`, which `link` uses for its first connection
with fresh credentials.
"""

from __future__ import annotations

import contextlib
import os
import threading

from firmware_sim import state as state_file
from firmware_sim.events import EventSink, error, from_mqtt_error
from firmware_sim.mqtt_client import (
    DeviceMqttClient,
    Message,
    MqttError,
    Reconnected,
    ReconnectRefused,
    Will,
)
from hub.protocol import DeviceStatus, MqttCredentials, device_root, device_status_topic, encode

OP_TIMEOUT_S = 10.0
POLL_S = 0.2


def connect_as_device(
    device_id: str, creds: MqttCredentials, *, mqtt5: bool, timeout: float = OP_TIMEOUT_S
) -> DeviceMqttClient:
    """Connect with the device's own credentials and its last will (status offline)."""
    client = DeviceMqttClient(
        client_id=creds.client_id,
        username=creds.username,
        password=creds.password,
        mqtt5=mqtt5,
        will=Will(device_status_topic(device_id), encode(DeviceStatus(online=False))),
    )
    client.connect(creds.host, creds.port, timeout=timeout)
    return client


def publish_status(
    client: DeviceMqttClient, device_id: str, *, online: bool, timeout: float = OP_TIMEOUT_S
) -> None:
    """Retained QoS 1 status; returns once the broker acknowledged it."""
    client.publish(
        device_status_topic(device_id),
        encode(DeviceStatus(online=online)),
        qos=1,
        retain=True,
        timeout=timeout,
    )


def run(
    state_path: str | os.PathLike[str],
    *,
    on_event: EventSink,
    stop: threading.Event,
    mqtt5: bool = True,
) -> int:
    """Stay online until `stop` is set; 0 after a clean stop, 1 on any failure."""
    try:
        st = state_file.load(state_path)
    except state_file.StateError as exc:
        on_event(error("bad_state", str(exc)))
        return 1
    if st.device_id is None or st.mqtt is None:
        on_event(error("not_linked", f"{state_path} holds no credentials; link the device first"))
        return 1
    device_id, creds = st.device_id, st.mqtt
    try:
        client = connect_as_device(device_id, creds, mqtt5=mqtt5)
    except MqttError as exc:
        on_event(from_mqtt_error(exc))
        return 1
    with client:
        status_topic = device_status_topic(device_id)
        try:
            client.subscribe(device_root(device_id) + "/#", qos=1)
            publish_status(client, device_id, online=True)
        except MqttError as exc:
            on_event(from_mqtt_error(exc))
            return 1
        on_event({"event": "online", "device_id": device_id})
        while not stop.is_set():
            item = client.get(POLL_S)
            match item:
                case Message(topic=topic, payload=payload) if topic != status_topic:
                    on_event(
                        {
                            "event": "message",
                            "topic": topic,
                            "payload": payload.decode("utf-8", errors="replace"),
                        }
                    )
                case Reconnected():
                    # The broker may have published our will while we were away.
                    with contextlib.suppress(MqttError):  # the next reconnect tries again
                        publish_status(client, device_id, online=True)
                case ReconnectRefused() as refused:
                    code = "not_authorised" if refused.not_authorised else "connection_refused"
                    on_event(error(code, f"the broker refused the device: {refused.reason}"))
                    return 1
                case _:
                    pass
        try:
            publish_status(client, device_id, online=False)
        except MqttError as exc:
            on_event(from_mqtt_error(exc))
            return 1
    return 0
