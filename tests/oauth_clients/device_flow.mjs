// One app linking to a LinkHub issuer with Node's openid-client (v6), as its
// README shows: discovery, device authorization, polling. Unmodified; it
// trusts the hub's CA through NODE_EXTRA_CA_CERTS, as Node apps do.
//
// node device_flow.mjs ISSUER CLIENT_ID SCOPE
// Prints JSON lines: {"event":"code",...}, then {"event":"tokens",...} or {"event":"error",...}.
import * as client from "openid-client";

const [issuer, clientId, scope] = process.argv.slice(2);
const say = (event) => console.log(JSON.stringify(event));

try {
  const config = await client.discovery(new URL(issuer), clientId, undefined, client.None());
  const response = await client.initiateDeviceAuthorization(config, { scope });
  say({
    event: "code",
    user_code: response.user_code,
    verification_uri: response.verification_uri,
    verification_uri_complete: response.verification_uri_complete,
    expires_in: response.expires_in,
    interval: response.interval,
  });
  const tokens = await client.pollDeviceAuthorizationGrant(config, response);
  say({
    event: "tokens",
    token_type: tokens.token_type,
    scope: tokens.scope,
    has_refresh_token: typeof tokens.refresh_token === "string",
    claims: tokens.claims() ?? null,
    access_token: tokens.access_token,
  });
} catch (error) {
  say({ event: "error", error: error.error ?? error.code ?? "unknown", message: String(error.message) });
  process.exitCode = 1;
}
