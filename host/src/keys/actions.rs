//! What a key accepts now, by the same checks its operations make before they change
//! anything (authorization, the KMIP table, rotation and key-manager prechecks), so that the
//! console offers an action exactly when the key service would take it. For keys of an
//! external key manager the HSM has the last word: recover is offered for a key the catalog
//! knows as soft-deleted, purge for one it knows as soft-deleted, restore for one it knows as
//! purged and has a backup of, delete for one it knows as purged (the scripts check the HSM).

use super::access::may_manage;
use super::hsm::{KeyFlow, flow_allowed};
use super::rotate::rotatable;
use super::rules::{self, Transition};
use super::usage::export_allowed;
use super::{KeyService, Result};
use crate::auth::Access;
use crate::catalog::sobjects::{self, RemoteState};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Actions {
    pub deactivate: bool,
    /// Copy into another group (the target group's rights are checked when it is chosen).
    pub copy: bool,
    pub rotate: bool,
    pub soft_delete: bool,
    pub recover: bool,
    /// Purge the soft-deleted HSM key now.
    pub purge: bool,
    /// Put a purged HSM key back from the catalog's escrowed backup.
    pub restore: bool,
    pub delete: bool,
    /// Take the material out as an Azure BYOK transfer file (an export; the policies are
    /// asked when it is made).
    pub byok: bool,
}

impl KeyService {
    pub async fn actions(&self, access: &Access, kid: &str) -> Result<Actions> {
        let o = self.get(access, kid).await?;
        let now = self.now();
        let group = self.group(&access.account_id, &o.group_id).await?;
        let byok = export_allowed(access, &o, &group).is_ok();
        if may_manage(access, &o).is_err() {
            return Ok(Actions {
                byok,
                ..Actions::default()
            });
        }
        let remote = o.remote_state();
        let escrowed = match remote {
            Some(RemoteState::Purged) => {
                let mut c = self.catalog().conn().await?;
                sobjects::has_escrow(&mut c, &o.kid).await?
            }
            _ => false,
        };
        Ok(Actions {
            // An empty patch: the key is deactivated already.
            deactivate: rules::transition(&o, &Transition::Deactivate, now)
                .is_ok_and(|p| !p.is_empty()),
            copy: rules::copyable(&o, now).is_ok(),
            rotate: rotatable(&o, now).is_ok(),
            soft_delete: flow_allowed(&o, KeyFlow::SoftDelete).is_ok(),
            recover: flow_allowed(&o, KeyFlow::Recover).is_ok()
                && remote == Some(RemoteState::SoftDeleted),
            purge: flow_allowed(&o, KeyFlow::Purge).is_ok()
                && remote == Some(RemoteState::SoftDeleted),
            restore: flow_allowed(&o, KeyFlow::Restore).is_ok() && escrowed,
            delete: match remote {
                Some(r) => r == RemoteState::Purged,
                None => rules::deletable(&o, now).is_ok(),
            },
            byok,
        })
    }
}
