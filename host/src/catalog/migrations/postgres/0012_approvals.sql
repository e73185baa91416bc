-- Keyward catalog on PostgreSQL, version 12: quorum approval (see SQLite's migration 12).
ALTER TABLE groups ADD COLUMN approval_policy TEXT;

CREATE TABLE approval_requests (
    id             TEXT PRIMARY KEY,
    account_id     TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    requester_kind TEXT NOT NULL CHECK (requester_kind IN ('user', 'app')),
    requester_id   TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    method         TEXT NOT NULL,
    operation      TEXT NOT NULL,
    body           TEXT,
    description    TEXT,
    group_id       TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('PENDING', 'APPROVED', 'DENIED', 'FAILED')),
    denier_kind    TEXT,
    denier_id      TEXT,
    denial_reason  TEXT,
    result_status  BIGINT,
    result_sealed  BYTEA,
    result_viewed  BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX approval_requests_account ON approval_requests(account_id, status, created_at);

CREATE TABLE approval_votes (
    request_id     TEXT NOT NULL REFERENCES approval_requests(id) ON DELETE CASCADE,
    principal_kind TEXT NOT NULL,
    principal_id   TEXT NOT NULL,
    at             BIGINT NOT NULL,
    PRIMARY KEY (request_id, principal_id)
);
