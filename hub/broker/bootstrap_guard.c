/*
 * A mosquitto 2.0 plugin (plugin API version 5) that keeps the public
 * bootstrap login out of the client ids of linked devices and of the hub.
 *
 * Why: mosquitto ends a connected client's session when another client
 * connects with the same client id (MQTT 5.0 section 3.1.4, MQTT-3.1.4-3),
 * after authenticating the newcomer under the newcomer's own username. The
 * bootstrap username and password are public (every unlinked device uses
 * them), so without this plugin anyone on the LAN could connect with a linked
 * device's id (`dev-...`) or the hub's (`linkhub-...`) and knock it off the
 * broker. Dynamic security binds a username to a client id, not a client id
 * to a username, and `clientid_prefixes` is one list for every login
 * (mosquitto.conf(5)), so neither can say this.
 *
 * It answers MOSQ_EVT_BASIC_AUTH before the dynamic-security plugin (it is
 * loaded first; mosquitto asks the plugins in the order they were loaded and
 * stops at the first answer that is not MOSQ_ERR_PLUGIN_DEFER): a CONNECT with
 * the bootstrap username and a client id that starts with a reserved prefix
 * is refused (CONNACK 0x87, Not authorized, before any session is taken
 * over); everything else is deferred to dynamic security, which checks the
 * password as before.
 *
 * Options (mosquitto.conf, after the `plugin` line):
 *   plugin_opt_bootstrap_username linkhub-bootstrap
 *   plugin_opt_reserved_prefixes dev-,linkhub-
 *
 * Built by the hub itself (hub/broker/bootstrap_guard.py) against Debian's
 * mosquitto-dev headers:  cc -shared -fPIC -O2 -o guard.so bootstrap_guard.c
 */
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define MAX_PREFIXES 8

static mosquitto_plugin_id_t *plugin_id = NULL;
static char *bootstrap_username = NULL;
static char *prefix_text = NULL;
static const char *prefixes[MAX_PREFIXES];
static int prefix_count = 0;

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for (int i = 0; i < supported_version_count; i++) {
		if (supported_versions[i] == 5) {
			return 5;
		}
	}
	return -1;
}

static int starts_with(const char *text, const char *prefix)
{
	return strncmp(text, prefix, strlen(prefix)) == 0;
}

static int on_basic_auth(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_basic_auth *auth = event_data;
	const char *client_id;

	(void)event;
	(void)userdata;
	if (auth->username == NULL || strcmp(auth->username, bootstrap_username) != 0) {
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	client_id = mosquitto_client_id(auth->client);
	if (client_id == NULL) {
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	for (int i = 0; i < prefix_count; i++) {
		if (starts_with(client_id, prefixes[i])) {
			mosquitto_log_printf(MOSQ_LOG_NOTICE,
				"linkhub bootstrap guard: refused the bootstrap login with a reserved client id (prefix %s)",
				prefixes[i]);
			return MOSQ_ERR_AUTH;
		}
	}
	return MOSQ_ERR_PLUGIN_DEFER;
}

static int split_prefixes(const char *text)
{
	char *cursor;
	char *token;

	prefix_text = strdup(text);
	if (prefix_text == NULL) {
		return MOSQ_ERR_NOMEM;
	}
	for (token = strtok_r(prefix_text, ",", &cursor); token != NULL; token = strtok_r(NULL, ",", &cursor)) {
		if (token[0] == '\0') {
			continue;
		}
		if (prefix_count == MAX_PREFIXES) {
			mosquitto_log_printf(MOSQ_LOG_ERR, "linkhub bootstrap guard: more than %d reserved prefixes", MAX_PREFIXES);
			return MOSQ_ERR_INVAL;
		}
		prefixes[prefix_count++] = token;
	}
	return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **user_data, struct mosquitto_opt *opts, int opt_count)
{
	const char *prefix_option = NULL;
	int rc;

	(void)user_data;
	plugin_id = identifier;
	for (int i = 0; i < opt_count; i++) {
		if (strcmp(opts[i].key, "bootstrap_username") == 0) {
			bootstrap_username = strdup(opts[i].value);
		} else if (strcmp(opts[i].key, "reserved_prefixes") == 0) {
			prefix_option = opts[i].value;
		}
	}
	if (bootstrap_username == NULL || prefix_option == NULL) {
		mosquitto_log_printf(MOSQ_LOG_ERR,
			"linkhub bootstrap guard: plugin_opt_bootstrap_username and plugin_opt_reserved_prefixes are both needed");
		return MOSQ_ERR_INVAL;
	}
	rc = split_prefixes(prefix_option);
	if (rc != MOSQ_ERR_SUCCESS) {
		return rc;
	}
	return mosquitto_callback_register(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL, NULL);
}

int mosquitto_plugin_cleanup(void *user_data, struct mosquitto_opt *opts, int opt_count)
{
	(void)user_data;
	(void)opts;
	(void)opt_count;
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_BASIC_AUTH, on_basic_auth, NULL);
	free(bootstrap_username);
	free(prefix_text);
	bootstrap_username = NULL;
	prefix_text = NULL;
	prefix_count = 0;
	return MOSQ_ERR_SUCCESS;
}
