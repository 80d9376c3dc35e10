/* JSON merge patch (RFC 7396), the form of every settings change
 * (docs/protocol.md section 12.1). cJSON_Utils has one too; it is not in every
 * cJSON package (Debian's libcjson-dev ships cJSON alone), and this is short. */
#ifndef LH_MERGE_PATCH_H
#define LH_MERGE_PATCH_H

#include <cjson/cJSON.h>

/* Apply `patch` to `target` (owned; NULL for none) and return the result
 * (owned by the caller; `target` is consumed). NULL only when out of memory. */
cJSON *merge_patch(cJSON *target, const cJSON *patch);

#endif
