#!/bin/sh
# One app linking to a LinkHub issuer with plain curl, step by step as RFC 8628
# says (docs/oauth.md works the same example): discovery, device authorization
# (§3.1), then polling the token endpoint at the interval, +5 s on slow_down
# (§3.4-3.5). It trusts the hub's CA with --cacert.
#
# curl_device_flow.sh CA_FILE ISSUER CLIENT_ID SCOPE
# Prints the device authorization response, then the token response or the error.
set -eu
ca=$1 issuer=$2 client_id=$3 scope=$4

field() {  # the string or number value of a top-level JSON field (enough for these answers)
  sed -n "s/.*\"$1\": *\"\{0,1\}\([^\",}]*\)\"\{0,1\}.*/\1/p"
}

config=$(curl -sS --fail --cacert "$ca" "$issuer/.well-known/openid-configuration")
device_endpoint=$(printf '%s' "$config" | tr ',' '\n' | field device_authorization_endpoint)
token_endpoint=$(printf '%s' "$config" | tr ',' '\n' | field token_endpoint)

answer=$(curl -sS --fail --cacert "$ca" -d "client_id=$client_id" --data-urlencode "scope=$scope" "$device_endpoint")
echo "$answer"
device_code=$(printf '%s' "$answer" | tr ',' '\n' | field device_code)
interval=$(printf '%s' "$answer" | tr ',' '\n' | field interval)

while :; do
  sleep "$interval"
  reply=$(curl -sS --cacert "$ca" \
    -d grant_type=urn:ietf:params:oauth:grant-type:device_code \
    -d "device_code=$device_code" -d "client_id=$client_id" "$token_endpoint")
  error=$(printf '%s' "$reply" | tr ',' '\n' | field error)
  case "$error" in
    authorization_pending) ;;
    slow_down) interval=$((interval + 5)) ;;
    "") echo "$reply"; exit 0 ;;
    *) echo "$reply"; exit 1 ;;
  esac
done
