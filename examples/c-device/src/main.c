/* lh-device: the LinkHub reference device in C.
 *
 *   lh-device --hub mqtt://HOST:PORT --state FILE --name NAME --model MODEL
 *             [--address TEXT] [--firmware TEXT] [--mqtt 3.1.1|5]
 *
 * Links if the state file holds no credentials, then runs. One JSON object per
 * line on stdout (src/events.h); "set KEY=VALUE" and "quit" on stdin. Exits 0
 * after "quit" or after an unlink was handled, non-zero on an error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>

#include "device.h"
#include "events.h"
#include "link.h"
#include "run.h"
#include "sealed.h"
#include "state_file.h"

/* About 100 KiB: the inbox and the message being handled. Static, not on the stack. */
static struct lh_conn connection;

static int usage(const char *why)
{
    fprintf(stderr,
            "lh-device: %s\n"
            "usage: lh-device --hub mqtt://HOST:PORT --state FILE --name NAME --model MODEL\n"
            "                 [--address TEXT] [--firmware TEXT] [--mqtt 3.1.1|5]\n",
            why);
    return LH_EXIT_USAGE;
}

static bool parse_hub(const char *url, struct lh_options *opt)
{
    static char host[LH_TEXT_MAX];
    const char *prefix = "mqtt://";
    if (strncmp(url, prefix, strlen(prefix)) != 0)
        return false;
    const char *rest = url + strlen(prefix);
    const char *colon = strrchr(rest, ':');
    if (colon == NULL || colon == rest || (size_t)(colon - rest) >= sizeof host)
        return false;
    char *end = NULL;
    long port = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end != '\0' || port < 1 || port > 65535)
        return false;
    memcpy(host, rest, (size_t)(colon - rest));
    host[colon - rest] = '\0';
    opt->host = host;
    opt->port = (int)port;
    return true;
}

int main(int argc, char **argv)
{
    struct lh_options opt = {.mqtt5 = true};
    const char *hub = NULL;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (value == NULL)
            return usage("every option takes a value");
        if (strcmp(arg, "--hub") == 0)
            hub = value;
        else if (strcmp(arg, "--state") == 0)
            opt.state_path = value;
        else if (strcmp(arg, "--name") == 0)
            opt.name = value;
        else if (strcmp(arg, "--model") == 0)
            opt.model = value;
        else if (strcmp(arg, "--address") == 0)
            opt.address = value;
        else if (strcmp(arg, "--firmware") == 0)
            opt.firmware = value;
        else if (strcmp(arg, "--mqtt") == 0 && (strcmp(value, "5") == 0 || strcmp(value, "3.1.1") == 0))
            opt.mqtt5 = strcmp(value, "5") == 0;
        else
            return usage("unknown option or value");
        i++;
    }
    if (hub == NULL || opt.state_path == NULL || opt.name == NULL || opt.model == NULL)
        return usage("--hub, --state, --name and --model are needed");
    if (!parse_hub(hub, &opt))
        return usage("--hub is mqtt://HOST:PORT");
    if (!sealed_init()) {
        event_error("no_random_source", "libsodium could not start");
        return LH_EXIT_FAILED;
    }

    struct lh_state st;
    if (!state_load(opt.state_path, &st)) {
        state_free(&st);
        event_error("bad_state_file", "the state file cannot be read; move it away to start afresh");
        return LH_EXIT_FAILED;
    }
    if (st.name[0] == '\0') {
        snprintf(st.name, sizeof st.name, "%s", opt.name);
        snprintf(st.model, sizeof st.model, "%s", opt.model);
    }
    mosquitto_lib_init();
    int status = LH_EXIT_OK;
    if (!st.linked)
        status = link_device(&opt, opt.state_path, &st, &connection);
    if (status == LH_EXIT_OK && st.linked)
        status = run_device(&opt, opt.state_path, &st, &connection);
    state_free(&st);
    mosquitto_lib_cleanup();
    return status;
}
