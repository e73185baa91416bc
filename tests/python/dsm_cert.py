"""DSM's certificate applications through Fortanix's own Python client (`sdkms`).

Run by `tests/real_clients.rs` with the daemon's HTTPS address and a directory holding the
daemon's CA (`server-ca.pem`), a self-signed client certificate (`pinned.pem`, `pinned.key`),
a client CA (`clients-ca.pem`) and a certificate it issued for CN=billing (`billing.pem`,
`billing.key`). An administrator makes a `Certificate` and a `TrustedCa` application with
`AppCredential`; each logs in as DSM documents (HTTP Basic `<app_id>:` over mutual TLS) and
encrypts; a token without its certificate is refused.
"""

import base64
import json
import os
import sys

import sdkms.v1 as dsm
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sdkms.v1.rest import ApiException

URL, DIR = sys.argv[1], sys.argv[2]
CA = os.path.join(DIR, "server-ca.pem")
EMAIL, PASSWORD = "dsm-cert-admin@example.com", "a long enough password 2"


def step(name):
    print(f"step: {name}", flush=True)


def client(configure, cert=None):
    config = dsm.Configuration()
    config.host = URL
    config.ssl_ca_cert = CA
    if cert:
        config.cert_file = os.path.join(DIR, cert + ".pem")
        config.key_file = os.path.join(DIR, cert + ".key")
    configure(config)
    return dsm.ApiClient(configuration=config)


def login(username, password, cert=None):
    basic = client(lambda c: (setattr(c, "username", username), setattr(c, "password", password)), cert)
    auth = dsm.AuthenticationApi(api_client=basic).authorize()
    assert auth.access_token and auth.entity_id, auth
    return auth


def bearer(token, cert=None):
    return client(lambda c: (c.api_key.__setitem__("Authorization", token),
                             c.api_key_prefix.__setitem__("Authorization", "Bearer")), cert)


def der_b64(name):
    with open(os.path.join(DIR, name), "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    return base64.b64encode(cert.public_bytes(Encoding.DER)).decode()


step("administrator, group and key")
anon = client(lambda c: None)
dsm.UsersApi(api_client=anon).create_user(dsm.SignupRequest(user_email=EMAIL, user_password=PASSWORD))
admin = bearer(login(EMAIL, PASSWORD).access_token)
account = dsm.AccountsApi(api_client=admin).get_accounts()[0]
dsm.AuthenticationApi(api_client=admin).select_account(dsm.SelectAccountRequest(acct_id=account.acct_id))
group = dsm.GroupsApi(api_client=admin).create_group(dsm.GroupRequest(name="certificates"))
key = dsm.SecurityObjectsApi(api_client=admin).generate_security_object(dsm.SobjectRequest(
    name="cert-app-key", obj_type=dsm.ObjectType.AES, key_size=256, group_id=group.group_id))
use = [dsm.AppPermissions.ENCRYPT, dsm.AppPermissions.DECRYPT]

step("a Certificate application and a TrustedCa application")
apps = dsm.AppsApi(api_client=admin)
pinned = apps.create_app(dsm.AppRequest(
    name="pinned", add_groups={group.group_id: use}, default_group=group.group_id,
    credential=dsm.AppCredential(certificate=der_b64("pinned.pem"))))
assert str(pinned.auth_type) == "AppAuthType.Certificate", pinned.auth_type
assert pinned.cert_not_after, pinned
trusted = apps.create_app(dsm.AppRequest(
    name="trusted", add_groups={group.group_id: use}, default_group=group.group_id,
    credential=dsm.AppCredential(trustedca=dsm.AppCredentialTrustedca(
        subject=[["CN", "billing"]], ca_certificate=der_b64("clients-ca.pem")))))
assert str(trusted.auth_type) == "AppAuthType.TrustedCa", trusted.auth_type

for app, cert in [(pinned, "pinned"), (trusted, "billing")]:
    step(f"{app.name}: certificate login and encryption")
    auth = login(app.app_id, "", cert)
    assert auth.entity_id == app.app_id, auth
    crypto = dsm.EncryptionAndDecryptionApi(api_client=bearer(auth.access_token, cert))
    plain = bytearray(b"paid in full")
    enc = crypto.encrypt(key.kid, dsm.EncryptRequest(alg=dsm.ObjectType.AES, plain=plain, mode=dsm.CryptMode.GCM))
    dec = crypto.decrypt(key.kid, dsm.DecryptRequest(
        alg=dsm.ObjectType.AES, cipher=enc.cipher, mode=dsm.CryptMode.GCM, iv=enc.iv, tag=enc.tag))
    assert bytes(dec.plain) == bytes(plain), dec

    step(f"{app.name}: the token without its certificate is refused")
    try:
        dsm.EncryptionAndDecryptionApi(api_client=bearer(auth.access_token)).encrypt(
            key.kid, dsm.EncryptRequest(alg=dsm.ObjectType.AES, plain=plain, mode=dsm.CryptMode.GCM))
        raise AssertionError("a token without its certificate was accepted")
    except ApiException as e:
        assert e.status == 401 and json.loads(e.body)["message"], (e.status, e.body)

step("the other application's certificate does not log in")
try:
    login(pinned.app_id, "", "billing")
    raise AssertionError("the wrong certificate logged in")
except ApiException as e:
    assert e.status == 401, e.status

print("dsm certificates: all steps passed", flush=True)
