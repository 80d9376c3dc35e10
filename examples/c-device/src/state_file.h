/* The device's non-volatile storage: one JSON file, replaced whole and
 * atomically (written beside, flushed, renamed), so a power cut leaves the old
 * file or the new one, never half of each (docs/protocol.md sections 7.3-7.4:
 * the key pair and request id are saved before the request is published; the
 * credentials before the attempt is forgotten). On a microcontroller this is
 * NVS or a flash page written the same way. */
#ifndef LH_STATE_FILE_H
#define LH_STATE_FILE_H

#include <stdbool.h>
#include <cjson/cJSON.h>

#include "device.h"
#include "sealed.h"

struct lh_pending {  /* one link attempt */
    bool present;
    char request_id[LH_ID_MAX + 1];
    char reply_token[LH_ID_MAX + 1];
    char client_id[LH_ID_MAX + 1];
    char public_key[LH_KEY_B64];
    char secret_key[LH_KEY_B64];  /* a secret, like a password */
};

struct lh_mqtt {  /* the credentials from the sealed box */
    char host[LH_TEXT_MAX];
    long port;
    char client_id[LH_DEVICE_ID_MAX + 1];
    char username[LH_DEVICE_ID_MAX + 1];
    char password[LH_TEXT_MAX];
};

struct lh_state {
    char name[LH_TEXT_MAX];
    char model[LH_TEXT_MAX];
    struct lh_pending pending;
    bool linked;
    char device_id[LH_DEVICE_ID_MAX + 1];
    struct lh_mqtt mqtt;
    cJSON *desired;      /* the settings applied (owned), NULL before the first */
    long version;        /* their version; 0 before the first */
    long next_change;    /* settings_set request ids are "c-<n>": never one used before */
    bool light_on;       /* the lamp's one component */
    long brightness;
};

/* Read `path` into `st`; a missing file gives an empty state (true). False:
 * the file exists but cannot be read as a state. */
bool state_load(const char *path, struct lh_state *st);
bool state_save(const char *path, const struct lh_state *st);
/* Forget the link (after an unlink): credentials and settings; name and model stay. */
void state_forget_link(struct lh_state *st);
void state_free(struct lh_state *st);

#endif
