//! What every handler shares: the catalog, the plugin runtime, sessions, the clock, the audit
//! writer, and a cache of what the cryptographic hot path reads (keys with their unsealed
//! material, groups, accounts), dropped whenever the catalog entry changes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use crate::audit::Auditor;
use crate::auth::Sessions;
use crate::catalog::Catalog;
use crate::catalog::accounts::{self, Account};
use crate::catalog::groups::{self, Group};
use crate::catalog::sobjects::{self, SObject};
use crate::crypto::Material;
use crate::kms::Kms;
use crate::plugins::PluginRuntime;
use crate::time::Clock;
use crate::workflows::{Services, WorkflowLimits, Workflows};

use super::ApiError;

pub struct AppState {
    pub catalog: Catalog,
    pub plugins: PluginRuntime,
    pub kms: Kms,
    pub workflows: Arc<Workflows>,
    pub sessions: Sessions,
    pub clock: Clock,
    pub audit: Auditor,
    cache: Arc<Cache>,
}

/// A key ready for use: its metadata (without the sealed material) and the opened material.
pub struct UsableKey {
    pub object: SObject,
    pub material: Option<Arc<Material>>,
}

#[derive(Default)]
struct Cache {
    keys: RwLock<HashMap<String, Arc<UsableKey>>>,
    groups: RwLock<HashMap<String, Arc<Group>>>,
    accounts: RwLock<HashMap<String, Arc<Account>>>,
}

impl AppState {
    pub fn new(
        catalog: Catalog,
        plugins: PluginRuntime,
        clock: Clock,
        session_lifetime_secs: i64,
        workflow_dir: Option<PathBuf>,
        workflow_limits: WorkflowLimits,
    ) -> AppState {
        let audit = Auditor::start(catalog.clone());
        let cache = Arc::new(Cache::default());
        let kms = Kms::new(plugins.clone());
        let forget = cache.clone();
        let workflows = Workflows::new(
            Services {
                catalog: catalog.clone(),
                plugins: plugins.clone(),
                kms: kms.clone(),
                clock: clock.clone(),
                audit: audit.clone(),
                forget_key: Arc::new(move |kid| {
                    forget.keys.write().unwrap().remove(kid);
                }),
            },
            workflow_dir,
            workflow_limits,
        );
        AppState {
            sessions: Sessions::new(clock.clone(), session_lifetime_secs),
            catalog,
            plugins,
            kms,
            workflows,
            clock,
            audit,
            cache,
        }
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// A key with its material opened, from the cache or the catalog.
    pub async fn usable_key(&self, kid: &str) -> Result<Option<Arc<UsableKey>>, ApiError> {
        if let Some(k) = self.cache.keys.read().unwrap().get(kid) {
            return Ok(Some(k.clone()));
        }
        let mut conn = self.catalog.conn().await?;
        let Some(mut object) = sobjects::get(&mut conn, kid).await? else {
            return Ok(None);
        };
        let material = match object.material.take() {
            Some(sealed) => {
                let der = self
                    .catalog
                    .open_sealed(&sobjects::material_context(kid), &sealed)?;
                let kty = match object.obj_type {
                    sobjects::ObjType::Aes => keyward_crypto::Kty::Oct,
                    sobjects::ObjType::Rsa => keyward_crypto::Kty::Rsa,
                    sobjects::ObjType::Ec => keyward_crypto::Kty::Ec,
                };
                let m = Material::from_private_der(kty, &der)
                    .map_err(|e| ApiError::Internal(format!("stored material of {kid}: {e}")))?;
                Some(Arc::new(m))
            }
            None => None,
        };
        let key = Arc::new(UsableKey { object, material });
        self.cache
            .keys
            .write()
            .unwrap()
            .insert(kid.to_string(), key.clone());
        Ok(Some(key))
    }

    pub fn forget_key(&self, kid: &str) {
        self.cache.keys.write().unwrap().remove(kid);
    }

    pub async fn group(&self, id: &str) -> Result<Option<Arc<Group>>, ApiError> {
        if let Some(g) = self.cache.groups.read().unwrap().get(id) {
            return Ok(Some(g.clone()));
        }
        let mut conn = self.catalog.conn().await?;
        let Some(g) = groups::get(&mut conn, id).await? else {
            return Ok(None);
        };
        let g = Arc::new(g);
        self.cache
            .groups
            .write()
            .unwrap()
            .insert(id.to_string(), g.clone());
        Ok(Some(g))
    }

    pub fn forget_group(&self, id: &str) {
        self.cache.groups.write().unwrap().remove(id);
    }

    pub async fn account(&self, id: &str) -> Result<Option<Arc<Account>>, ApiError> {
        if let Some(a) = self.cache.accounts.read().unwrap().get(id) {
            return Ok(Some(a.clone()));
        }
        let mut conn = self.catalog.conn().await?;
        let Some(a) = accounts::get(&mut conn, id).await? else {
            return Ok(None);
        };
        let a = Arc::new(a);
        self.cache
            .accounts
            .write()
            .unwrap()
            .insert(id.to_string(), a.clone());
        Ok(Some(a))
    }

    pub fn forget_account(&self, id: &str) {
        self.cache.accounts.write().unwrap().remove(id);
    }
}
