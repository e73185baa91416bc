-- Keyward catalog, version 10: sessions and failed logins live in the catalog, so that a
-- token issued by one daemon works on every daemon sharing the catalog, a logout or a
-- password change ends sessions everywhere at once, and the login throttle counts failures
-- across daemons. A restart no longer logs everyone out.

-- A session per successful authentication; the token itself is never stored, only its
-- SHA-256. Application sessions read the application's groups from `app_groups` on use.
CREATE TABLE sessions (
    token_hash     BLOB PRIMARY KEY,
    principal_kind TEXT NOT NULL CHECK (principal_kind IN ('user', 'app')),
    principal_id   TEXT NOT NULL,
    principal_name TEXT NOT NULL,         -- the user's email or the application's name
    account_id     TEXT,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL
);
CREATE INDEX sessions_principal ON sessions(principal_id);
CREATE INDEX sessions_expiry ON sessions(expires_at);

-- Failed logins per account name and per source address, within the throttle's window.
-- The name is stored as its SHA-256: people type passwords into the name field.
CREATE TABLE login_failures (
    scope   TEXT NOT NULL CHECK (scope IN ('name', 'address')),
    subject BLOB NOT NULL,
    at      INTEGER NOT NULL
);
CREATE INDEX login_failures_subject ON login_failures(scope, subject, at);

-- Singleton work across daemons (one sync of a group at a time, say): a lease row, taken
-- or renewed by one conditional statement and timed by the database's clock, so that the
-- daemons' clocks do not matter (OpenBao's PostgreSQL lock works the same way). A holder
-- that cannot renew stops its work before the lease runs out.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,    -- the daemon's id
    detail      TEXT,             -- what holds it, e.g. a run id
    valid_until INTEGER NOT NULL  -- Unix milliseconds, by the database's clock
);
