#include "events.h"

#include <stdio.h>
#include <stdlib.h>

cJSON *event_new(const char *name)
{
    cJSON *event = cJSON_CreateObject();
    if (event != NULL)
        cJSON_AddStringToObject(event, "event", name);
    return event;
}

void event_emit(cJSON *event)
{
    if (event == NULL)
        return;
    char *line = cJSON_PrintUnformatted(event);
    if (line != NULL) {
        fputs(line, stdout);
        fputc('\n', stdout);
        fflush(stdout);
        cJSON_free(line);
    }
    cJSON_Delete(event);
}

void event_error(const char *code, const char *description)
{
    cJSON *event = event_new("error");
    cJSON_AddStringToObject(event, "error", code);
    cJSON_AddStringToObject(event, "error_description", description);
    event_emit(event);
}
