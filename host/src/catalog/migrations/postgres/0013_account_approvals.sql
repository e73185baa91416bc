-- Keyward catalog on PostgreSQL, version 13: account approval policies (see SQLite's
-- migration 13).
ALTER TABLE accounts ADD COLUMN approval_policy TEXT;
ALTER TABLE accounts ADD COLUMN approval_request_expiry BIGINT;
ALTER TABLE approval_requests ALTER COLUMN group_id DROP NOT NULL;
ALTER TABLE approval_requests ADD COLUMN account_policy BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE approval_requests ADD COLUMN decided_at BIGINT;
ALTER TABLE approval_requests ADD CONSTRAINT approval_requests_subject CHECK (group_id IS NOT NULL OR account_policy);
