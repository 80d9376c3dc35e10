/* Linking (docs/protocol.md sections 5-7): one link attempt, from the saved
 * request to the saved credentials. */
#include "link.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mqtt_protocol.h>

#include "codec.h"
#include "events.h"
#include "mqtt_io.h"

#define SLOW_DOWN_STEP_S 5

/* The request, built once and sent again byte for byte (section 5.2). */
static char request_payload[2049];
/* The opened credentials (at most the box's 12 KiB). */
static char credentials_text[12288];

static bool new_attempt(struct lh_state *st)
{
    struct lh_pending *p = &st->pending;
    memset(p, 0, sizeof *p);
    random_token(p->request_id, sizeof p->request_id, LH_REQUEST_ID_BYTES);
    random_token(p->reply_token, sizeof p->reply_token, LH_REPLY_TOKEN_BYTES);
    random_client_id(p->client_id, sizeof p->client_id);
    p->present = key_pair_new(p->public_key, p->secret_key);
    return p->present;
}

static bool build_request(const struct lh_options *opt, const struct lh_state *st, const char *reply_topic)
{
    cJSON *message = codec_message("link_request");
    cJSON_AddStringToObject(message, "request_id", st->pending.request_id);
    cJSON_AddStringToObject(message, "reply_to", reply_topic);
    cJSON *device = cJSON_AddObjectToObject(message, "device");
    cJSON_AddStringToObject(device, "name", st->name);
    cJSON_AddStringToObject(device, "model", st->model);
    if (opt->address != NULL)
        cJSON_AddStringToObject(device, "address", opt->address);
    if (opt->firmware != NULL)
        cJSON_AddStringToObject(device, "firmware", opt->firmware);
    cJSON_AddStringToObject(message, "public_key", st->pending.public_key);
    return codec_write(message, request_payload, sizeof request_payload);  /* at most 2048 bytes */
}

static bool send_request(struct lh_conn *c, const char *request_topic, const char *reply_topic,
                         const struct lh_state *st)
{
    mosquitto_property *properties = NULL;
    if (c->v5) {  /* Response Topic and Correlation Data (section 5.3) */
        mosquitto_property_add_string(&properties, MQTT_PROP_RESPONSE_TOPIC, reply_topic);
        mosquitto_property_add_binary(&properties, MQTT_PROP_CORRELATION_DATA, st->pending.request_id,
                                      (uint16_t)strlen(st->pending.request_id));
    }
    bool sent = mqtt_publish(c, request_topic, request_payload, false, properties, 10);
    mosquitto_property_free_all(&properties);
    return sent;
}

/* Open the box, check it names this attempt, and keep the mqtt block (section 6.2). */
static bool take_credentials(const cJSON *reply, struct lh_state *st)
{
    const char *device_id = codec_string(reply, "device_id");
    const char *box = codec_string(reply, "sealed_credentials");
    if (device_id == NULL || box == NULL || strlen(device_id) > LH_DEVICE_ID_MAX
        || !sealed_open(box, st->pending.public_key, st->pending.secret_key, credentials_text,
                        sizeof credentials_text))
        return false;
    cJSON *credentials = codec_parse(credentials_text, strlen(credentials_text), "link_credentials");
    sodium_memzero(credentials_text, sizeof credentials_text);
    const cJSON *mqtt = cJSON_GetObjectItemCaseSensitive(credentials, "mqtt");
    const char *request_id = codec_string(credentials, "request_id");
    const char *inner_device = codec_string(credentials, "device_id");
    const char *host = codec_string(mqtt, "host");
    const char *client_id = codec_string(mqtt, "client_id");
    const char *username = codec_string(mqtt, "username");
    const char *password = codec_string(mqtt, "password");
    long port = 0;
    bool good = credentials != NULL && request_id != NULL && strcmp(request_id, st->pending.request_id) == 0
                && inner_device != NULL && strcmp(inner_device, device_id) == 0 && host != NULL
                && codec_integer(mqtt, "port", 1, 65535, &port) && client_id != NULL && username != NULL
                && password != NULL && strlen(host) < sizeof st->mqtt.host
                && strlen(client_id) < sizeof st->mqtt.client_id && strlen(username) < sizeof st->mqtt.username
                && strlen(password) < sizeof st->mqtt.password;
    if (good) {
        snprintf(st->device_id, sizeof st->device_id, "%s", device_id);
        snprintf(st->mqtt.host, sizeof st->mqtt.host, "%s", host);
        st->mqtt.port = port;
        snprintf(st->mqtt.client_id, sizeof st->mqtt.client_id, "%s", client_id);
        snprintf(st->mqtt.username, sizeof st->mqtt.username, "%s", username);
        snprintf(st->mqtt.password, sizeof st->mqtt.password, "%s", password);
    }
    cJSON_Delete(credentials);
    return good;
}

static bool is_final_error(const char *error)
{
    return strcmp(error, "slow_down") != 0 && strcmp(error, "too_many_pending") != 0
           && strcmp(error, "server_error") != 0;
}

struct attempt {
    double interval_s, slow_down_s;
    double next_send, deadline;
    char shown_code[16];
};

/* One reply on the reply topic: LH_EXIT_OK once linked, LH_EXIT_FAILED on a
 * final error, -1 to go on. */
static int handle_reply(const struct lh_inbound *in, struct attempt *a, const char *state_path,
                        struct lh_state *st)
{
    cJSON *reply = codec_parse(in->payload, in->len, "link_reply");
    const char *status = codec_string(reply, "status");
    const cJSON *request_id = cJSON_GetObjectItemCaseSensitive(reply, "request_id");
    int outcome = -1;
    if (status == NULL) {
        /* garbage: ignored */
    } else if (cJSON_IsNull(request_id) && strcmp(status, "error") == 0) {
        /* It may answer someone else's request naming our reply topic: never final (section 6). */
        cJSON *event = event_new("warning");
        cJSON_AddStringToObject(event, "error", codec_string(reply, "error") ? codec_string(reply, "error") : "");
        event_emit(event);
    } else if (!cJSON_IsString(request_id) || strcmp(request_id->valuestring, st->pending.request_id) != 0) {
        /* another attempt's reply: ignored */
    } else if (strcmp(status, "authorization_pending") == 0) {
        long interval = LH_FIRST_INTERVAL_S, expires_in = 0;
        const char *code = codec_string(reply, "user_code");
        if (codec_integer(reply, "interval", 1, 3600, &interval))
            a->interval_s = (double)interval;
        if (codec_integer(reply, "expires_in", 0, 86400 * 30, &expires_in))
            a->deadline = now_s() + (double)expires_in + LH_EXPIRY_GRACE_S;
        if (code != NULL && strcmp(code, a->shown_code) != 0) {
            snprintf(a->shown_code, sizeof a->shown_code, "%s", code);
            cJSON *event = event_new("code");
            cJSON_AddStringToObject(event, "user_code", code);
            const char *uri = codec_string(reply, "verification_uri");
            const char *complete = codec_string(reply, "verification_uri_complete");
            cJSON_AddStringToObject(event, "verification_uri", uri ? uri : "");
            cJSON_AddStringToObject(event, "verification_uri_complete", complete ? complete : "");
            cJSON_AddNumberToObject(event, "expires_in", (double)expires_in);
            event_emit(event);
        }
    } else if (strcmp(status, "approved") == 0) {
        if (!take_credentials(reply, st)) {
            /* Use nothing from it; keep the attempt (section 7.4, step 0). */
            event_error("unreadable_credentials", "the sealed credentials did not open with this attempt's key");
            outcome = LH_EXIT_FAILED;
        } else {
            /* Save first, then forget the attempt: one write does both (section 7.4, step 1). */
            st->linked = true;
            sodium_memzero(&st->pending, sizeof st->pending);
            if (!state_save(state_path, st)) {
                event_error("state_not_saved", "the credentials could not be saved; not using them");
                outcome = LH_EXIT_FAILED;
            } else {
                cJSON *event = event_new("linked");
                cJSON_AddStringToObject(event, "device_id", st->device_id);
                cJSON_AddBoolToObject(event, "tls", false);
                event_emit(event);
                outcome = LH_EXIT_OK;
            }
        }
    } else if (strcmp(status, "error") == 0) {
        const char *error = codec_string(reply, "error");
        const char *description = codec_string(reply, "error_description");
        long retry_after = 0;
        if (error == NULL) {
            /* unreadable: ignored */
        } else if (!is_final_error(error)) {
            if (strcmp(error, "slow_down") == 0)
                a->slow_down_s += SLOW_DOWN_STEP_S;  /* for this and every later resend (section 7.3) */
            codec_integer(reply, "retry_after", 0, 86400, &retry_after);
            double wait_s = (double)retry_after;
            if (wait_s < a->interval_s + a->slow_down_s)
                wait_s = a->interval_s + a->slow_down_s;
            a->next_send = now_s() + wait_s;
            if (a->deadline < a->next_send + LH_NO_REPLY_S)
                a->deadline = a->next_send + LH_NO_REPLY_S;
            cJSON *event = event_new("waiting");
            cJSON_AddStringToObject(event, "error", error);
            cJSON_AddNumberToObject(event, "retry_after", wait_s);
            event_emit(event);
        } else {
            sodium_memzero(&st->pending, sizeof st->pending);  /* final: a new attempt next time */
            state_save(state_path, st);
            event_error(error, description != NULL ? description : "");
            outcome = LH_EXIT_FAILED;
        }
    }
    cJSON_Delete(reply);
    return outcome;
}

int link_device(const struct lh_options *opt, const char *state_path, struct lh_state *st, struct lh_conn *c)
{
    char reply_topic[LH_MAX_TOPIC], request_topic[LH_MAX_TOPIC];

    if (!st->pending.present) {
        /* Saved before anything is published (section 7.3, step 1). */
        if (!new_attempt(st) || !state_save(state_path, st)) {
            event_error("state_not_saved", "the link attempt could not be saved; not sending it");
            return LH_EXIT_FAILED;
        }
    }
    snprintf(reply_topic, sizeof reply_topic, LH_TOPIC_ROOT "/link/reply/%s", st->pending.reply_token);
    snprintf(request_topic, sizeof request_topic, LH_TOPIC_ROOT "/link/request/%s", st->pending.client_id);
    if (!build_request(opt, st, reply_topic)) {
        event_error("invalid_request", "the link request is larger than 2048 bytes: shorten the name or model");
        return LH_EXIT_FAILED;
    }
    if (!mqtt_setup(c, st->pending.client_id, LH_BOOTSTRAP_USER, LH_BOOTSTRAP_PASSWORD, opt->mqtt5, NULL, NULL)) {
        event_error("mqtt_failed", "libmosquitto could not be set up");
        return LH_EXIT_FAILED;
    }
    struct attempt a = {LH_FIRST_INTERVAL_S, 0, 0, now_s() + LH_NO_REPLY_S, ""};
    bool subscribed = false;
    int outcome = -1;
    while (outcome < 0) {
        if (!c->connected) {
            int connack = mqtt_connect_backoff(c, opt->host, opt->port, a.deadline);
            if (connack != 0) {
                event_error("hub_unreachable", connack < 0 ? "the broker could not be reached"
                                                           : "the broker refused the bootstrap login");
                outcome = LH_EXIT_FAILED;
                break;
            }
            subscribed = false;
        }
        if (!subscribed) {
            /* After every (re)connect: subscribe again, then resend at once (section 7.3, step 6). */
            subscribed = mqtt_subscribe(c, reply_topic, 10);
            if (!subscribed) {
                event_error("subscribe_refused", "the broker refused the reply topic");
                outcome = LH_EXIT_FAILED;
                break;
            }
            a.next_send = now_s();
        }
        if (now_s() >= a.next_send) {
            send_request(c, request_topic, reply_topic, st);
            a.next_send = now_s() + a.interval_s + a.slow_down_s;
        }
        const struct lh_inbound *in = mqtt_next(c, 200);
        if (in != NULL && strcmp(in->topic, reply_topic) == 0)
            outcome = handle_reply(in, &a, state_path, st);
        if (outcome < 0 && now_s() > a.deadline) {
            /* Keep the attempt: the next start resends the same request (section 7.3). */
            event_error(a.shown_code[0] ? "timeout" : "no_reply",
                        a.shown_code[0] ? "the code ran out without an answer" : "no reply from a hub");
            outcome = LH_EXIT_FAILED;
        }
    }
    mqtt_close(c);
    return outcome;
}
