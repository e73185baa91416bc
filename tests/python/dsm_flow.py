"""A DSM program's day against Keyward, through Fortanix's own Python client (`sdkms`).

Run by `tests/real_clients.rs` with the daemon's address as the only argument. Every step
asserts what the answer says, not only that there was one; the first failure ends the run
with its step named.
"""

import base64
import hashlib
import json
import sys
import time

import sdkms.v1 as dsm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils
from sdkms.v1.rest import ApiException

URL = sys.argv[1]
EMAIL, PASSWORD = "dsm-admin@example.com", "a long enough password 1"


def client(configure):
    config = dsm.Configuration()
    config.host = URL
    configure(config)
    return dsm.ApiClient(configuration=config)


def login_basic(username, password):
    basic = client(lambda c: (setattr(c, "username", username), setattr(c, "password", password)))
    auth = dsm.AuthenticationApi(api_client=basic).authorize()
    assert auth.access_token, auth
    return client(lambda c: (c.api_key.__setitem__("Authorization", auth.access_token),
                             c.api_key_prefix.__setitem__("Authorization", "Bearer")))


def refused(status, call):
    try:
        call()
    except ApiException as e:
        assert e.status == status, f"expected {status}, got {e.status}: {e.body}"
        body = json.loads(e.body)
        assert body.get("message"), e.body
        return body
    raise AssertionError(f"expected {status}, the call succeeded")


def step(name):
    print(f"step: {name}", flush=True)


step("version and health")
anon = client(lambda c: None)
version = dsm.AuthenticationApi(api_client=anon).get_server_version()
assert version.version and version.api_version, version

step("sign-up and login")
user = dsm.UsersApi(api_client=anon).create_user(
    dsm.SignupRequest(user_email=EMAIL, user_password=PASSWORD))
assert user.user_email == EMAIL, user
admin = login_basic(EMAIL, PASSWORD)

step("account")
accounts = dsm.AccountsApi(api_client=admin).get_accounts()
assert len(accounts) == 1, accounts
account = accounts[0]
assert account.acct_id and account.name, account
dsm.AuthenticationApi(api_client=admin).select_account(
    dsm.SelectAccountRequest(acct_id=account.acct_id))
me = [u for u in dsm.UsersApi(api_client=admin).get_users() if u.user_email == EMAIL]
assert len(me) == 1 and dsm.UserAccountFlags.ACCOUNTADMINISTRATOR in me[0].account_role, me

step("group")
groups_api = dsm.GroupsApi(api_client=admin)
group = groups_api.create_group(dsm.GroupRequest(name="dsm-group", description="from sdkms"))
assert group.name == "dsm-group" and group.group_id, group
other = groups_api.create_group(dsm.GroupRequest(name="dsm-other"))
assert {g.group_id for g in groups_api.get_groups()} >= {group.group_id, other.group_id}
assert groups_api.get_group(group.group_id).description == "from sdkms"

step("app with add_groups, and its credential")
apps_api = dsm.AppsApi(api_client=admin)
every = ["ENCRYPT", "DECRYPT", "WRAPKEY", "UNWRAPKEY", "SIGN", "VERIFY", "EXPORT", "MANAGE"]
app = apps_api.create_app(dsm.AppRequest(
    name="dsm-app", description="the program",
    add_groups={group.group_id: [dsm.AppPermissions(p) for p in every],
                other.group_id: [dsm.AppPermissions.SIGN]},
    default_group=group.group_id))
assert app.app_id and app.default_group == group.group_id, app
assert set(app.groups) == {group.group_id, other.group_id}, app.groups
cred = apps_api.get_credential(app.app_id)
assert cred.app_id == app.app_id and cred.credential.secret, cred
narrowed = apps_api.update_app(app.app_id, dsm.AppRequest(
    mod_groups={other.group_id: [dsm.AppPermissions.VERIFY]}, description="narrowed"))
assert narrowed.description == "narrowed", narrowed
assert set(apps_api.get_app(app.app_id).groups) == {group.group_id, other.group_id}

step("app login")
application = login_basic(app.app_id, cred.credential.secret)
keys = dsm.SecurityObjectsApi(api_client=application)
crypto = dsm.EncryptionAndDecryptionApi(api_client=application)
signing = dsm.SignAndVerifyApi(api_client=application)
wrapping = dsm.WrappingAndUnwrappingApi(api_client=application)

step("generate AES, RSA and EC keys")
ops = [dsm.KeyOperations(o) for o in
       ["ENCRYPT", "DECRYPT", "WRAPKEY", "UNWRAPKEY", "EXPORT", "APPMANAGEABLE"]]
aes = keys.generate_security_object(dsm.SobjectRequest(
    name="dsm-aes", obj_type=dsm.ObjectType.AES, key_size=256, key_ops=ops,
    custom_metadata={"owner": "dsm"}))
assert aes.obj_type == dsm.ObjectType.AES and aes.key_size == 256, aes
assert aes.group_id == group.group_id and aes.state == dsm.KeyObjectState.ACTIVE, aes
rsa = keys.generate_security_object(dsm.SobjectRequest(
    name="dsm-rsa", obj_type=dsm.ObjectType.RSA, key_size=2048,
    key_ops=[dsm.KeyOperations(o) for o in
             ["ENCRYPT", "DECRYPT", "SIGN", "VERIFY", "WRAPKEY", "UNWRAPKEY", "APPMANAGEABLE"]]))
assert rsa.key_size == 2048 and rsa.pub_key, rsa
ecdsa = keys.generate_security_object(dsm.SobjectRequest(
    name="dsm-ec", obj_type=dsm.ObjectType.EC, elliptic_curve=dsm.EllipticCurve.NISTP256,
    key_ops=[dsm.KeyOperations.SIGN, dsm.KeyOperations.VERIFY, dsm.KeyOperations.APPMANAGEABLE]))
assert ecdsa.elliptic_curve == dsm.EllipticCurve.NISTP256 and ecdsa.pub_key, ecdsa

step("list and get")
listed = {k.kid for k in keys.get_security_objects()}
assert {aes.kid, rsa.kid, ecdsa.kid} <= listed, listed
assert [k.kid for k in keys.get_security_objects(name="dsm-aes")] == [aes.kid]
got = keys.get_security_object(aes.kid)
assert got.name == "dsm-aes" and got.custom_metadata == {"owner": "dsm"}, got
assert keys.get_security_object_ex(dsm.SobjectDescriptor(name="dsm-rsa")).kid == rsa.kid

step("update")
updated = keys.update_security_object(aes.kid, dsm.SobjectRequest(
    description="updated by sdkms", custom_metadata={"owner": "dsm", "env": "test"}))
assert updated.description == "updated by sdkms", updated
assert keys.get_security_object(aes.kid).custom_metadata == {"owner": "dsm", "env": "test"}

step("AES-GCM encrypt and decrypt")
plain = bytearray(b"attack at dawn")
enc = crypto.encrypt(aes.kid, dsm.EncryptRequest(
    alg=dsm.ObjectType.AES, plain=plain, mode=dsm.CryptMode.GCM, ad=bytearray(b"hdr")))
assert enc.iv and enc.tag and bytes(enc.cipher) != bytes(plain), enc
dec = crypto.decrypt(aes.kid, dsm.DecryptRequest(
    alg=dsm.ObjectType.AES, cipher=enc.cipher, mode=dsm.CryptMode.GCM, iv=enc.iv,
    ad=bytearray(b"hdr"), tag=enc.tag))
assert bytes(dec.plain) == bytes(plain), dec
refused(400, lambda: crypto.decrypt(aes.kid, dsm.DecryptRequest(
    alg=dsm.ObjectType.AES, cipher=enc.cipher, mode=dsm.CryptMode.GCM, iv=enc.iv,
    ad=bytearray(b"other"), tag=enc.tag)))
ex = crypto.encrypt_ex(dsm.EncryptRequestEx(
    key=dsm.SobjectDescriptor(name="dsm-aes"), alg=dsm.ObjectType.AES, plain=plain,
    mode=dsm.CryptMode.GCM))
assert bytes(crypto.decrypt_ex(dsm.DecryptRequestEx(
    key=dsm.SobjectDescriptor(kid=aes.kid), alg=dsm.ObjectType.AES, cipher=ex.cipher,
    mode=dsm.CryptMode.GCM, iv=ex.iv, tag=ex.tag)).plain) == bytes(plain)

step("RSA-OAEP, both modes, checked against the public key")
public = serialization.load_der_public_key(bytes(rsa.pub_key))
for mode, digest in [(dsm.CryptMode.OAEP_MGF1_SHA1, hashes.SHA1()),
                     (dsm.CryptMode.OAEP_MGF1_SHA256, hashes.SHA256())]:
    enc = crypto.encrypt(rsa.kid, dsm.EncryptRequest(alg=dsm.ObjectType.RSA, plain=plain, mode=mode))
    assert len(enc.cipher) == 256, enc
    dec = crypto.decrypt(rsa.kid, dsm.DecryptRequest(alg=dsm.ObjectType.RSA, cipher=enc.cipher, mode=mode))
    assert bytes(dec.plain) == bytes(plain), mode
    # Encrypted locally with the published key, decrypted by Keyward.
    local = public.encrypt(bytes(plain), padding.OAEP(
        mgf=padding.MGF1(algorithm=digest), algorithm=digest, label=None))
    back = crypto.decrypt(rsa.kid, dsm.DecryptRequest(
        alg=dsm.ObjectType.RSA, cipher=bytearray(local), mode=mode))
    assert bytes(back.plain) == bytes(plain), mode

step("sign and verify: RSA and ECDSA (DER)")
digest = bytearray(hashlib.sha256(b"the message").digest())
sig = signing.sign(rsa.kid, dsm.SignRequest(hash_alg=dsm.DigestAlgorithm.SHA256, hash=digest))
public.verify(bytes(sig.signature), bytes(digest), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
assert signing.verify(rsa.kid, dsm.VerifyRequest(
    hash_alg=dsm.DigestAlgorithm.SHA256, hash=digest, signature=sig.signature)).result is True
sig = signing.sign(ecdsa.kid, dsm.SignRequest(hash_alg=dsm.DigestAlgorithm.SHA256, hash=digest))
assert bytes(sig.signature)[0] == 0x30, "a DER SEQUENCE"
ec_public = serialization.load_der_public_key(bytes(ecdsa.pub_key))
ec_public.verify(bytes(sig.signature), bytes(digest), ec.ECDSA(utils.Prehashed(hashes.SHA256())))
assert signing.verify(ecdsa.kid, dsm.VerifyRequest(
    hash_alg=dsm.DigestAlgorithm.SHA256, hash=digest, signature=sig.signature)).result is True
other_digest = bytearray(hashlib.sha256(b"another message").digest())
assert signing.verify(ecdsa.kid, dsm.VerifyRequest(
    hash_alg=dsm.DigestAlgorithm.SHA256, hash=other_digest, signature=sig.signature)).result is False

step("export both ways")
by_id = keys.get_security_object_value(aes.kid)
by_descriptor = keys.get_security_object_value_ex(dsm.SobjectDescriptor(kid=aes.kid))
assert len(by_id.value) == 32 and bytes(by_id.value) == bytes(by_descriptor.value)
refused(403, lambda: keys.get_security_object_value(rsa.kid))  # no EXPORT

step("wrap and unwrap")
kek = keys.generate_security_object(dsm.SobjectRequest(
    name="dsm-kek", obj_type=dsm.ObjectType.AES, key_size=256,
    key_ops=[dsm.KeyOperations.WRAPKEY, dsm.KeyOperations.UNWRAPKEY]))
wrapped = wrapping.wrap_key(kek.kid, dsm.WrapKeyRequest(
    alg=dsm.ObjectType.AES, kid=aes.kid, mode=dsm.CryptMode.KW))
assert len(wrapped.wrapped_key) == 40, wrapped
unwrapped = wrapping.unwrap_key(kek.kid, dsm.UnwrapKeyRequest(
    alg=dsm.ObjectType.AES, obj_type=dsm.ObjectType.AES, wrapped_key=wrapped.wrapped_key,
    mode=dsm.CryptMode.KW, name="dsm-unwrapped",
    key_ops=[dsm.KeyOperations.ENCRYPT, dsm.KeyOperations.DECRYPT, dsm.KeyOperations.EXPORT,
             dsm.KeyOperations.APPMANAGEABLE]))
assert unwrapped.kid and unwrapped.name == "dsm-unwrapped", unwrapped
assert bytes(keys.get_security_object_value(unwrapped.kid).value) == bytes(by_id.value)

step("import")
material = bytearray(bytes(range(32)))
imported = keys.import_security_object(dsm.SobjectRequest(
    name="dsm-imported", obj_type=dsm.ObjectType.AES, value=material,
    key_ops=[dsm.KeyOperations.ENCRYPT, dsm.KeyOperations.DECRYPT, dsm.KeyOperations.EXPORT,
             dsm.KeyOperations.APPMANAGEABLE]))
assert imported.key_size == 256 and imported.origin == dsm.ObjectOrigin.EXTERNAL, imported
assert bytes(keys.get_security_object_value(imported.kid).value) == bytes(material)

step("deactivate (KMIP revoke for cessation of operation), and no way back")
keys.revoke_security_object(imported.kid, dsm.RevocationReason(
    code=dsm.RevocationReasonCode.CESSATIONOFOPERATION, message="retired"))
deactivated = keys.get_security_object(imported.kid)
assert deactivated.state == dsm.KeyObjectState.DEACTIVATED, deactivated
refused(409, lambda: keys.activate_security_object(imported.kid))
refused(403, lambda: crypto.encrypt(imported.kid, dsm.EncryptRequest(
    alg=dsm.ObjectType.AES, plain=plain, mode=dsm.CryptMode.GCM)))

step("delete: an active key only after it is deactivated")
refused(409, lambda: keys.delete_security_object(unwrapped.kid))
keys.delete_security_object(imported.kid)
refused(404, lambda: keys.get_security_object(imported.kid))
assert imported.kid not in {k.kid for k in keys.get_security_objects()}

step("refusals: 401 and 403")
refused(401, lambda: dsm.AuthenticationApi(api_client=client(
    lambda c: (setattr(c, "username", EMAIL), setattr(c, "password", "wrong")))).authorize())
refused(401, lambda: dsm.SecurityObjectsApi(api_client=anon).get_security_objects())
refused(403, lambda: dsm.LogsApi(api_client=application).get_audit_logs())
refused(403, lambda: dsm.EncryptionAndDecryptionApi(api_client=admin).encrypt(
    aes.kid, dsm.EncryptRequest(alg=dsm.ObjectType.AES, plain=plain, mode=dsm.CryptMode.GCM)))
# Only VERIFY is left to the app in the other group.
theirs = dsm.SecurityObjectsApi(api_client=admin).generate_security_object(dsm.SobjectRequest(
    name="other-ec", obj_type=dsm.ObjectType.EC, elliptic_curve=dsm.EllipticCurve.NISTP256,
    group_id=other.group_id, key_ops=[dsm.KeyOperations.SIGN, dsm.KeyOperations.VERIFY]))
refused(403, lambda: signing.sign(theirs.kid, dsm.SignRequest(
    hash_alg=dsm.DigestAlgorithm.SHA256, hash=digest)))

step("the audit log, with filters")
logs_api = dsm.LogsApi(api_client=admin)
raw = logs_api.get_audit_logs(size=1000, _preload_content=False)
hits = json.loads(raw.data)["hits"]
entries = [h["_source"] for h in hits]
assert any(e["action_type"] == "CRYPTOOPERATION" and e["object_id"] == aes.kid
           and e["group_ids"] == [group.group_id] for e in entries)
assert all(e["severity"] in ("INFO", "WARNING", "ERROR", "CRITICAL") for e in entries)
auth = json.loads(logs_api.get_audit_logs(action_type="AUTH", _preload_content=False).data)["hits"]
assert auth and all(h["_source"]["action_type"] == "AUTH" for h in auth)
by_app = json.loads(logs_api.get_audit_logs(
    actor_id=app.app_id, object_id=aes.kid, size=1000, _preload_content=False).data)["hits"]
assert by_app and all(h["_source"]["actor_id"] == app.app_id for h in by_app)
page = json.loads(logs_api.get_audit_logs(size=2, _from=1, _preload_content=False).data)["hits"]
assert [h["_id"] for h in page] == [h["_id"] for h in hits[1:3]], page
warned = json.loads(logs_api.get_audit_logs(severity="WARNING", size=1000, _preload_content=False).data)["hits"]
assert warned and all(h["_source"]["severity"] == "WARNING" for h in warned)
future = int(time.time()) + 3600
assert json.loads(logs_api.get_audit_logs(
    range_from=future, _preload_content=False).data)["hits"] == []

print("dsm flow: all steps passed")
