//! What every handler shares: the catalog, the key service, the cron jobs and the scheduler,
//! webhooks, notification endpoints and their deliverer,
//! the plugin runtime, the workflow engine, sessions and the login throttle, the clock, the
//! audit writer and the caches. The
//! daemon's composition root (`daemon::start`) builds it.

use std::sync::Arc;

use crate::audit::Auditor;
use crate::auth::{LoginThrottle, Sessions};
use crate::cache::Caches;
use crate::catalog::Catalog;
use crate::catalog::accounts::Account;
use crate::catalog::groups::Group;
use crate::keys::KeyService;
use crate::kms::Kms;
use crate::notify::{Deliverer, Notifications};
use crate::plugins::PluginRuntime;
use crate::scheduler::Scheduler;
use crate::scheduler::jobs::Jobs;
use crate::time::Clock;
use crate::webhooks::Webhooks;
use crate::workflows::Workflows;

use super::ApiError;

pub struct AppState {
    /// This daemon's id: in its leases, claims and the changes it tells the others.
    pub daemon_id: String,
    pub catalog: Catalog,
    pub keys: KeyService,
    pub jobs: Jobs,
    pub scheduler: Arc<Scheduler>,
    pub webhooks: Webhooks,
    pub notifications: Notifications,
    pub deliverer: Arc<Deliverer>,
    pub plugins: PluginRuntime,
    pub kms: Kms,
    pub workflows: Arc<Workflows>,
    pub sessions: Sessions,
    pub logins: LoginThrottle,
    pub clock: Clock,
    pub audit: Auditor,
    pub caches: Arc<Caches>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Client certificates (from TLS or a trusted proxy) and the CRLs they are checked with.
    pub client_certs: super::client_certs::ClientCerts,
}

impl AppState {
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// A group of `account` (cached).
    pub async fn group(&self, account: &str, id: &str) -> Result<Option<Arc<Group>>, ApiError> {
        Ok(self.caches.group(&self.catalog, account, id).await?)
    }

    /// Call after a change of the group has committed.
    pub fn forget_group(&self, id: &str) {
        self.caches.groups.forget(id);
    }

    pub async fn account(&self, id: &str) -> Result<Option<Arc<Account>>, ApiError> {
        Ok(self.caches.account(&self.catalog, id).await?)
    }

    /// Call after a change of the account has committed.
    pub fn forget_account(&self, id: &str) {
        self.caches.accounts.forget(id);
    }
}
