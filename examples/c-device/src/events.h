/* What lh-device prints: one JSON object per line on stdout, the same events
 * and fields as `linkhub-device --json` (code, linked, online, settings,
 * set_ok, command, state, unlinked, waiting, warning, error). */
#ifndef LH_EVENTS_H
#define LH_EVENTS_H

#include <cjson/cJSON.h>

/* Print `event` (an object with "event" set) as one line, then free it. */
void event_emit(cJSON *event);
/* A new event object named `name`. */
cJSON *event_new(const char *name);
/* {"event": "error", "error": code, "error_description": description} */
void event_error(const char *code, const char *description);

#endif
