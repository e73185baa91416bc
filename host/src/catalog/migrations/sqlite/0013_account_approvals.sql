-- Keyward catalog, version 13: quorum approval at the account level. An account's approval
-- policy (DSM's `AccountApprovalPolicy`, JSON of `catalog::approvals::AccountApprovalPolicy`)
-- and how long its requests wait (seconds; NULL: 30 days). A request may now need the
-- account's policy (`account_policy`), a group's (`group_id`), or both (deleting a group
-- that has a policy of its own under an account policy that protects group deletion), so
-- `group_id` may be NULL. SQLite changes a column's constraint only by rebuilding the table;
-- the votes table is rebuilt beside it so that no cascade removes a vote on the way.
-- `decided_at` dates the approval, so that one whose operation never reported back (the
-- daemon carrying it out stopped) is settled as FAILED rather than left APPROVED forever.
ALTER TABLE accounts ADD COLUMN approval_policy TEXT;
ALTER TABLE accounts ADD COLUMN approval_request_expiry INTEGER;

CREATE TABLE approval_requests_v13 (
    id             TEXT PRIMARY KEY,
    account_id     TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    requester_kind TEXT NOT NULL CHECK (requester_kind IN ('user', 'app')),
    requester_id   TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    method         TEXT NOT NULL,
    operation      TEXT NOT NULL,
    body           TEXT,
    description    TEXT,
    group_id       TEXT,                    -- whose policy decides (kept if the group goes)
    account_policy INTEGER NOT NULL DEFAULT 0,
    status         TEXT NOT NULL CHECK (status IN ('PENDING', 'APPROVED', 'DENIED', 'FAILED')),
    denier_kind    TEXT,
    denier_id      TEXT,
    denial_reason  TEXT,
    result_status  INTEGER,
    result_sealed  BLOB,
    result_viewed  INTEGER NOT NULL DEFAULT 0,
    decided_at     INTEGER,
    CHECK (group_id IS NOT NULL OR account_policy)
);
INSERT INTO approval_requests_v13 (id, account_id, requester_kind, requester_id, created_at, expires_at, method,
                                   operation, body, description, group_id, account_policy, status, denier_kind,
                                   denier_id, denial_reason, result_status, result_sealed, result_viewed)
    SELECT id, account_id, requester_kind, requester_id, created_at, expires_at, method, operation, body,
           description, group_id, 0, status, denier_kind, denier_id, denial_reason, result_status, result_sealed,
           result_viewed
    FROM approval_requests;

CREATE TABLE approval_votes_v13 (
    request_id     TEXT NOT NULL REFERENCES approval_requests_v13(id) ON DELETE CASCADE,
    principal_kind TEXT NOT NULL,
    principal_id   TEXT NOT NULL,
    at             INTEGER NOT NULL,
    PRIMARY KEY (request_id, principal_id)
);
INSERT INTO approval_votes_v13 SELECT request_id, principal_kind, principal_id, at FROM approval_votes;

DROP TABLE approval_votes;
DROP TABLE approval_requests;
ALTER TABLE approval_requests_v13 RENAME TO approval_requests;
ALTER TABLE approval_votes_v13 RENAME TO approval_votes;
CREATE INDEX approval_requests_account ON approval_requests(account_id, status, created_at);
