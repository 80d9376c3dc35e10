/* The linked device (docs/protocol.md sections 8, 12 and 13): its status with
 * a last will, its settings both ways, its one component (a dimmable light)
 * with its state and commands, and the end of it all when it is unlinked. */
#include "run.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codec.h"
#include "events.h"
#include "merge_patch.h"

#define ONLINE "{\"v\":1,\"type\":\"status\",\"online\":true}"
#define OFFLINE "{\"v\":1,\"type\":\"status\",\"online\":false}"
#define START_TIMEOUT_S 60  /* the broker must answer within this at start */
#define LINE_MAX_BYTES 9000 /* a line on stdin: "set KEY=VALUE" with a value of up to 8 KiB */

static char out[LH_MAX_OUT];
static char pending_set[LH_MAX_OUT];  /* the settings_set waiting for its reply, resent as it is */

struct topics {
    char status[LH_MAX_TOPIC], get[LH_MAX_TOPIC], desired[LH_MAX_TOPIC], reported[LH_MAX_TOPIC];
    char set[LH_MAX_TOPIC], reply[LH_MAX_TOPIC], description[LH_MAX_TOPIC], state[LH_MAX_TOPIC];
    char command[LH_MAX_TOPIC];
};

struct session {
    const struct lh_options *opt;
    const char *state_path;
    struct lh_state *st;
    struct lh_conn *c;
    struct topics t;
    bool waiting_full;        /* drop changes until the full document (section 12.4) */
    unsigned long sent;       /* counts request ids of this run: get-N, describe-N */
    char describe_id[32];
    double describe_at;       /* when the description went; 0 once the state followed */
    char set_id[32];          /* the settings_set waiting for its reply; "" for none */
    double set_at;
    bool stdin_open;
};

static void topic(char *out_topic, const char *device_id, const char *leaf)
{
    snprintf(out_topic, LH_MAX_TOPIC, LH_TOPIC_ROOT "/devices/%s/%s", device_id, leaf);
}

static bool publish(struct session *s, const char *where, cJSON *message, bool retain)
{
    return codec_write(message, out, sizeof out) && mqtt_publish(s->c, where, out, retain, NULL, 10);
}

static cJSON *lamp_value(const struct lh_state *st)
{
    cJSON *light = cJSON_CreateObject();
    cJSON_AddBoolToObject(light, "on", st->light_on);
    cJSON_AddNumberToObject(light, "brightness", (double)st->brightness);
    return light;
}

/* The whole state, retained (section 13.2), naming the command it answers. */
static void send_state(struct session *s, const char *command_id)
{
    cJSON *message = codec_message("state");
    cJSON *state = cJSON_AddObjectToObject(message, "state");
    cJSON_AddItemToObject(state, "light", lamp_value(s->st));
    if (command_id != NULL)
        cJSON_AddStringToObject(message, "command_id", command_id);
    publish(s, s->t.state, message, true);
    s->describe_at = 0;
}

static void send_get(struct session *s)
{
    char request_id[32];
    snprintf(request_id, sizeof request_id, "get-%lu", ++s->sent);
    cJSON *message = codec_message("settings_get");
    cJSON_AddStringToObject(message, "request_id", request_id);
    publish(s, s->t.get, message, false);
    s->waiting_full = true;
}

static void send_description(struct session *s)
{
    snprintf(s->describe_id, sizeof s->describe_id, "describe-%lu", ++s->sent);
    cJSON *message = codec_message("description");
    cJSON_AddStringToObject(message, "request_id", s->describe_id);
    cJSON_AddStringToObject(message, "manufacturer", "LinkHub example");
    cJSON_AddStringToObject(message, "model", s->st->model);
    if (s->opt->firmware != NULL)
        cJSON_AddStringToObject(message, "firmware", s->opt->firmware);
    cJSON *components = cJSON_AddArrayToObject(message, "components");
    cJSON *light = cJSON_CreateObject();
    cJSON_AddStringToObject(light, "key", "light");
    cJSON_AddStringToObject(light, "kind", "light");
    cJSON_AddStringToObject(light, "name", "Light");
    cJSON_AddBoolToObject(light, "commandable", true);
    cJSON_AddItemToArray(components, light);
    publish(s, s->t.description, message, false);
    s->describe_at = now_s();
}

/* Keep what was applied, tell the hub, tell the person (sections 12.2, 12.4). */
static void applied(struct session *s)
{
    if (!state_save(s->state_path, s->st))
        event_error("state_not_saved", "the settings could not be saved");
    cJSON *message = codec_message("reported");
    cJSON_AddNumberToObject(message, "applied_version", (double)s->st->version);
    cJSON_AddItemToObject(message, "reported", cJSON_Duplicate(s->st->desired, 1));
    publish(s, s->t.reported, message, false);
    cJSON *event = event_new("settings");
    cJSON_AddItemToObject(event, "desired", cJSON_Duplicate(s->st->desired, 1));
    cJSON_AddNumberToObject(event, "version", (double)s->st->version);
    event_emit(event);
}

static void on_desired(struct session *s, const struct lh_inbound *in)
{
    cJSON *message = codec_parse(in->payload, in->len, "desired");
    const cJSON *document = cJSON_GetObjectItemCaseSensitive(message, "desired");
    const cJSON *full = cJSON_GetObjectItemCaseSensitive(message, "full");
    long version = 0;
    if (!cJSON_IsObject(document) || !cJSON_IsBool(full) || !codec_integer(message, "version", 1, 0x7fffffffL, &version)) {
        cJSON_Delete(message);
        return;
    }
    if (cJSON_IsTrue(full)) {
        /* It replaces whatever the device had (section 12.4, step 3). */
        cJSON_Delete(s->st->desired);
        s->st->desired = cJSON_Duplicate(document, 1);
        s->st->version = version;
        s->waiting_full = false;
        applied(s);
    } else if (s->waiting_full || version <= s->st->version) {
        /* Before the full document, or not newer: dropped. */
    } else if (version == s->st->version + 1) {
        s->st->desired = merge_patch(s->st->desired, document);
        s->st->version = version;
        applied(s);
    } else {
        send_get(s);  /* a version was skipped: start again from the whole document */
    }
    cJSON_Delete(message);
}

static void on_reply(struct session *s, const struct lh_inbound *in)
{
    cJSON *message = codec_parse(in->payload, in->len, "reply");
    const char *request_id = codec_string(message, "request_id");
    const char *status = codec_string(message, "status");
    if (message == NULL || status == NULL) {
        cJSON_Delete(message);
        return;
    }
    bool ok = strcmp(status, "ok") == 0;
    if (request_id != NULL && strcmp(request_id, s->describe_id) == 0) {
        if (ok && s->describe_at > 0)
            send_state(s, NULL);  /* the description is taken: the state may follow (13.4) */
    } else if (request_id != NULL && s->set_id[0] && strcmp(request_id, s->set_id) == 0 && ok) {
        long version = 0;
        codec_integer(message, "version", 0, 0x7fffffffL, &version);
        cJSON *event = event_new("set_ok");
        cJSON_AddStringToObject(event, "request_id", request_id);
        cJSON_AddNumberToObject(event, "version", (double)version);
        event_emit(event);
        s->set_id[0] = '\0';
    }
    if (!ok) {
        const char *error = codec_string(message, "error");
        const char *description = codec_string(message, "error_description");
        cJSON *event = event_new("error");
        cJSON_AddStringToObject(event, "error", error != NULL ? error : "server_error");
        cJSON_AddStringToObject(event, "error_description", description != NULL ? description : "");
        if (request_id != NULL)
            cJSON_AddStringToObject(event, "request_id", request_id);
        event_emit(event);
        if (request_id != NULL && strcmp(request_id, s->set_id) == 0 && (error == NULL || strcmp(error, "slow_down") != 0))
            s->set_id[0] = '\0';  /* refused: nothing changed; a slow_down is sent again later */
    }
    cJSON_Delete(message);
}

/* A command for the light (section 13.3), checked against the one component. */
static void on_command(struct session *s, const struct lh_inbound *in)
{
    cJSON *message = codec_parse(in->payload, in->len, "command");
    const char *command_id = codec_string(message, "command_id");
    const char *component = codec_string(message, "component");
    const cJSON *value = cJSON_GetObjectItemCaseSensitive(message, "value");
    const cJSON *on = cJSON_GetObjectItemCaseSensitive(value, "on");
    long brightness = -1;
    bool has_brightness = cJSON_GetObjectItemCaseSensitive(value, "brightness") != NULL;
    bool fits = command_id != NULL && component != NULL && strcmp(component, "light") == 0
                && cJSON_IsObject(value) && (on != NULL || has_brightness) && (on == NULL || cJSON_IsBool(on))
                && (!has_brightness || codec_integer(value, "brightness", 0, 255, &brightness));
    if (!fits) {
        event_error("bad_command", "a command that does not fit this device was ignored");
        cJSON_Delete(message);
        return;
    }
    if (on != NULL)
        s->st->light_on = cJSON_IsTrue(on);
    if (has_brightness)
        s->st->brightness = brightness;
    state_save(s->state_path, s->st);
    send_state(s, command_id);
    cJSON *event = event_new("command");
    cJSON_AddStringToObject(event, "component", component);
    cJSON_AddItemToObject(event, "value", cJSON_Duplicate(value, 1));
    cJSON_AddItemToObject(event, "state", lamp_value(s->st));
    event_emit(event);
    cJSON_Delete(message);
}

/* "set KEY=VALUE" on stdin: a change made on the device (a button), sent as
 * settings_set (section 12.2). VALUE is JSON if it reads as JSON, else text. */
static void change_on_device(struct session *s, char *assignment)
{
    char *equals = strchr(assignment, '=');
    if (equals == NULL || equals == assignment) {
        event_error("bad_input", "expected: set KEY=VALUE");
        return;
    }
    *equals = '\0';
    cJSON *value = cJSON_Parse(equals + 1);
    if (value == NULL)
        value = cJSON_CreateString(equals + 1);
    /* A new request id, saved before it is used: never one used before (section 12.2). */
    s->st->next_change++;
    if (!state_save(s->state_path, s->st)) {
        cJSON_Delete(value);
        event_error("state_not_saved", "the change was not sent");
        return;
    }
    snprintf(s->set_id, sizeof s->set_id, "c-%ld", s->st->next_change);
    cJSON *message = codec_message("settings_set");
    cJSON_AddStringToObject(message, "request_id", s->set_id);
    cJSON_AddNumberToObject(message, "base_version", (double)s->st->version);
    cJSON *changes = cJSON_AddObjectToObject(message, "changes");
    cJSON_AddItemToObject(changes, assignment, value);
    if (!codec_write(message, pending_set, sizeof pending_set)) {
        event_error("payload_too_large", "the change is too large to send");
        s->set_id[0] = '\0';
        return;
    }
    mqtt_publish(s->c, s->t.set, pending_set, false, NULL, 10);
    s->set_at = now_s();
}

/* Lines on stdin: "set KEY=VALUE", or "quit" (offline, then stop). True to stop. */
static bool read_stdin(struct session *s)
{
    static char line[LINE_MAX_BYTES];
    struct pollfd input = {STDIN_FILENO, POLLIN, 0};
    if (!s->stdin_open || poll(&input, 1, 0) <= 0)
        return false;
    if (fgets(line, sizeof line, stdin) == NULL) {
        s->stdin_open = false;  /* closed: the device goes on running */
        return false;
    }
    line[strcspn(line, "\r\n")] = '\0';
    if (strcmp(line, "quit") == 0)
        return true;
    if (strncmp(line, "set ", 4) == 0)
        change_on_device(s, line + 4);
    else if (line[0] != '\0')
        event_error("bad_input", "expected: set KEY=VALUE, or quit");
    return false;
}

/* After every connect (sections 8, 12.4 and 13.4). */
static bool start_session(struct session *s)
{
    if (!mqtt_publish(s->c, s->t.status, ONLINE, true, NULL, 10))
        return false;
    if (!mqtt_subscribe(s->c, s->t.desired, 10) || !mqtt_subscribe(s->c, s->t.reply, 10)
        || !mqtt_subscribe(s->c, s->t.command, 10))
        return false;
    cJSON *event = event_new("online");
    cJSON_AddStringToObject(event, "device_id", s->st->device_id);
    cJSON_AddBoolToObject(event, "tls", false);
    event_emit(event);
    send_get(s);
    send_description(s);
    if (s->set_id[0])
        mqtt_publish(s->c, s->t.set, pending_set, false, NULL, 10);  /* no reply came: the same again */
    return true;
}

static int unlinked(struct session *s)
{
    cJSON *event = event_new("unlinked");
    cJSON_AddStringToObject(event, "device_id", s->st->device_id);
    state_forget_link(s->st);
    state_save(s->state_path, s->st);
    event_emit(event);
    return LH_EXIT_OK;
}

int run_device(const struct lh_options *opt, const char *state_path, struct lh_state *st, struct lh_conn *c)
{
    struct session s = {.opt = opt, .state_path = state_path, .st = st, .c = c, .stdin_open = true};
    const char *id = st->device_id;
    topic(s.t.status, id, "status");
    topic(s.t.get, id, "settings/get");
    topic(s.t.desired, id, "settings/desired");
    topic(s.t.reported, id, "settings/reported");
    topic(s.t.set, id, "settings/set");
    topic(s.t.reply, id, "reply");
    topic(s.t.description, id, "description");
    topic(s.t.state, id, "state");
    topic(s.t.command, id, "command");

    if (!mqtt_setup(c, st->mqtt.client_id, st->mqtt.username, st->mqtt.password, opt->mqtt5, s.t.status, OFFLINE)) {
        event_error("mqtt_failed", "libmosquitto could not be set up");
        return LH_EXIT_FAILED;
    }
    int outcome = -1;
    int connack = mqtt_connect_backoff(c, st->mqtt.host, (int)st->mqtt.port, now_s() + START_TIMEOUT_S);
    while (outcome < 0) {
        if (mqtt_refused_login(connack)) {
            outcome = unlinked(&s);  /* the refused login is the proof (section 8.1) */
            break;
        }
        if (connack != 0) {
            event_error("hub_unreachable", "the broker could not be reached");
            outcome = LH_EXIT_FAILED;
            break;
        }
        if (!start_session(&s)) {
            connack = c->connected ? -1 : mqtt_connect_backoff(c, NULL, 0, 0);
            continue;
        }
        while (c->connected) {
            const struct lh_inbound *in = mqtt_next(c, 100);
            if (in != NULL && strcmp(in->topic, s.t.desired) == 0)
                on_desired(&s, in);
            else if (in != NULL && strcmp(in->topic, s.t.reply) == 0)
                on_reply(&s, in);
            else if (in != NULL && strcmp(in->topic, s.t.command) == 0)
                on_command(&s, in);
            if (s.describe_at > 0 && now_s() - s.describe_at > LH_DESCRIBE_WAIT_S)
                send_state(&s, NULL);  /* no answer to the description: the state goes anyway */
            if (s.set_id[0] && now_s() - s.set_at > LH_SET_RESEND_S) {
                mqtt_publish(c, s.t.set, pending_set, false, NULL, 10);
                s.set_at = now_s();
            }
            if (read_stdin(&s)) {
                /* A deliberate stop: offline first; a normal disconnect fires no will (section 8). */
                mqtt_publish(c, s.t.status, OFFLINE, true, NULL, 10);
                outcome = LH_EXIT_OK;
                break;
            }
        }
        if (outcome < 0)  /* lost (an unlink, a broker restart): the answer to reconnecting tells which */
            connack = mqtt_connect_backoff(c, NULL, 0, 0);
    }
    mqtt_close(c);
    return outcome;
}
