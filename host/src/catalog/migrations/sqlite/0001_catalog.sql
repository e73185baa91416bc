-- Keyward catalog, version 1. Times are Unix seconds (UTC). Ids are UUIDs as text.
-- Secrets (key material, client secrets, private keys, escrow blobs) are stored sealed
-- (AES-256-GCM under the master key); passwords as argon2 hashes; API keys as SHA-256 hashes.

CREATE TABLE catalog_meta (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

CREATE TABLE accounts (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    description   TEXT,
    created_at    INTEGER NOT NULL,
    created_by    TEXT,
    crypto_policy TEXT            -- JSON, for the crypto-policy plugin
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    first_name    TEXT,
    last_name     TEXT,
    created_at    INTEGER NOT NULL,
    last_login    INTEGER
);

CREATE TABLE account_members (
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role       TEXT NOT NULL CHECK (role IN ('administrator', 'member', 'auditor')),
    added_at   INTEGER NOT NULL,
    PRIMARY KEY (account_id, user_id)
);

CREATE TABLE groups (
    id                  TEXT PRIMARY KEY,
    account_id          TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name                TEXT NOT NULL,
    description         TEXT,
    created_at          INTEGER NOT NULL,
    created_by          TEXT NOT NULL,
    crypto_policy       TEXT,     -- JSON for crypto-policy
    key_metadata_policy TEXT,     -- JSON for key-metadata-policy
    custom_policies     TEXT NOT NULL DEFAULT '[]',  -- JSON [{"plugin", "config"}]
    hmg_kind            TEXT,     -- external KMS link kind, e.g. 'AzureManagedHsm'
    hmg_config          TEXT,     -- JSON, non-secret link settings
    hmg_secrets         BLOB,     -- sealed JSON: client secret, client private key
    UNIQUE (account_id, name)
);

CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    user_id  TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role     TEXT NOT NULL CHECK (role IN ('administrator', 'auditor')),
    PRIMARY KEY (group_id, user_id)
);

CREATE TABLE apps (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    description   TEXT,
    created_at    INTEGER NOT NULL,
    created_by    TEXT NOT NULL,
    api_key_hash  BLOB NOT NULL,
    enabled       INTEGER NOT NULL DEFAULT 1,
    default_group TEXT REFERENCES groups(id) ON DELETE SET NULL,
    UNIQUE (account_id, name)
);

CREATE TABLE app_groups (
    app_id   TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    group_id TEXT NOT NULL REFERENCES groups(id) ON DELETE CASCADE,
    PRIMARY KEY (app_id, group_id)
);

CREATE TABLE sobjects (
    kid               TEXT PRIMARY KEY,
    account_id        TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    group_id          TEXT NOT NULL REFERENCES groups(id),
    name              TEXT NOT NULL,
    description       TEXT,
    obj_type          TEXT NOT NULL CHECK (obj_type IN ('AES', 'RSA', 'EC')),
    key_size          INTEGER,
    elliptic_curve    TEXT,
    key_ops           TEXT NOT NULL,          -- JSON array of DSM operation names
    enabled           INTEGER NOT NULL,
    activation_date   INTEGER,
    deactivation_date INTEGER,
    compromise_date   INTEGER,
    destruction_date  INTEGER,
    revocation_reason TEXT,
    created_at        INTEGER NOT NULL,
    lastused_at       INTEGER,
    creator_kind      TEXT NOT NULL CHECK (creator_kind IN ('user', 'app', 'system')),
    creator_id        TEXT NOT NULL,
    origin            TEXT NOT NULL,          -- 'Keyward' (generated) or 'External'
    material          BLOB,                   -- sealed PKCS#8 / raw AES; NULL for virtual or destroyed keys
    pub_key           BLOB,                   -- SubjectPublicKeyInfo DER, for RSA and EC
    kcv               TEXT,
    external          TEXT,                   -- JSON: where a virtual key lives
    UNIQUE (account_id, name)
);
CREATE INDEX sobjects_group ON sobjects(group_id);

CREATE TABLE sobject_tags (
    kid   TEXT NOT NULL REFERENCES sobjects(kid) ON DELETE CASCADE,
    name  TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (kid, name)
);

CREATE TABLE key_links (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT NOT NULL CHECK (kind IN ('copy', 'replacement')),
    source_kid   TEXT NOT NULL REFERENCES sobjects(kid) ON DELETE CASCADE,
    target_kid   TEXT NOT NULL REFERENCES sobjects(kid) ON DELETE CASCADE,
    target_group TEXT,
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX key_links_source ON key_links(source_kid);
CREATE INDEX key_links_target ON key_links(target_kid);

CREATE TABLE escrow_blobs (
    kid        TEXT PRIMARY KEY REFERENCES sobjects(kid) ON DELETE CASCADE,
    blob       BLOB NOT NULL,                 -- sealed provider backup (all versions)
    created_at INTEGER NOT NULL
);

CREATE TABLE rotation_policies (
    kid           TEXT PRIMARY KEY REFERENCES sobjects(kid) ON DELETE CASCADE,
    policy        TEXT NOT NULL,              -- JSON
    next_rotation INTEGER
);

CREATE TABLE workflow_runs (
    id          TEXT PRIMARY KEY,
    account_id  TEXT REFERENCES accounts(id) ON DELETE CASCADE,
    workflow    TEXT NOT NULL,
    trigger     TEXT NOT NULL,
    principal   TEXT,
    inputs      TEXT,                         -- JSON, secrets removed
    status      TEXT NOT NULL,
    log         TEXT NOT NULL DEFAULT '[]',   -- JSON step log
    started_at  INTEGER NOT NULL,
    finished_at INTEGER
);

CREATE TABLE audit_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id TEXT,
    at         INTEGER NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_id   TEXT NOT NULL,
    action     TEXT NOT NULL,
    object_kind TEXT,
    object_id  TEXT,
    outcome    TEXT NOT NULL,
    message    TEXT,
    details    TEXT                           -- JSON, never secret
);
CREATE INDEX audit_account_time ON audit_events(account_id, at);
