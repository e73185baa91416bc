//! A script's change that the group's quorum protects: the run asks for approval as its
//! principal would, with the API call a person would make (`POST /sys/v1/approval_requests`),
//! notes the request in the run record, and fails the call with `ApprovalRequired`. A run
//! that fires again (a cron job, a webhook, a sync every few minutes) finds the pending
//! request and asks nothing new. When the quorum approves, the daemon carries the call out
//! as the principal, through the API, as it does every approved request.

use rhai::EvalAltResult;
use serde_json::json;

use crate::audit::Event;
use crate::catalog::CatalogError;
use crate::catalog::approvals::{ApprovalRequest, Operation, Reviewer, Subjects};
use crate::keys::HsmChange;

use super::{HostError, HostErrorKind, RunContext};

/// The API call that makes `change` of key `kid`, as a person asks for it.
fn api_call(change: HsmChange, kid: &str) -> (&'static str, String, Option<String>) {
    let confirmed = Some(json!({"confirm": true}).to_string());
    match change {
        HsmChange::DeleteKey => (
            "POST",
            format!("/crypto/v1/keys/{kid}/schedule_deletion"),
            confirmed,
        ),
        HsmChange::PurgeKey => (
            "POST",
            format!("/crypto/v1/keys/{kid}/delete_key_material"),
            confirmed,
        ),
        HsmChange::RecoverKey => ("POST", format!("/crypto/v1/keys/{kid}/recover"), None),
        HsmChange::RestoreKey => ("POST", format!("/crypto/v1/keys/{kid}/restore"), None),
        HsmChange::CreateKey
        | HsmChange::ImportKey
        | HsmChange::RotateKey
        | HsmChange::UpdateKey
        | HsmChange::CreateKek => (
            "POST",
            "/crypto/v1/keys/rekey".into(),
            Some(json!({"kid": kid}).to_string()),
        ),
    }
}

/// What the change is, for people.
fn described(change: HsmChange) -> &'static str {
    match change {
        HsmChange::DeleteKey => "soft-deleting",
        HsmChange::PurgeKey => "purging",
        HsmChange::RecoverKey => "recovering",
        HsmChange::RestoreKey => "restoring",
        _ => "rotating",
    }
}

impl RunContext {
    /// Asks for approval of `change` of `kid` (HSM name `name`) and returns the error the
    /// script sees.
    pub(super) fn ask_approval(
        &self,
        change: HsmChange,
        kid: &str,
        name: &str,
    ) -> Box<EvalAltResult> {
        let what = described(change);
        let (method, path, body) = api_call(change, kid);
        let group = match self.group() {
            Ok(g) => g.id.clone(),
            Err(e) => return e,
        };
        let asked = self.block(async {
            let now = self.services.clock.now();
            let account = &self.access.account_id;
            let mut tx = self.services.catalog.begin().await?;
            let expiry = crate::quorum::expiry(&mut tx, account).await?;
            let r = ApprovalRequest::new(
                account,
                Reviewer::of(&self.access.principal),
                Operation {
                    method: method.into(),
                    path,
                    body,
                    description: Some(format!("{what} {name} (workflow run {})", self.run_id)),
                },
                Subjects::group(&group),
                now,
                expiry,
            );
            let event = Event::new(
                Some(account),
                &self.access.principal,
                "approval_request.create",
                now,
            );
            let r = crate::quorum::ask_once(&mut tx, &r, event, now).await?;
            tx.commit().await?;
            Ok::<_, CatalogError>(r.id)
        });
        let id = match asked {
            Ok(Ok(id)) => id,
            Ok(Err(e)) => return HostError::from(e).throw(),
            Err(e) => return e,
        };
        self.log(&format!(
            "{what} {name} needs approval under the group's quorum policy: approval request {id} waits for its reviewers, and the change runs when they approve"
        ));
        HostError {
            code: "ApprovalRequired".into(),
            status: Some(403),
            ..HostError::new(
                HostErrorKind::Denied,
                format!(
                    "This operation requires approval: {what} {name} waits for approval request {id}"
                ),
            )
        }
        .throw()
    }
}
