#!/usr/bin/env bash
# What the tests need from Debian's packages, installed when missing (as root, or through
# sudo): chromium and chromium-driver for the console's browser tests (tests/console.rs),
# nginx for the deployment example (tests/failover.rs). PostgreSQL comes with
# tests/postgres.sh.
set -euo pipefail
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
[ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
