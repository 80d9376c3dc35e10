#include "mqtt_io.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void sleep_s(double seconds)
{
    struct timespec pause = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    nanosleep(&pause, NULL);
}

static void on_connect(struct mosquitto *mosq, void *obj, int rc, int flags, const mosquitto_property *props)
{
    (void)mosq, (void)flags, (void)props;
    struct lh_conn *c = obj;
    c->connack = rc;
    c->connected = rc == 0;
}

static void on_disconnect(struct mosquitto *mosq, void *obj, int rc, const mosquitto_property *props)
{
    (void)mosq, (void)props;
    struct lh_conn *c = obj;
    if (c->connected)
        c->lost = true;
    c->connected = false;
    c->disconnect_reason = rc;
}

static void on_publish(struct mosquitto *mosq, void *obj, int mid, int reason, const mosquitto_property *props)
{
    (void)mosq, (void)props;
    struct lh_conn *c = obj;
    c->acked_mid = mid;
    c->ack_reason = reason;
}

static void on_subscribe(struct mosquitto *mosq, void *obj, int mid, int count, const int *granted,
                         const mosquitto_property *props)
{
    (void)mosq, (void)props;
    struct lh_conn *c = obj;
    c->subacked_mid = mid;
    c->suback_code = count > 0 ? granted[0] : 0x80;
}

static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *message,
                       const mosquitto_property *props)
{
    (void)mosq, (void)props;
    struct lh_conn *c = obj;
    if (c->count == LH_INBOX || message->payloadlen < 0 || (size_t)message->payloadlen > LH_MAX_IN
        || strlen(message->topic) >= LH_MAX_TOPIC) {
        c->dropped++;
        return;
    }
    struct lh_inbound *slot = &c->inbox[(c->head + c->count) % LH_INBOX];
    snprintf(slot->topic, sizeof slot->topic, "%s", message->topic);
    slot->len = (size_t)message->payloadlen;
    if (slot->len > 0)
        memcpy(slot->payload, message->payload, slot->len);
    slot->payload[slot->len] = '\0';
    c->count++;
}

bool mqtt_setup(struct lh_conn *c, const char *client_id, const char *username, const char *password,
                bool v5, const char *will_topic, const char *will_payload)
{
    memset(c, 0, sizeof *c);
    c->v5 = v5;
    c->connack = -1;
    c->mosq = mosquitto_new(client_id, true, c);
    if (c->mosq == NULL)
        return false;
    mosquitto_int_option(c->mosq, MOSQ_OPT_PROTOCOL_VERSION, v5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311);
    /* Without it each request and its answer wait for Nagle's algorithm (about 40 ms). */
    mosquitto_int_option(c->mosq, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_connect_v5_callback_set(c->mosq, on_connect);
    mosquitto_disconnect_v5_callback_set(c->mosq, on_disconnect);
    mosquitto_publish_v5_callback_set(c->mosq, on_publish);
    mosquitto_subscribe_v5_callback_set(c->mosq, on_subscribe);
    mosquitto_message_v5_callback_set(c->mosq, on_message);
    if (mosquitto_username_pw_set(c->mosq, username, password) != MOSQ_ERR_SUCCESS)
        return false;
    if (will_topic != NULL
        && mosquitto_will_set_v5(c->mosq, will_topic, (int)strlen(will_payload), will_payload, 1, true, NULL)
               != MOSQ_ERR_SUCCESS)
        return false;
    return true;
}

static int wait_connack(struct lh_conn *c, double timeout_s)
{
    double deadline = now_s() + timeout_s;
    while (c->connack < 0 && now_s() < deadline) {
        if (mosquitto_loop(c->mosq, 100, 1) != MOSQ_ERR_SUCCESS && c->connack < 0)
            return -1;
    }
    return c->connack;
}

int mqtt_connect(struct lh_conn *c, const char *host, int port, double timeout_s)
{
    c->connack = -1;
    c->lost = false;
    if (mosquitto_connect_bind_v5(c->mosq, host, port, LH_KEEPALIVE_S, NULL, NULL) != MOSQ_ERR_SUCCESS)
        return -1;
    return wait_connack(c, timeout_s);
}

int mqtt_reconnect(struct lh_conn *c, double timeout_s)
{
    c->connack = -1;
    c->lost = false;
    if (mosquitto_reconnect(c->mosq) != MOSQ_ERR_SUCCESS)
        return -1;
    return wait_connack(c, timeout_s);
}

int mqtt_connect_backoff(struct lh_conn *c, const char *host, int port, double deadline)
{
    double wait_s = 0.5;
    for (;;) {
        int connack = host != NULL ? mqtt_connect(c, host, port, 10) : mqtt_reconnect(c, 10);
        if (connack >= 0)
            return connack;  /* an answer: accepted, or refused (not an outage) */
        if (deadline > 0 && now_s() + wait_s > deadline)
            return -1;
        sleep_s(wait_s * (0.5 + 0.5 * (double)randombytes_uniform(1000) / 1000.0));
        wait_s = wait_s * 2 > 30 ? 30 : wait_s * 2;
    }
}

bool mqtt_refused_login(int connack)
{
    return connack == 4 || connack == 5 || connack == 0x86 || connack == 0x87;
}

bool mqtt_subscribe(struct lh_conn *c, const char *topic, double timeout_s)
{
    int mid = 0;
    c->subacked_mid = 0;
    if (mosquitto_subscribe_v5(c->mosq, &mid, topic, 1, 0, NULL) != MOSQ_ERR_SUCCESS)
        return false;
    double deadline = now_s() + timeout_s;
    while (c->subacked_mid != mid && c->connected && now_s() < deadline)
        mosquitto_loop(c->mosq, 100, 1);
    /* Granted QoS 0-2, or a refusal: 0x80 (MQTT 3.1.1), 0x87 and the like (MQTT 5). */
    return c->subacked_mid == mid && c->suback_code < 0x80;
}

bool mqtt_publish(struct lh_conn *c, const char *topic, const char *payload, bool retain,
                  const mosquitto_property *properties, double timeout_s)
{
    int mid = 0;
    c->acked_mid = 0;
    if (mosquitto_publish_v5(c->mosq, &mid, topic, (int)strlen(payload), payload, 1, retain,
                             c->v5 ? properties : NULL) != MOSQ_ERR_SUCCESS)
        return false;
    double deadline = now_s() + timeout_s;
    while (c->acked_mid != mid && c->connected && now_s() < deadline)
        mosquitto_loop(c->mosq, 100, 1);
    return c->acked_mid == mid && c->ack_reason < 0x80;
}

const struct lh_inbound *mqtt_next(struct lh_conn *c, int wait_ms)
{
    if (c->count == 0 && c->connected && mosquitto_loop(c->mosq, wait_ms, 1) != MOSQ_ERR_SUCCESS
        && c->connected) {
        c->connected = false;  /* the loop found the connection gone before a callback said so */
        c->lost = true;
    }
    if (c->count == 0)
        return NULL;
    c->current = c->inbox[c->head];
    c->head = (c->head + 1) % LH_INBOX;
    c->count--;
    return &c->current;
}

void mqtt_close(struct lh_conn *c)
{
    if (c->mosq == NULL)
        return;
    if (c->connected) {
        mosquitto_disconnect(c->mosq);
        mosquitto_loop(c->mosq, 100, 1);
    }
    mosquitto_destroy(c->mosq);
    c->mosq = NULL;
    c->connected = false;
}
