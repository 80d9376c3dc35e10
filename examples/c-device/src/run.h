/* The linked device: connected with its own identity and a last will, its
 * settings, its light, until it is stopped ("quit" on stdin) or unlinked. */
#ifndef LH_RUN_H
#define LH_RUN_H

#include "device.h"
#include "mqtt_io.h"
#include "state_file.h"

/* LH_EXIT_OK after "quit" or an unlink handled (the link forgotten and saved);
 * LH_EXIT_FAILED when the broker cannot be reached at start. */
int run_device(const struct lh_options *opt, const char *state_path, struct lh_state *st, struct lh_conn *c);

#endif
