-- Keyward catalog, version 12: quorum approval. A group's approval policy (DSM's
-- `GroupApprovalPolicy`, JSON of `catalog::approvals::GroupApprovalPolicy`), and approval
-- requests: an operation (method, path, body) a requester asked for, the reviewers who
-- approved it, and, once it ran as the requester, its answer (sealed: it may hold key
-- material or a plaintext).
ALTER TABLE groups ADD COLUMN approval_policy TEXT;

CREATE TABLE approval_requests (
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
    group_id       TEXT NOT NULL,           -- whose policy decides (kept if the group goes)
    status         TEXT NOT NULL CHECK (status IN ('PENDING', 'APPROVED', 'DENIED', 'FAILED')),
    denier_kind    TEXT,
    denier_id      TEXT,
    denial_reason  TEXT,
    result_status  INTEGER,
    result_sealed  BLOB,
    result_viewed  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX approval_requests_account ON approval_requests(account_id, status, created_at);

CREATE TABLE approval_votes (
    request_id     TEXT NOT NULL REFERENCES approval_requests(id) ON DELETE CASCADE,
    principal_kind TEXT NOT NULL,
    principal_id   TEXT NOT NULL,
    at             INTEGER NOT NULL,
    PRIMARY KEY (request_id, principal_id)
);
