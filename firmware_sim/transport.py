"""How the device reaches its broker: plain MQTT or MQTT over TLS, which port,
and which CA it trusts. Decisions only; firmware_sim/mqtt_client.py does the TLS.

A hub that listens with TLS sends `tls_port` and its CA certificate (`ca_cert`)
with the device's credentials (docs/protocol.md §6.2). The device keeps both
with the credentials, and from then on connects to `host:tls_port` with TLS,
accepting only a broker whose certificate that CA signed for that host. The
person can say otherwise (`--no-tls`, or `--cafile` for another copy of the CA),
and a device linked without TLS can be told `--tls` only if it knows a TLS port.

Linking itself happens before the device has any CA; with `--cafile` (the
hub's /ca.pem, copied by a person) it links over TLS too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from firmware_sim.mqtt_client import TlsUnavailable, tls_context
from linkhub_protocol import PEM_CERTIFICATE_BEGIN, MqttCredentials


@dataclass(frozen=True, slots=True)
class TlsChoice:
    """What the person asked for. `use`: None to follow the credentials, True to
    insist on TLS, False for plain MQTT. `ca_pem`: a CA to trust instead of the saved one."""

    use: bool | None = None
    ca_pem: str | None = field(default=None, repr=False)


FOLLOW_CREDENTIALS = TlsChoice()


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to connect; with `ca_pem` over TLS, trusting only that CA."""

    host: str
    port: int
    ca_pem: str | None = field(default=None, repr=False)

    @property
    def tls(self) -> bool:
        return self.ca_pem is not None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def linked_endpoint(creds: MqttCredentials, choice: TlsChoice = FOLLOW_CREDENTIALS) -> Endpoint:
    """Where a linked device connects; TlsUnavailable when TLS is asked for but
    cannot be had (no TLS port in the credentials, or no CA at all)."""
    if choice.use is False:
        if choice.ca_pem is not None:
            raise TlsUnavailable("a CA file goes with TLS: leave out --no-tls, or the CA file")
        return Endpoint(creds.host, creds.port)
    if creds.tls_port is None:
        if choice.use is None and choice.ca_pem is None:
            return Endpoint(creds.host, creds.port)
        raise TlsUnavailable(
            "the hub sent no TLS port with this device's credentials (it did not listen with TLS "
            "when the device was linked): run without --tls and --cafile, or link the device again "
            "once the hub runs with --mqtt-tls-port"
        )
    ca_pem = choice.ca_pem if choice.ca_pem is not None else creds.ca_cert
    if ca_pem is None:  # MqttCredentials keeps tls_port and ca_cert together; a guard all the same
        raise TlsUnavailable("no CA certificate to check the broker with: pass --cafile FILE")
    return Endpoint(creds.host, creds.tls_port, ca_pem)


def read_ca_file(path: str | os.PathLike[str]) -> str:
    """The PEM text of a CA certificate file (the hub's /ca.pem); TlsUnavailable,
    naming the file, when it cannot be read or holds no usable certificate."""
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise TlsUnavailable(f"cannot read the CA file {path}: {exc}") from None
    if PEM_CERTIFICATE_BEGIN not in text:
        raise TlsUnavailable(
            f"{path} holds no PEM certificate (expected {PEM_CERTIFICATE_BEGIN}...; "
            "the hub serves its CA at http://HUB:8080/ca.pem)"
        )
    try:
        tls_context(text)
    except TlsUnavailable as exc:
        raise TlsUnavailable(f"{path}: {exc}") from None
    return text
