#!/usr/bin/env bash
# Installs LinkHub on Raspberry Pi OS or Debian as a systemd service:
#   a system user `linkhub`, a virtual environment in /opt/linkhub/venv,
#   mosquitto from apt-get, the unit in /etc/systemd/system, enabled and started.
#
#   sudo deploy/install.sh                 install from this checkout
#   deploy/install.sh --prefix DIR --no-apt --no-systemd
#                                          install into a throwaway root (tests)
set -euo pipefail

prefix=""
use_apt=1
use_systemd=1
source_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
    --no-apt) use_apt=0; shift ;;
    --no-systemd) use_systemd=0; shift ;;
    --source) source_dir="${2:?--source needs a directory}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

if [ -z "$prefix" ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (sudo), or with --prefix DIR for a try-out" >&2
  exit 1
fi

opt="$prefix/opt/linkhub"
unit_dir="$prefix/etc/systemd/system"
state_dir="$prefix/var/lib/linkhub"

if [ "$use_apt" = 1 ]; then
  echo "installing mosquitto, python3-venv and what the bootstrap guard is built with, with apt-get"
  apt-get update -qq
  # gcc, libc6-dev and mosquitto's plugin headers: the hub builds its bootstrap
  # guard plugin (hub/broker/bootstrap_guard.c) at its first start.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    mosquitto python3-venv gcc libc6-dev mosquitto-dev libmosquitto-dev
  # LinkHub runs its own mosquitto on 1884; the distribution's service is left as it was.
fi

if [ -z "$prefix" ] && ! id linkhub >/dev/null 2>&1; then
  echo "creating the system user linkhub"
  useradd --system --home-dir /var/lib/linkhub --no-create-home --shell /usr/sbin/nologin linkhub
fi

echo "installing LinkHub into $opt"
mkdir -p "$opt" "$unit_dir" "$state_dir"
rm -rf "$opt/src"
mkdir -p "$opt/src"
# Only what is tracked: no .venv, data or caches from the checkout.
if git -C "$source_dir" rev-parse --git-dir >/dev/null 2>&1; then
  git -C "$source_dir" ls-files -z | (cd "$source_dir" && xargs -0 cp --parents -t "$opt/src")
else
  cp -r "$source_dir/." "$opt/src"
fi
if [ ! -x "$opt/venv/bin/python" ]; then
  python3 -m venv "$opt/venv"
fi
"$opt/venv/bin/python" -m pip install -q --disable-pip-version-check "$opt/src"

sed "s#/opt/linkhub#$opt#g; s#/var/lib/linkhub#$state_dir#g" "$source_dir/deploy/linkhub.service" \
  >"$unit_dir/linkhub.service"
chmod 0644 "$unit_dir/linkhub.service"
chmod 0700 "$state_dir"
if [ -z "$prefix" ]; then
  chown linkhub:linkhub "$state_dir"
fi

if [ "$use_systemd" = 1 ]; then
  systemctl daemon-reload
  systemctl enable --now linkhub.service
  echo "LinkHub is running: systemctl status linkhub; journalctl -u linkhub shows its /link address"
else
  echo "installed; not started (--no-systemd): $opt/venv/bin/linkhub run --data-dir $state_dir"
fi
