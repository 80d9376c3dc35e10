"""One app linking to a LinkHub issuer with MSAL Python, as MSAL's own sample
does it: a public client, initiate_device_flow, acquire_token_by_device_flow.
Unmodified; it trusts the hub's CA through REQUESTS_CA_BUNDLE, as requests does.

python msal_device_flow.py ISSUER CLIENT_ID SCOPE...
Prints JSON lines: {"event": "code", ...}, then {"event": "tokens", ...} or {"event": "error", ...}.
"""

import json
import sys

import msal


def say(event: dict) -> None:
    print(json.dumps(event), flush=True)


issuer, client_id, *scopes = sys.argv[1:]
app = msal.PublicClientApplication(client_id, oidc_authority=issuer)
flow = app.initiate_device_flow(scopes=scopes)
if "user_code" not in flow:
    say({"event": "error", "error": flow.get("error"), "message": flow.get("error_description")})
    sys.exit(1)
say({"event": "code", "user_code": flow["user_code"], "message": flow["message"]})
result = app.acquire_token_by_device_flow(flow)
if "access_token" in result:
    say(
        {
            "event": "tokens",
            "token_type": result.get("token_type"),
            "scope": result.get("scope"),
            "has_refresh_token": "refresh_token" in result,
            "claims": result.get("id_token_claims"),
            "access_token": result["access_token"],
        }
    )
else:
    say({"event": "error", "error": result.get("error"), "message": result.get("error_description")})
    sys.exit(1)
