"""The hub's own certificate authority and the server certificate of its mosquitto.

A home hub has no public name a public CA would sign, so it makes a small CA of
its own, once, and keeps it in the broker's data directory: devices receive the
CA certificate with their credentials (docs/protocol.md §6.2), or a person copies
it from the web page's /ca.pem, and from then on check that the broker they
reach is this hub's. The CA outlives every server certificate it signs, so
renewing the server certificate (every start checks) never breaks a device.

- CA: EC P-256, valid ~10 years, `BasicConstraints(ca, path_length=0)`, may
  only sign certificates. Made once; replaced only when it is missing or about
  to expire (then devices need the new one: relink, or copy /ca.pem again).
- Server certificate: EC P-256, valid ~2 years (never beyond the CA), for
  server authentication only, naming every host and address a device may be
  told to connect to (the hub's LAN addresses, its public host, `NAME.local`,
  localhost, 127.0.0.1). It is made again at start when it is near expiry,
  misses a current name, was not signed by the current CA, or does not match
  its key.

Private keys are written 0600 (atomically: a temporary file renamed into
place), certificates 0644; the directory is the broker's, 0700.

Plain functions over files, with the time passed in, so they are tested
without a broker or a clock.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import secrets
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hub.errors import ConfigError

log = logging.getLogger(__name__)

CA_VALIDITY = timedelta(days=3650)
SERVER_VALIDITY = timedelta(days=730)
# A certificate with less than this left is renewed at start: a hub restarted
# at least monthly never serves an expired one.
RENEW_BEFORE = timedelta(days=30)
# Certificates are valid from a little before they are made: a device whose
# clock lags the hub's by a few minutes must not find them "not yet valid".
BACKDATE = timedelta(minutes=10)

CA_KEY = "ca.key"
CA_CERT = "ca.pem"
SERVER_KEY = "server.key"
SERVER_CERT = "server.pem"

_WILDCARDS = frozenset({"", "0.0.0.0", "::"})


class TlsError(ConfigError):
    """The TLS files exist but cannot be used; the message says what to do."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Where mosquitto finds its TLS files, and the CA certificate to hand to devices."""

    directory: Path
    ca_pem: str  # public: devices verify the broker with it
    # What this call made or remade, and why (for the log and tests); empty when all was reused.
    changes: tuple[str, ...] = ()

    @property
    def ca_cert(self) -> Path:
        return self.directory / CA_CERT

    @property
    def cert(self) -> Path:
        return self.directory / SERVER_CERT

    @property
    def key(self) -> Path:
        return self.directory / SERVER_KEY


# --- names ----------------------------------------------------------------------------------
def server_names(hosts: Iterable[str | None], *, mdns_name: str) -> tuple[str, ...]:
    """The names the server certificate must carry: `hosts` (addresses and host
    names devices may be told), then `<mdns_name>.local`, localhost and 127.0.0.1.

    Wildcard listen addresses and None are skipped; DNS names are compared
    without case; each name once, in order.
    """
    wanted: list[str] = []
    for host in (*hosts, f"{mdns_name}.local", "localhost", "127.0.0.1"):
        if host is None or host.strip() in _WILDCARDS:
            continue
        name = _normal_name(host.strip())
        if name not in wanted:
            wanted.append(name)
    return tuple(wanted)


def _normal_name(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name.lower().rstrip(".")


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError:
        raise TlsError(f"{name!r} cannot be a name in a certificate (not a host name)") from None
    return x509.DNSName(ascii_name)


def certificate_names(cert: x509.Certificate) -> frozenset[str]:
    """The DNS names and IP addresses a certificate's subjectAltName holds, normalised."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    names = {_normal_name(n) for n in san.get_values_for_type(x509.DNSName)}
    names |= {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return frozenset(names)


# --- making certificates ----------------------------------------------------------------------
def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_ca(key: ec.EllipticCurvePrivateKey, *, now: datetime) -> x509.Certificate:
    """A self-signed CA that may sign server certificates and nothing below them."""
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "LinkHub"),
            # Random, so that two hubs' CAs never share a name (a device that knew
            # both could otherwise pick the wrong one while building a chain).
            x509.NameAttribute(NameOID.COMMON_NAME, f"LinkHub CA {secrets.token_hex(4)}"),
        ]
    )
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def make_server_certificate(
    key: ec.EllipticCurvePrivateKey,
    names: Sequence[str],
    *,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    now: datetime,
) -> x509.Certificate:
    """The broker's certificate: server authentication for exactly `names`."""
    if not names:
        raise TlsError("a server certificate needs at least one name")
    not_after = min(now + SERVER_VALIDITY, ca_cert.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "LinkHub"),
                    x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64]),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


# --- deciding -------------------------------------------------------------------------------
def ca_problem(ca_cert: x509.Certificate, *, now: datetime) -> str | None:
    """Why the CA cannot go on signing (it expires within RENEW_BEFORE), or None."""
    if ca_cert.not_valid_after_utc - now < RENEW_BEFORE:
        return f"the CA expires on {ca_cert.not_valid_after_utc:%Y-%m-%d}"
    return None


def server_certificate_problem(
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    names: Sequence[str],
    *,
    ca_cert: x509.Certificate,
    now: datetime,
) -> str | None:
    """Why the server certificate must be made again, or None to keep it."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return "it was not signed by the current CA"
    if _public_bytes(cert.public_key()) != _public_bytes(key.public_key()):
        return "it does not match its key"
    if now < cert.not_valid_before_utc:
        return f"it is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        return f"it expires on {cert.not_valid_after_utc:%Y-%m-%d}"
    missing = [name for name in names if _normal_name(name) not in certificate_names(cert)]
    if missing:
        return f"it does not name {', '.join(missing)}"
    return None


def _public_bytes(key: object) -> bytes:
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# --- the files --------------------------------------------------------------------------------
def ensure_tls_files(directory: Path, names: Sequence[str], *, now: datetime) -> TlsFiles:
    """Make (or keep) the CA and a server certificate for `names` in `directory`.

    `now` is timezone-aware UTC. Raises TlsError when a CA file exists but cannot
    be read: the CA is what devices trust, so it is never replaced silently.
    """
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    changes: list[str] = []
    ca = _load_ca(directory)
    reason = "there was none" if ca is None else ca_problem(ca[1], now=now)
    if ca is None or reason is not None:
        ca_key = new_key()
        ca_cert = make_ca(ca_key, now=now)
        _write(directory / CA_KEY, _key_pem(ca_key), private=True)
        _write(directory / CA_CERT, ca_cert.public_bytes(serialization.Encoding.PEM), private=False)
        changes.append(f"made a new CA: {reason}")
        if ca is not None:
            log.warning(
                "TLS: made a new CA (%s); devices that trust the old one must get the new "
                "CA certificate (%s, or the web page's /ca.pem) or be linked again",
                reason,
                directory / CA_CERT,
            )
    else:
        ca_key, ca_cert = ca
    server = _load_server(directory)
    reason = (
        "there was none"
        if server is None
        else server_certificate_problem(server[1], server[0], names, ca_cert=ca_cert, now=now)
    )
    if reason is not None:
        key = new_key()
        cert = make_server_certificate(key, names, ca_cert=ca_cert, ca_key=ca_key, now=now)
        _write(directory / SERVER_KEY, _key_pem(key), private=True)
        _write(directory / SERVER_CERT, cert.public_bytes(serialization.Encoding.PEM), private=False)
        changes.append(f"made a new server certificate: {reason}")
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    return TlsFiles(directory=directory, ca_pem=ca_pem, changes=tuple(changes))


def _load_ca(directory: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None:
    key_path, cert_path = directory / CA_KEY, directory / CA_CERT
    if not cert_path.exists():
        if key_path.exists():
            # A crash between the two writes (the key is written first): no device
            # can have trusted a CA whose certificate was never written.
            log.warning("TLS: %s holds a CA key without its certificate; making a new CA", directory)
        return None
    if not key_path.exists():
        # The certificate was written, so devices may trust it: a new CA would cut
        # them all off without a word. Only a person can say where the key went.
        raise TlsError(
            f"the hub's CA certificate {cert_path} is there but its key {key_path} is missing. "
            "Restore both from a backup, or delete the certificate to make a new CA "
            "(devices must then get the new /ca.pem or be linked again)"
        )
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise TlsError(
            f"the hub's CA in {directory} cannot be read ({exc}). Restore it from a backup, or delete "
            f"{key_path} and {cert_path} to make a new CA (devices must then get the new /ca.pem or be "
            "linked again)"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or _public_bytes(cert.public_key()) != _public_bytes(
        key.public_key()
    ):
        raise TlsError(
            f"{key_path} is not the key of {cert_path}. Restore both from one backup, or delete them "
            "to make a new CA (devices must then get the new /ca.pem or be linked again)"
        )
    return key, cert


def _load_server(directory: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None:
    """The server key and certificate, or None when either is missing or unreadable
    (they are made again: nothing but the broker depends on them)."""
    try:
        key = serialization.load_pem_private_key((directory / SERVER_KEY).read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate((directory / SERVER_CERT).read_bytes())
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
        cert.public_key(), ec.EllipticCurvePublicKey
    ):
        return None
    return key, cert


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, *, private: bool) -> None:
    """Replace `path` atomically; a private file is 0600 from its first byte."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if not private:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
