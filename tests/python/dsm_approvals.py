"""DSM's quorum approval flow through Fortanix's own Python client (`sdkms`), unmodified.

Run by `tests/real_clients.rs` with: the daemon's address, the requester's email and
password, two reviewers' emails, their password, and the kid of a key whose group's policy
(2 of the 2 reviewers) protects rotation. The requester's direct rotation is refused with
DSM's message; an approval request approved by both reviewers runs, and its result is read;
a denied request and a withdrawn one do not run.
"""

import json
import sys
import time

import sdkms.v1 as dsm
from sdkms.v1.rest import ApiException

URL, EMAIL, PASSWORD, R1, R2, RPW, KID = sys.argv[1:8]


def step(name):
    print(f"step: {name}", flush=True)


def login(email, password):
    basic = dsm.Configuration()
    basic.host = URL
    basic.username, basic.password = email, password
    auth = dsm.AuthenticationApi(api_client=dsm.ApiClient(configuration=basic)).authorize()
    config = dsm.Configuration()
    config.host = URL
    config.api_key["Authorization"] = auth.access_token
    config.api_key_prefix["Authorization"] = "Bearer"
    return dsm.ApiClient(configuration=config)


step("the protected rotation is refused with DSM's message")
requester = login(EMAIL, PASSWORD)
keys = dsm.SecurityObjectsApi(api_client=requester)
try:
    keys.rotate_security_object(dsm.SobjectRequest(name=keys.get_security_object(KID).name))
    raise AssertionError("a protected rotation ran without approval")
except ApiException as e:
    body = json.loads(e.body)
    assert e.status == 403 and body["message"] == "This operation requires approval", (e.status, e.body)
    assert body["code"] == "ApprovalRequired", body

step("an approval request, approved by both reviewers, runs once")
approvals = dsm.ApprovalRequestsApi(api_client=requester)
request = approvals.create_approval_request(dsm.ApprovalRequestRequest(
    method="POST", operation="/crypto/v1/keys/rekey", body={"kid": KID}, description="rotate it"))
assert str(request.status).endswith("PENDING"), request.status
reviewers = [dsm.ApprovalRequestsApi(api_client=login(r, RPW)) for r in (R1, R2)]
for r in reviewers:
    pending = r.get_approval_requests(status="PENDING")
    assert any(p.request_id == request.request_id for p in pending), pending
    r.approve(request.request_id, body=dsm.ApproveRequest())
for _ in range(50):
    now = approvals.get_approval_request(request.request_id)
    if not str(now.status).endswith("PENDING"):
        break
    time.sleep(0.1)
assert str(now.status).endswith("APPROVED"), now.status
assert {a.user for a in now.approvers} == {u.user for u in now.reviewers}, now
result = approvals.get_result(request.request_id)
assert result.status == 201 and result.body["kid"] != KID, result
assert keys.get_security_object(result.body["kid"]).name == result.body["name"]

step("a denied request and a withdrawn one never run")
denied = approvals.create_approval_request(dsm.ApprovalRequestRequest(
    method="POST", operation="/crypto/v1/keys/rekey", body={"kid": result.body["kid"]}))
reviewers[0].deny(denied.request_id)
assert str(approvals.get_approval_request(denied.request_id).status).endswith("DENIED")
try:
    approvals.get_result(denied.request_id)
    raise AssertionError("a denied request has a result")
except ApiException as e:
    assert e.status == 409, e.status
withdrawn = approvals.create_approval_request(dsm.ApprovalRequestRequest(
    method="POST", operation="/crypto/v1/keys/rekey", body={"kid": result.body["kid"]}))
approvals.delete_approval_request(withdrawn.request_id)
try:
    reviewers[0].approve(withdrawn.request_id, body=dsm.ApproveRequest())
    raise AssertionError("a withdrawn request was approved")
except ApiException as e:
    assert e.status == 404, e.status
assert keys.get_security_object(result.body["kid"]).kid == result.body["kid"]

print("dsm approvals: all steps passed", flush=True)
