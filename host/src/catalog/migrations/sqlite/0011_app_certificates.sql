-- Keyward catalog, version 11: applications that log in with a TLS client certificate
-- (DSM's `Certificate` and `TrustedCa` applications), and sessions bound to the certificate
-- they logged in with.

-- `secret`: the API key (api_key_hash) as before. `certificate`: `certificate` holds the
-- pinned leaf (DER). `trusted_ca`: `certificate` holds the CA (DER), `cert_subject` what the
-- leaf must name (JSON of `auth::certs::TrustSubject`), and revocation comes from `crl_url`
-- (fetched, cached) or `crl` (uploaded DER).
ALTER TABLE apps ADD COLUMN auth_type TEXT NOT NULL DEFAULT 'secret'
    CHECK (auth_type IN ('secret', 'certificate', 'trusted_ca'));
ALTER TABLE apps ADD COLUMN certificate BLOB;
ALTER TABLE apps ADD COLUMN cert_subject TEXT;
ALTER TABLE apps ADD COLUMN crl_url TEXT;
ALTER TABLE apps ADD COLUMN crl BLOB;
-- The pinned or CA certificate's expiry (Unix seconds), for the dashboard and the warnings.
ALTER TABLE apps ADD COLUMN cert_not_after INTEGER;

-- The SHA-256 of the client certificate a session logged in with: every request on the
-- token must present that certificate.
ALTER TABLE sessions ADD COLUMN client_cert_sha256 BLOB;

-- Certificate expiry warnings sent, each once per application, threshold and expiry date.
CREATE TABLE app_cert_notices (
    app_id         TEXT NOT NULL REFERENCES apps(id) ON DELETE CASCADE,
    threshold_days INTEGER NOT NULL,       -- 30 or 7
    not_after      INTEGER NOT NULL,
    sent_at        INTEGER NOT NULL,
    PRIMARY KEY (app_id, threshold_days, not_after)
);
