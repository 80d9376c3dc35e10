/* The limits and names every part of the reference device shares.
 *
 * Every size here is stated so that firmware can budget its memory
 * (docs/protocol.md section 11, "Reference: limits and constants", and
 * section 14, "For C authors"). */
#ifndef LH_DEVICE_H
#define LH_DEVICE_H

#include <stdbool.h>
#include <stddef.h>

/* The largest message this device accepts. The largest it meets: an approved
 * link reply with a TLS CA (about 2 KiB), a full `desired` document (the
 * hub's settings limit, 8192 bytes of document in a message of at most
 * 16384). esp-mqtt's default 1 KiB buffer and PubSubClient's 256-byte packet
 * are too small for these: see the document. Larger messages are dropped. */
#define LH_MAX_IN 20480
/* The largest message it sends: a settings message may be 16384 bytes. */
#define LH_MAX_OUT 16384
/* Topics are at most `linkhub/v1/devices/` + 40 + `/settings/reported` (77). */
#define LH_MAX_TOPIC 128
/* Messages waiting between the MQTT library's callback and the device's loop. */
#define LH_INBOX 4

#define LH_TOPIC_ROOT "linkhub/v1"
#define LH_BOOTSTRAP_USER "linkhub-bootstrap"
#define LH_BOOTSTRAP_PASSWORD "linkhub-bootstrap"

/* Identifiers (docs/protocol.md sections 3 and 5.2). */
#define LH_REQUEST_ID_BYTES 24   /* 32 base64url characters */
#define LH_REPLY_TOKEN_BYTES 24  /* 32 base64url characters, 192 bits */
#define LH_CLIENT_ID_HEX 12      /* "lh-boot-" + 12 hex = 20 characters, within MQTT 3.1.1's 23 */
#define LH_ID_MAX 64             /* request ids, reply tokens, client ids */
#define LH_DEVICE_ID_MAX 40
#define LH_TEXT_MAX 256          /* names, models, hosts, passwords: bytes, with room for UTF-8 */

#define LH_KEEPALIVE_S 30
#define LH_FIRST_INTERVAL_S 5    /* resend interval until the hub states one */
#define LH_NO_REPLY_S 60         /* no reply at all: the hub is probably not running */
#define LH_EXPIRY_GRACE_S 30     /* after the code's stated expiry */
#define LH_DESCRIBE_WAIT_S 10    /* state goes out after the description's ok, or this long */
#define LH_SET_RESEND_S 5        /* a settings_set with no reply is sent again */

/* The exit statuses of lh-device. */
enum lh_exit {
    LH_EXIT_OK = 0,       /* linked and stopped, or an unlink handled */
    LH_EXIT_FAILED = 1,   /* a final error: denied, expired, refused, no hub */
    LH_EXIT_USAGE = 2,
};

struct lh_options {
    const char *host;
    int port;
    const char *state_path;
    const char *name;
    const char *model;
    const char *address;   /* optional */
    const char *firmware;  /* optional */
    bool mqtt5;
};

#endif
