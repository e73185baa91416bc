//! Sessions: a bearer token per successful authentication, kept in memory (hashed), expiring
//! after a period of inactivity unless refreshed. A restart ends every session; clients
//! authenticate again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::catalog::apps::AppGroups;
use crate::time::Clock;

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
}

#[derive(Debug, Clone)]
pub struct Session {
    pub principal: Principal,
    /// The account the session acts in (a user selects one of theirs).
    pub account_id: Option<String>,
    /// For applications: the groups they belong to (kept current when the app changes).
    pub app_groups: Arc<AppGroups>,
    pub expires_at: i64,
}

#[derive(Clone)]
pub struct Sessions {
    inner: Arc<Mutex<HashMap<[u8; 32], Session>>>,
    clock: Clock,
    pub lifetime_secs: i64,
}

fn key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Sessions {
    pub fn new(clock: Clock, lifetime_secs: i64) -> Sessions {
        Sessions {
            inner: Default::default(),
            clock,
            lifetime_secs,
        }
    }

    /// Starts a session; returns its bearer token.
    pub fn create(
        &self,
        principal: Principal,
        account_id: Option<String>,
        app_groups: AppGroups,
    ) -> (String, Session) {
        let token = URL_SAFE_NO_PAD.encode(keyward_crypto::random_bytes(32));
        let session = Session {
            principal,
            account_id,
            app_groups: Arc::new(app_groups),
            expires_at: self.clock.now() + self.lifetime_secs,
        };
        let mut map = self.inner.lock().unwrap();
        let now = self.clock.now();
        // Expired sessions go when new ones come, so the map does not grow without bound.
        if map.len() > 1024 {
            map.retain(|_, s| s.expires_at > now);
        }
        map.insert(key(&token), session.clone());
        (token, session)
    }

    /// The live session of `token`.
    pub fn get(&self, token: &str) -> Option<Session> {
        let map = self.inner.lock().unwrap();
        map.get(&key(token))
            .filter(|s| s.expires_at > self.clock.now())
            .cloned()
    }

    pub fn refresh(&self, token: &str) -> Option<Session> {
        let mut map = self.inner.lock().unwrap();
        let now = self.clock.now();
        let s = map.get_mut(&key(token)).filter(|s| s.expires_at > now)?;
        s.expires_at = now + self.lifetime_secs;
        Some(s.clone())
    }

    pub fn select_account(&self, token: &str, account: &str) -> Option<Session> {
        let mut map = self.inner.lock().unwrap();
        let s = map.get_mut(&key(token))?;
        s.account_id = Some(account.to_string());
        Some(s.clone())
    }

    pub fn terminate(&self, token: &str) -> bool {
        self.inner.lock().unwrap().remove(&key(token)).is_some()
    }

    /// Ends every session of a principal (password change, API key reset, removal).
    pub fn end_all_of(&self, principal_id: &str) {
        self.inner
            .lock()
            .unwrap()
            .retain(|_, s| s.principal.id() != principal_id);
    }

    /// Keeps the group list of an application's sessions current.
    pub fn update_app_groups(&self, app_id: &str, groups: &AppGroups) {
        let groups = Arc::new(groups.clone());
        for s in self.inner.lock().unwrap().values_mut() {
            if s.principal.id() == app_id {
                s.app_groups = groups.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_refresh_and_end() {
        let clock = Clock::system();
        let s = Sessions::new(clock.clone(), 600);
        let p = Principal::User {
            user_id: "u".into(),
            email: "u@x".into(),
        };
        let (t, _) = s.create(p, None, Default::default());
        assert!(s.get(&t).is_some());
        clock.advance(500);
        assert!(s.refresh(&t).is_some());
        clock.advance(500);
        assert!(s.get(&t).is_some(), "refreshed");
        clock.advance(601);
        assert!(s.get(&t).is_none(), "expired");
        let (t2, _) = s.create(
            Principal::User {
                user_id: "u".into(),
                email: "u@x".into(),
            },
            None,
            Default::default(),
        );
        s.end_all_of("u");
        assert!(s.get(&t2).is_none());
    }
}
