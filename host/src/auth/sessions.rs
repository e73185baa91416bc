//! Sessions: a bearer token per successful authentication, stored in the catalog (as its
//! SHA-256), so that every daemon sharing the catalog knows it, a restart keeps it, and a
//! logout, a password change or a deleted application ends it everywhere at once. A session
//! expires after a period of inactivity unless refreshed.
//!
//! Each request reads its session. On SQLite (one daemon) the daemon caches them, with the
//! application's groups, and every change forgets the cached entries. On PostgreSQL every
//! request reads its session from the catalog, so that a logout on one daemon ends the
//! session on every other at once, not a notification later.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::cache::{Cache, Caches};
use crate::catalog::apps::{self, AppGroups};
use crate::catalog::sessions::{self as stored, SessionRow};
use crate::catalog::{self, Catalog, Conn};
use crate::time::Clock;

use super::certs::Thumbprint;

/// Who a session belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    User { user_id: String, email: String },
    App { app_id: String, name: String },
}

impl Principal {
    pub fn kind(&self) -> &'static str {
        match self {
            Principal::User { .. } => "user",
            Principal::App { .. } => "app",
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Principal::User { user_id, .. } => user_id,
            Principal::App { app_id, .. } => app_id,
        }
    }

    fn name(&self) -> &str {
        match self {
            Principal::User { email, .. } => email,
            Principal::App { name, .. } => name,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Session {
    pub principal: Principal,
    /// The account the session acts in (a user selects one of theirs).
    pub account_id: Option<String>,
    /// For applications: the groups they belong to, as the catalog has them now.
    pub app_groups: Arc<AppGroups>,
    pub expires_at: i64,
    /// The client certificate (its SHA-256) every request on this session must present.
    pub bound_to: Option<Thumbprint>,
}

pub struct Sessions {
    catalog: Catalog,
    clock: Clock,
    pub lifetime_secs: i64,
    /// Live sessions by their token hash, in base64 (SQLite only, see the module doc).
    cache: Option<Cache<Session>>,
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn cache_key(hash: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(hash)
}

impl Sessions {
    pub fn new(catalog: Catalog, clock: Clock, lifetime_secs: i64, caches: &Caches) -> Sessions {
        let cached = catalog.backend() == catalog::Backend::Sqlite;
        Sessions {
            catalog,
            clock,
            lifetime_secs,
            cache: cached.then(|| caches.cache("sessions")),
        }
    }

    /// Starts a session; returns its bearer token. A session `bound_to` a client
    /// certificate is refused on any request that does not present it.
    pub async fn create(
        &self,
        principal: Principal,
        account_id: Option<String>,
        bound_to: Option<Thumbprint>,
    ) -> catalog::Result<(String, Session)> {
        let token = URL_SAFE_NO_PAD.encode(keyward_crypto::random_bytes(32));
        let now = self.clock.now();
        let row = SessionRow {
            token_hash: hash(&token),
            principal_kind: principal.kind().to_string(),
            principal_id: principal.id().to_string(),
            principal_name: principal.name().to_string(),
            account_id,
            created_at: now,
            expires_at: now + self.lifetime_secs,
            client_cert_sha256: bound_to.map(|t| t.to_vec()),
        };
        let mut tx = self.catalog.begin().await?;
        // Expired sessions go when new ones come, so the table does not grow without bound.
        stored::purge(&mut tx, now, now - super::throttle::LONGEST_WINDOW_SECS).await?;
        stored::insert(&mut tx, &row).await?;
        tx.commit().await?;
        let mut c = self.catalog.conn().await?;
        let session = session_of(&mut c, row).await?;
        Ok((token, session))
    }

    /// The live session of `token`.
    pub async fn get(&self, token: &str) -> catalog::Result<Option<Session>> {
        let hash = hash(token);
        let now = self.clock.now();
        let load = async {
            let mut c = self.catalog.conn().await?;
            match stored::live(&mut c, &hash, now).await? {
                Some(row) => Ok::<_, catalog::CatalogError>(Some(session_of(&mut c, row).await?)),
                None => Ok(None),
            }
        };
        let session = match &self.cache {
            Some(cache) => cache
                .get_or_load(&cache_key(&hash), load)
                .await?
                .map(|s| s.as_ref().clone()),
            None => load.await?,
        };
        Ok(session.filter(|s| s.expires_at > now))
    }

    /// Extends a live session by the lifetime.
    pub async fn refresh(&self, token: &str) -> catalog::Result<Option<Session>> {
        let now = self.clock.now();
        let mut c = self.catalog.conn().await?;
        let hash = hash(token);
        if !stored::extend(&mut c, &hash, now, now + self.lifetime_secs).await? {
            return Ok(None);
        }
        drop(c);
        self.forget(&hash);
        self.get(token).await
    }

    pub async fn select_account(
        &self,
        token: &str,
        account: &str,
    ) -> catalog::Result<Option<Session>> {
        let mut c = self.catalog.conn().await?;
        let hash = hash(token);
        if !stored::set_account(&mut c, &hash, self.clock.now(), account).await? {
            return Ok(None);
        }
        drop(c);
        self.forget(&hash);
        self.get(token).await
    }

    pub async fn terminate(&self, token: &str) -> catalog::Result<bool> {
        let mut c = self.catalog.conn().await?;
        let hash = hash(token);
        let ended = stored::delete(&mut c, &hash).await?;
        self.forget(&hash);
        Ok(ended)
    }

    /// Ends every session of a principal (password change, API key reset, removal), in the
    /// transaction of that change; call [`Sessions::changed`] after its commit.
    pub async fn end_all_of(c: &mut Conn, principal_id: &str) -> catalog::Result<()> {
        stored::delete_of(c, principal_id).await?;
        Ok(())
    }

    /// Forgets every cached session, here and on the other daemons: after a commit that
    /// ended sessions or changed what they carry (an application's groups).
    pub fn changed(&self) {
        if let Some(cache) = &self.cache {
            cache.forget_all();
        }
    }

    fn forget(&self, hash: &[u8]) {
        if let Some(cache) = &self.cache {
            cache.forget(&cache_key(hash));
        }
    }
}

async fn session_of(c: &mut Conn, row: SessionRow) -> catalog::Result<Session> {
    let (principal, app_groups) = match row.principal_kind.as_str() {
        "app" => {
            let groups = apps::groups_of(c, &row.principal_id).await?;
            (
                Principal::App {
                    app_id: row.principal_id,
                    name: row.principal_name,
                },
                groups,
            )
        }
        _ => (
            Principal::User {
                user_id: row.principal_id,
                email: row.principal_name,
            },
            AppGroups::new(),
        ),
    };
    let bound_to = match row.client_cert_sha256 {
        Some(b) => Some(Thumbprint::try_from(b.as_slice()).map_err(|_| {
            catalog::CatalogError::Corrupt("a session's certificate hash is not 32 bytes".into())
        })?),
        None => None,
    };
    Ok(Session {
        principal,
        account_id: row.account_id,
        app_groups: Arc::new(app_groups),
        expires_at: row.expires_at,
        bound_to,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_expire_refresh_and_end() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(
            &dir.path().join("catalog.db"),
            catalog::MasterKey::generate(),
        )
        .await
        .unwrap();
        let clock = Clock::system();
        let caches = Caches::new(clock.clone(), 30, "test");
        let s = Sessions::new(catalog.clone(), clock.clone(), 600, &caches);
        let p = Principal::User {
            user_id: "u".into(),
            email: "u@x".into(),
        };
        let (t, _) = s.create(p.clone(), None, None).await.unwrap();
        assert!(s.get(&t).await.unwrap().is_some());
        clock.advance(500);
        assert!(s.refresh(&t).await.unwrap().is_some());
        clock.advance(500);
        assert!(s.get(&t).await.unwrap().is_some(), "refreshed");
        clock.advance(601);
        assert!(s.get(&t).await.unwrap().is_none(), "expired");
        assert!(s.refresh(&t).await.unwrap().is_none(), "expired for good");
        let (t2, _) = s.create(p, None, None).await.unwrap();
        let mut tx = catalog.begin().await.unwrap();
        Sessions::end_all_of(&mut tx, "u").await.unwrap();
        tx.commit().await.unwrap();
        s.changed();
        assert!(s.get(&t2).await.unwrap().is_none());
        assert!(!s.terminate(&t2).await.unwrap());
    }
}
