/* The device's one MQTT connection over libmosquitto, driven from the
 * device's own loop (mosquitto_loop, no thread): connect and wait for the
 * CONNACK, subscribe and wait for the SUBACK, publish at QoS 1 and wait for
 * the PUBACK, and messages taken one at a time. What arrives while the device
 * waits waits in a fixed inbox (LH_INBOX messages of at most LH_MAX_IN bytes);
 * past that, messages are dropped and counted: every message of the protocol
 * is resent by whoever needs it. */
#ifndef LH_MQTT_IO_H
#define LH_MQTT_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <mosquitto.h>

#include "device.h"

struct lh_inbound {
    char topic[LH_MAX_TOPIC];
    char payload[LH_MAX_IN + 1];  /* NUL-terminated for convenience; `len` is the length */
    size_t len;
};

struct lh_conn {
    struct mosquitto *mosq;
    bool v5;
    int connack;            /* -1 until the CONNACK; then its code (0: accepted) */
    bool connected;
    bool lost;              /* the connection ended after it was made */
    int disconnect_reason;  /* MQTT 5 reason of the broker's DISCONNECT (0x98: administrative action) */
    int acked_mid, ack_reason;
    int subacked_mid, suback_code;
    struct lh_inbound inbox[LH_INBOX];
    int head, count;
    unsigned long dropped;  /* too large, or the inbox was full */
    struct lh_inbound current;  /* the message mqtt_next returned */
};

/* Monotonic seconds. */
double now_s(void);
void sleep_s(double seconds);

/* A new connection's settings: clean session, keep-alive LH_KEEPALIVE_S, TCP_NODELAY;
 * `will_*` NULL for no last will (the will is QoS 1, retained). */
bool mqtt_setup(struct lh_conn *c, const char *client_id, const char *username, const char *password,
                bool v5, const char *will_topic, const char *will_payload);
/* Connect and wait up to `timeout_s` for the CONNACK: its code (0: accepted),
 * or -1 when the broker could not be reached or did not answer. */
int mqtt_connect(struct lh_conn *c, const char *host, int port, double timeout_s);
/* Reconnect with the same settings after a loss; the same answer as mqtt_connect. */
int mqtt_reconnect(struct lh_conn *c, double timeout_s);
/* Connect (`host` NULL: reconnect with the same settings), trying again while
 * the broker cannot be reached: 0.5 s before the second try, doubling up to
 * 30 s, each wait drawn between half and all of it (docs/protocol.md section
 * 2), until `deadline` (0: for ever). The CONNACK's code, or -1. */
int mqtt_connect_backoff(struct lh_conn *c, const char *host, int port, double deadline);
/* A CONNACK that says the credentials are refused: MQTT 3.1.1 return codes 4
 * and 5, MQTT 5 reason codes 0x86 and 0x87 (docs/protocol.md section 8.1). */
bool mqtt_refused_login(int connack);
bool mqtt_subscribe(struct lh_conn *c, const char *topic, double timeout_s);
/* Publish at QoS 1 and wait for the PUBACK; false on a refusal (MQTT 5 reason
 * 0x80 or more), a loss or the timeout. `properties` only on MQTT 5. */
bool mqtt_publish(struct lh_conn *c, const char *topic, const char *payload, bool retain,
                  const mosquitto_property *properties, double timeout_s);
/* Run the connection for up to `wait_ms` and return the next message (valid
 * until the next call), or NULL. */
const struct lh_inbound *mqtt_next(struct lh_conn *c, int wait_ms);
void mqtt_close(struct lh_conn *c);

#endif
