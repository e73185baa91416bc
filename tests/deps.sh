#!/usr/bin/env bash
# What the tests need from Debian's packages, installed when missing (as root, or through
# sudo): chromium and chromium-driver for the console's browser tests (tests/console.rs),
# nginx for the deployment example (tests/failover.rs), libnss-myhostname for the Azure CLI
# against the emulator (tests/real_clients.rs), opensc's pkcs11-tool, OpenSSL's pkcs11 engine
# and provider, and OpenSSH's client and server for the PKCS#11 module (tests/pkcs11). PostgreSQL comes with
# tests/postgres.sh.
set -euo pipefail
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
[ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v pkcs11-tool >/dev/null || missing+=(opensc)
command -v openssl >/dev/null || missing+=(openssl)
[ -e /usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so ] || missing+=(libengine-pkcs11-openssl)
command -v ssh-keygen >/dev/null || missing+=(openssh-client)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
# The emulator serves vaults and HSMs as *.localhost (RFC 6761); the Azure CLI (Python) needs
# the system resolver to know that, which nss-myhostname does.
getent hosts keyward-check.localhost >/dev/null || missing+=(libnss-myhostname)
provider=/usr/lib/x86_64-linux-gnu/ossl-modules/pkcs11.so
if [ ${#missing[@]} -eq 0 ] && [ -e "$provider" ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
if [ ${#missing[@]} -gt 0 ]; then
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if [ ! -e "$provider" ]; then
    # OpenSSL 3's pkcs11-provider: in Debian from 13 (trixie), in bookworm-backports for 12.
    if apt-cache show pkcs11-provider 2>/dev/null | grep -q '^Version'; then
        $SUDO apt-get install -y -q --no-install-recommends pkcs11-provider
    else
        . /etc/os-release
        printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            "$VERSION_CODENAME" | $SUDO tee /etc/apt/sources.list.d/keyward-backports.sources >/dev/null
        $SUDO apt-get update -q
        $SUDO apt-get install -y -q --no-install-recommends -t "$VERSION_CODENAME-backports" pkcs11-provider
    fi
fi
