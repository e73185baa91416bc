-- Keyward catalog on PostgreSQL, version 10: sessions and failed logins (see SQLite's
-- migration 10 for why).

CREATE TABLE sessions (
    token_hash     BYTEA PRIMARY KEY,
    principal_kind TEXT NOT NULL CHECK (principal_kind IN ('user', 'app')),
    principal_id   TEXT NOT NULL,
    principal_name TEXT NOT NULL,
    account_id     TEXT,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL
);
CREATE INDEX sessions_principal ON sessions(principal_id);
CREATE INDEX sessions_expiry ON sessions(expires_at);

CREATE TABLE login_failures (
    scope   TEXT NOT NULL CHECK (scope IN ('name', 'address')),
    subject BYTEA NOT NULL,
    at      BIGINT NOT NULL
);
CREATE INDEX login_failures_subject ON login_failures(scope, subject, at);

CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    detail      TEXT,
    valid_until BIGINT NOT NULL
);
