#include "codec.h"

#include <math.h>
#include <string.h>

cJSON *codec_parse(const char *payload, size_t len, const char *type)
{
    cJSON *object = cJSON_ParseWithLength(payload, len);
    if (!cJSON_IsObject(object)) {
        cJSON_Delete(object);
        return NULL;
    }
    long version = 0;
    const char *found = codec_string(object, "type");
    if (!codec_integer(object, "v", 1, 1, &version) || found == NULL || strcmp(found, type) != 0) {
        cJSON_Delete(object);
        return NULL;
    }
    return object;
}

const char *codec_string(const cJSON *object, const char *name)
{
    const cJSON *member = cJSON_GetObjectItemCaseSensitive(object, name);
    return cJSON_IsString(member) ? member->valuestring : NULL;
}

bool codec_integer(const cJSON *object, const char *name, long min, long max, long *out)
{
    const cJSON *member = cJSON_GetObjectItemCaseSensitive(object, name);
    if (!cJSON_IsNumber(member))
        return false;
    double value = member->valuedouble;
    if (!isfinite(value) || value != floor(value) || value < (double)min || value > (double)max)
        return false;
    *out = (long)value;
    return true;
}

cJSON *codec_message(const char *type)
{
    cJSON *message = cJSON_CreateObject();
    if (message != NULL) {
        cJSON_AddNumberToObject(message, "v", 1);
        cJSON_AddStringToObject(message, "type", type);
    }
    return message;
}

bool codec_write(cJSON *message, char *out, size_t size)
{
    /* cJSON_PrintPreallocated never writes past `size`: a message that does not fit fails. */
    bool written = message != NULL && size > 0 && size < 0x7fffffff
                   && cJSON_PrintPreallocated(message, out, (int)size, false);
    cJSON_Delete(message);
    return written;
}
