//! The key service: the one owner of every state change of a security object.
//!
//! Create, import (plain or under a key-encryption key), copy, update, activate, deactivate,
//! revoke, destroy, delete and export, for keys held in the catalog and for virtual keys of
//! an external key manager, go through here, from the REST API and from the workflow
//! scripts' host functions alike. Each takes the caller's [`Access`] and a typed request, and
//! runs, in this order: authorization, the integrity rules ([`rules`]), the policy plugins,
//! the catalog write with its audit event in the same transaction, and the cache
//! invalidation after the commit. Nothing else writes the `sobjects` table (but the audit
//! writer, which records when keys were last used).
//!
//! - [`rules`]: the integrity rules as pure functions (KMIP lifecycle, EXPORT, copies).
//! - `access`: who may manage, export and use a key.
//! - `create`: new keys, imports and copies, in the catalog or in a linked HSM.
//! - `change`: updates, lifecycle operations and deletion.
//! - `usage`: what a cryptographic operation may use, export, and unwrapping under a KEK;
//!   `operate`: the operations themselves, here or in the key's HSM, with their audit event.
//! - `hsm`: flows against a linked HSM, run as workflow scripts (reserving the HSM name
//!   first, serializing changes of one key).
//! - `remote`: what those scripts record: new virtual keys, their changes and remote state,
//!   syncs, escrow; `drift`: what an HSM reports obeys the catalog's rules (refresh, put
//!   back, what a run may ask the HSM to change).
//! - `journal`: the journal of HSM-side changes (intent before the remote call, outcome and
//!   audit event after), and the reconciliation of what a crash left half-way.
//! - `flows`: the port to the engine that runs HSM flows as scripts (the typed request, plan
//!   and outcome); `build`: the pure builders of a flow (HSM names, successors, links).
//! - `rotate`: rotation (DSM rekey) and rotation policies; `rotate_hsm`: the rotations that
//!   give virtual keys new HSM versions (native, to catalog material, linked copies) and their
//!   crash-safe steps; `rotate_record`: recording the versions they made; `rotate_resume`:
//!   settling and resuming what a run or a crash left.
//! - `material_file`: key material files (raw, DER, base64, hex, PEM) as import values.
//!
//! Writes after creation are field-level patches applied with compare-and-swap on the row
//! version: a request that read an older row retries on the fresh one, so concurrent
//! requests never undo each other's writes.

mod access;
mod actions;
mod build;
mod byok;
mod change;
mod create;
mod drift;
mod error;
mod flows;
mod hsm;
mod journal;
pub mod material_file;
mod operate;
mod remote;
mod rotate;
mod rotate_hsm;
mod rotate_record;
mod rotate_resume;
pub mod rules;
pub mod tiers;
mod usage;

use std::sync::{Arc, Weak};

use serde_json::Value;

use crate::audit::{Auditor, Event};
use crate::auth::{Access, Principal};
use crate::cache::{Cache, Caches};
use crate::catalog::accounts::Account;
use crate::catalog::groups::Group;
use crate::catalog::rotation::{self, PolicyRow};
use crate::catalog::sobjects::{self, Creator, Link, SObject};
use crate::catalog::{Catalog, Conn};
use crate::crypto::Material;
use crate::kms::Kms;
use crate::plugins::PluginRuntime;
use crate::plugins::policy::{Action, PolicyRequest};
use crate::policy::{self, PolicyFinding, Verdict};
use crate::time::Clock;

pub use actions::Actions;
pub use build::{RekeyChange, RemoteAttributes, remote_attributes};
pub use byok::ByokKek;
pub use change::{KeyChange, TagEdits};
pub use create::{CopySpec, ImportValue, NewKey};
pub use error::{KeyError, Result};
pub use flows::{
    CopyOutcome, FlowError, FlowOutcome, FlowRequest, FlowRunner, KeyTarget, MadeVersion, Pending,
    PendingChange, PendingNew, RotationRun, RunScope, RunTargets, StepPlan, Trigger,
};
pub use hsm::KeyFlow;
pub use journal::{HsmChange, RemoteReport};
pub use operate::{CryptParams, SignParams};
pub use remote::Deletion;
pub use rotate::{MAX_HSM_VERSIONS, RekeySpec, Rekeyed};
pub use rules::Transition;
pub use usage::{UsableKey, WrapMode};

/// How many times a write is retried on a fresh read when another request changed the key
/// in between.
const CAS_ATTEMPTS: usize = 5;

/// A key as the caller sees it: the object, its links, its rotation policy, and the warnings
/// of `warn` policies.
#[derive(Debug, Clone)]
pub struct KeyView {
    pub object: SObject,
    pub links: Vec<Link>,
    pub rotation: Option<PolicyRow>,
    pub warnings: Vec<PolicyFinding>,
}

/// Who holds leases on rotation work (this daemon), and for how long a lease runs.
#[derive(Debug, Clone)]
pub struct Lease {
    /// This daemon's id among those sharing the catalog.
    pub worker: String,
    pub secs: i64,
}

/// Identifies a key by id or name (DSM `SobjectDescriptor`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    Kid(String),
    Name(String),
}

#[derive(Clone)]
pub struct KeyService {
    inner: Arc<Inner>,
}

struct Inner {
    catalog: Catalog,
    plugins: PluginRuntime,
    kms: Kms,
    audit: Auditor,
    clock: Clock,
    caches: Arc<Caches>,
    /// Keys with their opened material, by key id: the cryptographic hot path's cache.
    usable: Cache<UsableKey>,
    lease: Lease,
    /// The engine that runs the scripts of HSM flows; it holds this service in turn, so the
    /// link back is weak.
    runner: Weak<dyn FlowRunner>,
}

/// What the key service is built from (the daemon's composition root makes these).
pub struct Parts {
    pub catalog: Catalog,
    pub plugins: PluginRuntime,
    pub kms: Kms,
    pub audit: Auditor,
    pub clock: Clock,
    pub caches: Arc<Caches>,
    pub lease: Lease,
}

impl KeyService {
    pub fn new(parts: Parts, runner: Weak<dyn FlowRunner>) -> KeyService {
        KeyService {
            inner: Arc::new(Inner {
                catalog: parts.catalog,
                plugins: parts.plugins,
                kms: parts.kms,
                audit: parts.audit,
                clock: parts.clock,
                usable: parts.caches.cache("keys"),
                caches: parts.caches,
                lease: parts.lease,
                runner,
            }),
        }
    }

    fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    fn now(&self) -> i64 {
        self.inner.clock.now()
    }

    /// Runs a flow to its end.
    async fn launch(&self, req: FlowRequest) -> Result<FlowOutcome> {
        let runner = self
            .inner
            .runner
            .upgrade()
            .ok_or_else(|| KeyError::Internal("the workflow engine has stopped".into()))?;
        match runner.run_flow(req).await {
            Err(FlowError::Busy { run_id }) => Err(KeyError::state(format!(
                "another change of this key is running (workflow run {run_id}); try again when it has finished"
            ))),
            other => Ok(other?),
        }
    }

    /// A key of the caller's account that the caller may read.
    pub async fn get(&self, access: &Access, kid: &str) -> Result<SObject> {
        let mut conn = self.catalog().conn().await?;
        load(&mut conn, access, kid).await
    }

    /// A key by id or name, as [`get`](Self::get).
    pub async fn resolve(&self, access: &Access, key: &KeyRef) -> Result<SObject> {
        let mut conn = self.catalog().conn().await?;
        resolve(&mut conn, access, key).await
    }

    /// The caller's view of a key.
    pub async fn view(&self, access: &Access, kid: &str) -> Result<KeyView> {
        let mut conn = self.catalog().conn().await?;
        let o = load(&mut conn, access, kid).await?;
        view(&mut conn, o, vec![]).await
    }

    pub async fn view_of(&self, access: &Access, key: &KeyRef) -> Result<KeyView> {
        let mut conn = self.catalog().conn().await?;
        let o = resolve(&mut conn, access, key).await?;
        view(&mut conn, o, vec![]).await
    }

    /// A group of the caller's account (cached).
    pub async fn group(&self, account: &str, id: &str) -> Result<Arc<Group>> {
        self.inner
            .caches
            .group(self.catalog(), account, id)
            .await?
            .ok_or_else(|| KeyError::NotFound(format!("no group {id}")))
    }

    async fn account(&self, id: &str) -> Result<Arc<Account>> {
        self.inner
            .caches
            .account(self.catalog(), id)
            .await?
            .ok_or_else(|| KeyError::Internal(format!("account {id} vanished")))
    }

    /// Puts an operation to the account's and group's policies. A denial is recorded in
    /// the audit log and returned with every violated rule.
    async fn enforce(
        &self,
        access: &Access,
        group: &Group,
        action: Action,
        audit_action: &str,
        key: &SObject,
        current: Option<&SObject>,
    ) -> Result<Verdict> {
        let now = self.now();
        let account = self.account(&access.account_id).await?;
        let request = PolicyRequest {
            action,
            principal: policy::principal(&access.principal),
            account: account.id.clone(),
            group: group.id.clone(),
            key: policy::attributes(key, now),
            current: current.map(|c| policy::attributes(c, now)),
            now,
        };
        let verdict = policy::check(&self.inner.plugins, &account, group, &request).await?;
        if !verdict.allowed() {
            self.inner
                .audit
                .later(
                    Event::new(
                        Some(&access.account_id),
                        &access.principal,
                        audit_action,
                        now,
                    )
                    .object("sobject", &key.kid)
                    .outcome("denied", "denied by policy")
                    .details(verdict.audit_details()),
                )
                .await;
            return Err(KeyError::PolicyDenied(verdict.violations));
        }
        Ok(verdict)
    }

    /// Drops a key from the cache; call after the change has committed.
    fn forget(&self, kid: &str) {
        self.inner.usable.forget(kid);
    }

    /// Applies `patch` to the key at the version it was read, with its audit event, in one
    /// write transaction. `false` when the key changed meanwhile (nothing was written).
    async fn write_patch(
        &self,
        access: &Access,
        current: &SObject,
        patch: &sobjects::Patch,
        event: Event,
    ) -> Result<bool> {
        let mut tx = self.catalog().begin().await?;
        if !sobjects::apply(
            &mut tx,
            &access.account_id,
            &current.kid,
            current.version,
            patch,
        )
        .await
        .map_err(integrity)?
        {
            return Ok(false);
        }
        event.write(&mut tx).await?;
        tx.commit().await?;
        self.forget(&current.kid);
        Ok(true)
    }

    /// An audit event of `access` about a key.
    fn event(&self, access: &Access, action: &str, kid: &str, details: Value) -> Event {
        Event::new(
            Some(&access.account_id),
            &access.principal,
            action,
            self.now(),
        )
        .object("sobject", kid)
        .details(details)
    }
}

/// A key of the caller's account that the caller may read.
async fn load(c: &mut Conn, access: &Access, kid: &str) -> Result<SObject> {
    if !crate::catalog::is_id(kid) {
        return Err(KeyError::invalid(
            "kid",
            format!("'{kid}' is not a valid key id"),
        ));
    }
    match sobjects::get(c, &access.account_id, kid).await? {
        Some(o) if access.can_read_group(&o.group_id) => Ok(o),
        Some(_) => Err(KeyError::forbidden(
            "you have no access to that key's group",
        )),
        None => Err(KeyError::NotFound(format!("no key {kid}"))),
    }
}

async fn resolve(c: &mut Conn, access: &Access, key: &KeyRef) -> Result<SObject> {
    match key {
        KeyRef::Kid(kid) => load(c, access, kid).await,
        KeyRef::Name(name) => {
            let o = sobjects::get_by_name(c, &access.account_id, name)
                .await?
                .ok_or_else(|| KeyError::NotFound(format!("no key named '{name}'")))?;
            load(c, access, &o.kid).await
        }
    }
}

async fn view(c: &mut Conn, object: SObject, warnings: Vec<PolicyFinding>) -> Result<KeyView> {
    let links = sobjects::links_of(c, &object.kid).await?;
    let rotation = rotation::policy_of(c, &object.kid).await?;
    Ok(KeyView {
        object,
        links,
        rotation,
        warnings,
    })
}

/// A write a schema trigger refused: a rule the service's own checks should have caught.
fn integrity(e: crate::catalog::CatalogError) -> KeyError {
    match e.integrity_violation() {
        Some(rule) => {
            tracing::error!("the catalog refused a write that broke a rule: {rule}");
            KeyError::Rule(rule.to_string())
        }
        None => e.into(),
    }
}

/// Who a new key (or a policy, a job, a webhook) is created by.
pub fn creator(p: &Principal) -> Creator {
    match p {
        Principal::User { user_id, .. } => Creator::User(user_id.clone()),
        Principal::App { app_id, .. } => Creator::App(app_id.clone()),
    }
}

/// Material of a catalog key, opened.
fn open_material(catalog: &Catalog, o: &SObject) -> Result<Option<Material>> {
    let Some(sealed) = &o.material else {
        return Ok(None);
    };
    let der = catalog.open_sealed(&sobjects::material_context(&o.kid), sealed)?;
    let kty = match o.obj_type {
        sobjects::ObjType::Aes => keyward_crypto::Kty::Oct,
        sobjects::ObjType::Rsa => keyward_crypto::Kty::Rsa,
        sobjects::ObjType::Ec => keyward_crypto::Kty::Ec,
    };
    Material::from_private_der(kty, &der)
        .map(Some)
        .map_err(|e| KeyError::Internal(format!("stored material of {}: {e}", o.kid)))
}
