/* Linking: one attempt, saved before it is sent, resent until a final answer;
 * on `approved` the sealed credentials are opened, checked and saved. */
#ifndef LH_LINK_H
#define LH_LINK_H

#include "device.h"
#include "mqtt_io.h"
#include "state_file.h"

/* LH_EXIT_OK with `st` linked and saved; LH_EXIT_FAILED after a final error
 * (the attempt forgotten) or a timeout (the attempt kept). */
int link_device(const struct lh_options *opt, const char *state_path, struct lh_state *st, struct lh_conn *c);

#endif
