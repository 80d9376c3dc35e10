/* Reading and writing the protocol's JSON messages (docs/protocol.md): every
 * payload is a UTF-8 JSON object with "v": 1 and a "type". Messages are
 * written compact into the caller's buffer (cJSON_PrintPreallocated): the
 * only allocations on the message path are cJSON's own. */
#ifndef LH_CODEC_H
#define LH_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <cjson/cJSON.h>

/* The object in `payload` if it is one, with "v" 1 and "type" `type`; else
 * NULL. The caller frees it with cJSON_Delete. */
cJSON *codec_parse(const char *payload, size_t len, const char *type);

/* A member as a string (NULL if absent or of another type). */
const char *codec_string(const cJSON *object, const char *name);
/* A member that is a whole number from `min` to `max`, into `out`. */
bool codec_integer(const cJSON *object, const char *name, long min, long max, long *out);

/* A new message {"v": 1, "type": type}. */
cJSON *codec_message(const char *type);
/* Write `message` compact into `out` and free it; false when it does not fit
 * (then nothing is sent). */
bool codec_write(cJSON *message, char *out, size_t size);

#endif
