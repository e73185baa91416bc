//! The actions of a key's page (`POST /console/keys/{kid}/{action}`): copy (with the copy's
//! permissions), rotate (linked copies picked by name; to a Keyward key picked by group and
//! name), deactivate, delete, the Azure key's soft delete, recover, purge and restore,
//! attribute and tag edits, the rotation policy, and the Azure BYOK transfer file (a download,
//! `POST /console/keys/{kid}/byok`). Each builds the API's own request type
//! and calls the API's handler (or the key service, for tag edits), so the rules stay there.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

use super::back;
use super::key_forms::form_time;
use super::{FormFields, SignedForm};
use crate::api::byok::{self, ByokRequest};
use crate::api::external_keys::{Confirm, CopyRequest};
use crate::api::extract::Body;
use crate::api::keys::KeyUpdate;
use crate::api::model::{KeyDescriptor, Removable};
use crate::api::rotation::RekeyRequest;
use crate::api::{ApiError, AppState, external_keys, keys, rotation};
use crate::catalog::rotation::{CopySelection, RawPolicy, RotationPolicy};
use crate::keys::{KeyChange, KeyRef, TagEdits};
use crate::time::parse_form;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console/keys/{kid}/byok", post(byok_file))
        .route("/console/keys/{kid}/{action}", post(act))
}

/// The key's `.byok` file for the key-exchange key given by its Azure identifier and public
/// key (pasted PEM), as a download named after the key.
async fn byok_file(
    State(state): State<Arc<AppState>>,
    Path(kid): Path<String>,
    SignedForm {
        viewer: v,
        fields: f,
    }: SignedForm,
) -> Response {
    let req = ByokRequest {
        kek: None,
        kek_id: f.get("kek_id"),
        kek_public_key: f.get("kek_public_key"),
    };
    match byok::transfer_file(&state, &v.caller, kid.clone(), req).await {
        Ok(file) => {
            let body = serde_json::to_string_pretty(&file).expect("JSON");
            (
                [
                    (header::CONTENT_TYPE, "application/json".to_string()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{kid}.byok\""),
                    ),
                ],
                body,
            )
                .into_response()
        }
        Err(e) => back(&format!("/console/keys/{kid}"), Err(e)),
    }
}

/// The rotation policy of the F25 form.
fn policy(f: &FormFields) -> Result<RotationPolicy, ApiError> {
    let every = || {
        f.get("every")
            .ok_or_else(|| ApiError::field("every", "how often: a number"))?
            .parse::<u32>()
            .map_err(|_| ApiError::field("every", "must be a whole number"))
    };
    let mut raw = RawPolicy {
        effective_at: f
            .get("effective_at")
            .map(|t| parse_form(&t).map_err(|e| ApiError::field("effective_at", e)))
            .transpose()?,
        deactivate_rotated_key: f.ticked("deactivate_rotated_key"),
        rotate_copied_keys: f
            .ticked("rotate_copied_keys")
            .then_some(CopySelection::AllExternal),
        ..RawPolicy::default()
    };
    match f.get("unit").as_deref() {
        Some("months") => raw.interval_months = Some(every()?),
        Some("cron") => {
            raw.cron = Some(
                f.get("cron")
                    .ok_or_else(|| ApiError::field("cron", "give the cron expression"))?,
            );
            raw.time_zone = f.get("time_zone");
        }
        _ => raw.interval_days = Some(every()?),
    }
    RotationPolicy::try_from(raw).map_err(|e| ApiError::field("rotation_policy", e))
}

async fn act(
    State(state): State<Arc<AppState>>,
    Path((kid, action)): Path<(String, String)>,
    SignedForm {
        viewer: v,
        fields: f,
    }: SignedForm,
) -> Response {
    let here = format!("/console/keys/{kid}");
    let tab = |t: &str| format!("{here}?tab={t}");
    let c = v.caller.clone();
    let s = State(state);
    let p = Path(kid.clone());
    let confirm = Confirm {
        confirm: Some(f.ticked("confirm")),
    };
    let outcome: Result<(String, String), ApiError> = match action.as_str() {
        "deactivate" => keys::deactivate(s, c, p)
            .await
            .map(|_| (here.clone(), "Deactivated".into())),
        "recover" => external_keys::recover(s, c, p)
            .await
            .map(|_| (tab("azure"), "Recovered in Azure".into())),
        "restore" => external_keys::restore(s, c, p)
            .await
            .map(|_| (tab("azure"), "Restored in Azure from the backup".into())),
        "soft_delete" => external_keys::schedule_deletion(s, c, p, Body(confirm))
            .await
            .map(|_| (tab("azure"), "Soft deleted in Azure".into())),
        "purge" => external_keys::purge(s, c, p, Body(confirm))
            .await
            .map(|_| (tab("azure"), "Purged in Azure".into())),
        "delete" => keys::delete(s, c, p)
            .await
            .map(|_| ("/console/keys".to_string(), "Deleted".into())),
        "tag_set" | "tag_remove" => {
            let tag = f.get("tag").unwrap_or_default();
            let mut edits = TagEdits::default();
            let done = if action == "tag_set" {
                edits
                    .set
                    .insert(tag.clone(), f.get("value").unwrap_or_default());
                format!("Tag {tag} saved")
            } else {
                edits.remove.push(tag.clone());
                format!("Tag {tag} removed")
            };
            let change = KeyChange {
                tag_edits: Some(edits),
                ..Default::default()
            };
            s.0.keys
                .update(&c.access, &kid, change)
                .await
                .map_err(ApiError::from)
                .map(|_| (tab("attributes"), done))
        }
        "update" => {
            // A date is sent only when it was changed: the lifecycle fixes most dates once
            // they have passed, and an unchanged field is no request to change them.
            let time = |field: &str| -> Result<Option<Removable<String>>, ApiError> {
                let now = f.get(field).unwrap_or_default();
                if now == f.get(&format!("{field}_was")).unwrap_or_default() {
                    return Ok(None);
                }
                Ok(Some(match form_time(field, &now)? {
                    Some(t) => Removable::Set(t),
                    None => Removable::Remove,
                }))
            };
            let update = (|| {
                Ok::<_, ApiError>(KeyUpdate {
                    name: None,
                    description: Some(f.get("description").unwrap_or_default()),
                    key_ops: Some(f.all("key_ops")),
                    enabled: None,
                    activation_date: time("activation_date")?,
                    deactivation_date: time("deactivation_date")?,
                    custom_metadata: None,
                    custom_metadata_edits: None,
                    rotation_policy: None,
                })
            })();
            match update {
                Ok(u) => keys::update(s, c, p, Body(u))
                    .await
                    .map(|_| (tab("attributes"), "Attributes saved".into())),
                Err(e) => Err(e),
            }
        }
        "policy" | "policy_remove" => {
            let set = if action == "policy" {
                policy(&f).map(Removable::Set)
            } else {
                Ok(Removable::Remove)
            };
            match set {
                Ok(rp) => {
                    let u = KeyUpdate {
                        name: None,
                        description: None,
                        key_ops: None,
                        enabled: None,
                        activation_date: None,
                        deactivation_date: None,
                        custom_metadata: None,
                        custom_metadata_edits: None,
                        rotation_policy: Some(rp),
                    };
                    keys::update(s, c, p, Body(u))
                        .await
                        .map(|_| (tab("rotation"), "Rotation policy saved".into()))
                }
                Err(e) => Err(e),
            }
        }
        "copy" => {
            let req = CopyRequest {
                key: KeyDescriptor {
                    kid: Some(kid.clone()),
                    name: None,
                },
                group_id: f.get("group_id").unwrap_or_default(),
                name: f.get("name"),
                key_ops: Some(f.all("key_ops")),
                description: None,
                enabled: None,
                activation_date: None,
                deactivation_date: None,
                custom_metadata: None,
            };
            external_keys::copy(s, c, Body(req))
                .await
                .map(|(_, Json(o))| {
                    (
                        format!("/console/keys/{}", o.kid),
                        format!("Copied as {}", o.name),
                    )
                })
        }
        "rotate" => {
            let copies = f.all("copy");
            let req = RekeyRequest {
                rotate_copied_keys: (!copies.is_empty()).then_some(CopySelection::Select(copies)),
                rotate_from: f.get("rotate_from").map(|k| KeyDescriptor {
                    kid: Some(k),
                    name: None,
                }),
                ..RekeyRequest::default()
            };
            rotation::rekey_key(&s.0, &c, KeyRef::Kid(kid.clone()), req)
                .await
                .map(|(_, Json(o))| {
                    let failed = o
                        .rotated_copies
                        .iter()
                        .filter(|c| c.error.is_some())
                        .count();
                    (
                        format!("/console/keys/{}", o.key.kid),
                        format!(
                            "Rotated: {} copies rotated along, {failed} failed",
                            o.rotated_copies.len() - failed
                        ),
                    )
                })
        }
        other => Err(ApiError::NotFound(format!("no action '{other}'"))),
    };
    match outcome {
        Ok((to, message)) => back(&to, Ok(message)),
        Err(e) => back(&here, Err(e)),
    }
}
