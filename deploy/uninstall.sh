#!/usr/bin/env bash
# Removes LinkHub's service, program and unit. The data in /var/lib/linkhub
# (accounts, linked devices, settings, the broker's identities) is kept unless
# --purge is given, so a reinstall picks up where it was.
#
#   sudo deploy/uninstall.sh [--purge]
#   deploy/uninstall.sh --prefix DIR --no-systemd [--purge]
set -euo pipefail

prefix=""
purge=0
use_systemd=1
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
    --purge) purge=1; shift ;;
    --no-systemd) use_systemd=0; shift ;;
    *) echo "uninstall.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

if [ -z "$prefix" ] && [ "$(id -u)" != 0 ]; then
  echo "uninstall.sh: run as root (sudo), or with --prefix DIR" >&2
  exit 1
fi

if [ "$use_systemd" = 1 ]; then
  systemctl disable --now linkhub.service 2>/dev/null || true
fi
rm -f "$prefix/etc/systemd/system/linkhub.service"
if [ "$use_systemd" = 1 ]; then systemctl daemon-reload; fi
rm -rf "$prefix/opt/linkhub"
if [ "$purge" = 1 ]; then
  rm -rf "$prefix/var/lib/linkhub"
  if [ -z "$prefix" ] && id linkhub >/dev/null 2>&1; then
    userdel linkhub
  fi
  echo "LinkHub and its data are removed"
else
  echo "LinkHub is removed; its data stays in $prefix/var/lib/linkhub (--purge removes it)"
fi
