#include "state_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codec.h"

#define STATE_MAX 32768

static void copy(char *out, size_t size, const char *text)
{
    snprintf(out, size, "%s", text != NULL ? text : "");
}

static bool take(char *out, size_t size, const cJSON *object, const char *name)
{
    const char *text = codec_string(object, name);
    if (text == NULL || strlen(text) >= size)
        return false;
    copy(out, size, text);
    return true;
}

static bool read_whole(const char *path, char *buffer, size_t size, size_t *len)
{
    FILE *file = fopen(path, "rb");
    if (file == NULL)
        return false;
    *len = fread(buffer, 1, size - 1, file);
    bool whole = feof(file) && !ferror(file);
    fclose(file);
    buffer[*len] = '\0';
    return whole;
}

bool state_load(const char *path, struct lh_state *st)
{
    static char text[STATE_MAX];
    size_t len = 0;
    memset(st, 0, sizeof *st);
    st->light_on = true;
    st->brightness = 200;
    if (access(path, F_OK) != 0)
        return errno == ENOENT;
    if (!read_whole(path, text, sizeof text, &len))
        return false;
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return false;
    }
    bool ok = take(st->name, sizeof st->name, root, "name") && take(st->model, sizeof st->model, root, "model");
    const cJSON *pending = cJSON_GetObjectItemCaseSensitive(root, "pending");
    if (ok && cJSON_IsObject(pending)) {
        struct lh_pending *p = &st->pending;
        p->present = take(p->request_id, sizeof p->request_id, pending, "request_id")
                     && take(p->reply_token, sizeof p->reply_token, pending, "reply_token")
                     && take(p->client_id, sizeof p->client_id, pending, "client_id")
                     && take(p->public_key, sizeof p->public_key, pending, "public_key")
                     && take(p->secret_key, sizeof p->secret_key, pending, "secret_key");
        ok = p->present;
    }
    const cJSON *mqtt = cJSON_GetObjectItemCaseSensitive(root, "mqtt");
    if (ok && cJSON_IsObject(mqtt)) {
        struct lh_mqtt *m = &st->mqtt;
        st->linked = take(st->device_id, sizeof st->device_id, root, "device_id")
                     && take(m->host, sizeof m->host, mqtt, "host")
                     && codec_integer(mqtt, "port", 1, 65535, &m->port)
                     && take(m->client_id, sizeof m->client_id, mqtt, "client_id")
                     && take(m->username, sizeof m->username, mqtt, "username")
                     && take(m->password, sizeof m->password, mqtt, "password");
        ok = st->linked;
    }
    const cJSON *settings = cJSON_GetObjectItemCaseSensitive(root, "settings");
    if (ok && cJSON_IsObject(settings)) {
        const cJSON *desired = cJSON_GetObjectItemCaseSensitive(settings, "desired");
        ok = cJSON_IsObject(desired) && codec_integer(settings, "version", 0, 0x7fffffffL, &st->version);
        if (ok)
            st->desired = cJSON_Duplicate(desired, 1);
    }
    codec_integer(root, "next_change", 0, 0x7fffffffL, &st->next_change);
    const cJSON *lamp = cJSON_GetObjectItemCaseSensitive(root, "lamp");
    if (cJSON_IsObject(lamp)) {
        st->light_on = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(lamp, "on"));
        codec_integer(lamp, "brightness", 0, 255, &st->brightness);
    }
    cJSON_Delete(root);
    return ok;
}

static cJSON *state_json(const struct lh_state *st)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "name", st->name);
    cJSON_AddStringToObject(root, "model", st->model);
    if (st->pending.present) {
        const struct lh_pending *p = &st->pending;
        cJSON *pending = cJSON_AddObjectToObject(root, "pending");
        cJSON_AddStringToObject(pending, "request_id", p->request_id);
        cJSON_AddStringToObject(pending, "reply_token", p->reply_token);
        cJSON_AddStringToObject(pending, "client_id", p->client_id);
        cJSON_AddStringToObject(pending, "public_key", p->public_key);
        cJSON_AddStringToObject(pending, "secret_key", p->secret_key);
    }
    if (st->linked) {
        const struct lh_mqtt *m = &st->mqtt;
        cJSON_AddStringToObject(root, "device_id", st->device_id);
        cJSON *mqtt = cJSON_AddObjectToObject(root, "mqtt");
        cJSON_AddStringToObject(mqtt, "host", m->host);
        cJSON_AddNumberToObject(mqtt, "port", (double)m->port);
        cJSON_AddStringToObject(mqtt, "client_id", m->client_id);
        cJSON_AddStringToObject(mqtt, "username", m->username);
        cJSON_AddStringToObject(mqtt, "password", m->password);
    }
    if (st->desired != NULL) {
        cJSON *settings = cJSON_AddObjectToObject(root, "settings");
        cJSON_AddItemToObject(settings, "desired", cJSON_Duplicate(st->desired, 1));
        cJSON_AddNumberToObject(settings, "version", (double)st->version);
    }
    cJSON_AddNumberToObject(root, "next_change", (double)st->next_change);
    cJSON *lamp = cJSON_AddObjectToObject(root, "lamp");
    cJSON_AddBoolToObject(lamp, "on", st->light_on);
    cJSON_AddNumberToObject(lamp, "brightness", (double)st->brightness);
    return root;
}

bool state_save(const char *path, const struct lh_state *st)
{
    static char text[STATE_MAX];
    char temporary[4096];
    if (!codec_write(state_json(st), text, sizeof text))
        return false;
    if (snprintf(temporary, sizeof temporary, "%s.tmp", path) >= (int)sizeof temporary)
        return false;
    /* Mode 0600: the file holds a private key and a password. */
    int fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return false;
    size_t len = strlen(text);
    bool written = write(fd, text, len) == (ssize_t)len && fsync(fd) == 0;
    written = close(fd) == 0 && written;
    if (!written || rename(temporary, path) != 0) {
        unlink(temporary);
        return false;
    }
    return true;
}

void state_forget_link(struct lh_state *st)
{
    st->linked = false;
    memset(st->device_id, 0, sizeof st->device_id);
    sodium_memzero(&st->mqtt, sizeof st->mqtt);
    cJSON_Delete(st->desired);
    st->desired = NULL;
    st->version = 0;
}

void state_free(struct lh_state *st)
{
    cJSON_Delete(st->desired);
    st->desired = NULL;
    sodium_memzero(st, sizeof *st);
}
