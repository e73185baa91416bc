#!/usr/bin/env bash
# What the tests need from Debian's packages, installed when missing (as root, or through
# sudo): chromium and chromium-driver for the console's browser tests (tests/console.rs),
# nginx for the deployment example (tests/failover.rs), libnss-myhostname for the Azure CLI
# against the emulator (tests/real_clients.rs), opensc's pkcs11-tool, OpenSSL's pkcs11 engine
# and ssh-keygen for the PKCS#11 module (tests/pkcs11). PostgreSQL comes with tests/postgres.sh.
set -euo pipefail
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
[ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v pkcs11-tool >/dev/null || missing+=(opensc)
command -v openssl >/dev/null || missing+=(openssl)
[ -e /usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so ] || missing+=(libengine-pkcs11-openssl)
command -v ssh-keygen >/dev/null || missing+=(openssh-client)
# The emulator serves vaults and HSMs as *.localhost (RFC 6761); the Azure CLI (Python) needs
# the system resolver to know that, which nss-myhostname does.
getent hosts keyward-check.localhost >/dev/null || missing+=(libnss-myhostname)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
