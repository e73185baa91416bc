-- Keyward catalog on PostgreSQL, version 11: applications with TLS client certificates and
-- sessions bound to them (see SQLite's migration 11 for why).

ALTER TABLE apps ADD COLUMN auth_type TEXT NOT NULL DEFAULT 'secret'
    CHECK (auth_type IN ('secret', 'certificate', 'trusted_ca'));
ALTER TABLE apps ADD COLUMN certificate BYTEA;
ALTER TABLE apps ADD COLUMN cert_subject TEXT;
ALTER TABLE apps ADD COLUMN crl_url TEXT;
ALTER TABLE apps ADD COLUMN crl BYTEA;
ALTER TABLE apps ADD COLUMN cert_not_after BIGINT;

ALTER TABLE sessions ADD COLUMN client_cert_sha256 BYTEA;

CREATE TABLE app_cert_notices (
    app_id         TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    threshold_days BIGINT NOT NULL,
    not_after      BIGINT NOT NULL,
    sent_at        BIGINT NOT NULL,
    PRIMARY KEY (app_id, threshold_days, not_after)
);
