-- Keyward catalog, version 6: an application's API-key secret sealed under the master key,
-- next to its hash, so that its administrators can read the credential again as DSM
-- programs do (`GET /sys/v1/apps/{id}/credential`). Logins still check the hash. Apps made
-- before this version have no sealed secret until their secret is reset.
ALTER TABLE apps ADD COLUMN api_secret_sealed BLOB;
