"""The names and numbers both sides agree on: the protocol version, the public
bootstrap identity, the mDNS service type, and the size limits (docs/protocol.md
section 11)."""

from __future__ import annotations

PROTOCOL_VERSION = 1

# DNS-SD service type under which a hub advertises its broker over mDNS
# (RFC 6763); the TXT keys are described in docs/protocol.md, "Finding the hub".
MDNS_SERVICE_TYPE = "_linkhub._tcp.local."

# The identity every device uses before it is linked. It is public on purpose:
# the broker confines it to sending link requests and reading one reply topic
# whose name only the device knows (see docs/protocol.md, "Isolation").
BOOTSTRAP_USERNAME = "linkhub-bootstrap"
BOOTSTRAP_PASSWORD = "linkhub-bootstrap"

MAX_LINK_REQUEST_BYTES = 2048
MAX_CORRELATION_BYTES = 128
MAX_STATUS_BYTES = 1024
MAX_SETTINGS_MESSAGE_BYTES = 16384
# What a device has (docs/protocol.md, "Components, state and commands"): its
# description, its state and a command to it, each in one small message.
MAX_DEVICE_DESCRIPTION_BYTES = 8192
MAX_STATE_BYTES = 4096
MAX_COMMAND_BYTES = 1024
MAX_COMPONENTS = 32
MAX_OPTIONS = 32
# The hub's CA certificate travels in the approved reply (mqtt.ca_cert); one
# EC P-256 certificate is about 700 characters of PEM.
MAX_CA_CERT_CHARS = 8192
PEM_CERTIFICATE_BEGIN = "-----BEGIN CERTIFICATE-----"
# An X25519 public key: 32 bytes as standard, padded base64 (44 characters).
PUBLIC_KEY_BYTES = 32
# The sealed credentials: crypto_box_seal output (48 bytes more than the JSON
# inside), standard padded base64. Bounded so a reply stays small.
MAX_SEALED_CHARS = 16384
# Versions are JSON numbers a double holds exactly (RFC 8259 §6: 2**53).
MAX_VERSION = 2**53 - 1
# A settings request id, or an id echoed back in a refusal: any short string.
MAX_ECHOED_ID_CHARS = 128
MAX_DESCRIPTION_CHARS = 1024
MAX_URI_CHARS = 512
MAX_USER_CODE_CHARS = 32
