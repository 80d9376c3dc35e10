#include "merge_patch.h"

cJSON *merge_patch(cJSON *target, const cJSON *patch)
{
    if (!cJSON_IsObject(patch)) {
        /* Anything but an object replaces the target whole, arrays included. */
        cJSON_Delete(target);
        return cJSON_Duplicate(patch, 1);
    }
    if (!cJSON_IsObject(target)) {
        cJSON_Delete(target);
        target = cJSON_CreateObject();
        if (target == NULL)
            return NULL;
    }
    for (const cJSON *member = patch->child; member != NULL; member = member->next) {
        if (cJSON_IsNull(member)) {
            cJSON_DeleteItemFromObjectCaseSensitive(target, member->string);
            continue;
        }
        cJSON *before = cJSON_DetachItemFromObjectCaseSensitive(target, member->string);
        cJSON *after = merge_patch(before, member);
        if (after == NULL) {
            cJSON_Delete(target);
            return NULL;
        }
        cJSON_AddItemToObject(target, member->string, after);
    }
    return target;
}
