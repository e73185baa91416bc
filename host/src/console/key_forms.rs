//! Console forms that make keys: "Add security object" (generate, or import a file in raw,
//! DER, base64, hex or PEM, optionally wrapped by a key-encryption key; in the group's HSM
//! when the group is linked, with its own HSM key name) with every field of the API: type,
//! size or curve, operations, dates, description, tags, rotation policy. The fields are read
//! into the API's own request type and handed to the API's handler, so the rules stay there.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Multipart, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use maud::{Markup, html};

use super::keys::group_names;
use super::{Flash, MultipartFields, Viewer, back, csrf_field, page};
use crate::api::extract::Body;
use crate::api::keys::{KeyRequest, WrappingMode};
use crate::api::model::KeyDescriptor;
use crate::api::{ApiError, AppState, keys};
use crate::catalog::is_id;
use crate::catalog::sobjects::{KeyOp, ObjType};
use crate::keys::material_file::{self, MaterialFormat};
use crate::time::{format_dsm, parse_form};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/console/keys/new", get(new).post(create))
}

/// The operations a person picks from: all of DSM's that Keyward has.
pub const PICKABLE_OPS: [KeyOp; 8] = KeyOp::ALL;

/// Checkboxes of operations, `checked` ticked.
pub fn ops_boxes(name: &str, checked: &[String], only: Option<&[String]>) -> Markup {
    html! {
        @for op in PICKABLE_OPS {
            @if only.is_none_or(|o| o.iter().any(|x| x == op.as_str())) {
                label .inline { input type="checkbox" name=(name) value=(op.as_str())
                    checked[checked.iter().any(|c| c == op.as_str())]
                    data-testid={ "op-" (op.as_str()) }; " " (op.as_str()) }
            }
        }
    }
}

/// Tags typed one per line as `name=value`.
pub fn parse_tags(text: &str) -> Result<Option<BTreeMap<String, String>>, ApiError> {
    let mut tags = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once('=').ok_or_else(|| {
            ApiError::field(
                "custom_metadata",
                format!("'{line}': write a tag as name=value"),
            )
        })?;
        tags.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok((!tags.is_empty()).then_some(tags))
}

/// A `datetime-local` field as a DSM time for the API (empty: none).
pub fn form_time(field: &str, text: &str) -> Result<Option<String>, ApiError> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    parse_form(t)
        .map(|s| Some(format_dsm(s)))
        .map_err(|e| ApiError::field(field, e))
}

async fn new(State(state): State<Arc<AppState>>, v: Viewer, Query(f): Query<Flash>) -> Response {
    let groups = group_names(&state, &v).await;
    let defaults: Vec<String> = PICKABLE_OPS
        .iter()
        .filter(|o| **o != KeyOp::Export)
        .map(|o| o.as_str().to_string())
        .collect();
    let body = html! {
        form method="post" action="/console/keys/new" enctype="multipart/form-data" data-testid="key-form" {
            (csrf_field(&v))
            label for="name" { "Name" }
            input id="name" name="name" required maxlength="256" data-testid="key-name";
            label for="group_id" { "Group (an HSM object when the group is linked to Azure)" }
            select id="group_id" name="group_id" data-testid="key-group" {
                @for g in &groups {
                    option value=(g.group_id) { (g.name) @if g.is_external { " (Azure Managed HSM)" } }
                }
            }
            label for="external_name" { "Azure key name (groups linked to Azure; empty: from the name)" }
            input id="external_name" name="external_name" pattern="[0-9A-Za-z-]{1,127}" data-testid="key-azure-name";
            label for="obj_type" { "Type" }
            select id="obj_type" name="obj_type" data-testid="key-type" {
                option value="AES" { "AES" } option value="RSA" { "RSA" } option value="EC" { "EC" }
            }
            label for="key_size" { "Size (AES 128/192/256, RSA 2048/3072/4096; not for EC)" }
            input id="key_size" name="key_size" inputmode="numeric" value="256" data-testid="key-size";
            label for="elliptic_curve" { "Curve (EC only)" }
            select id="elliptic_curve" name="elliptic_curve" data-testid="key-curve" {
                option value="" { "—" }
                @for c in ["NistP256", "NistP384", "NistP521"] { option value=(c) { (c) } }
            }
            fieldset data-testid="key-ops" {
                legend { "Permitted operations (EXPORT can only be given now: it can never be added later)" }
                (ops_boxes("key_ops", &defaults, None))
            }
            label for="description" { "Description" }
            input id="description" name="description" data-testid="key-description";
            label for="activation_date" { "Activation (UTC; empty: now)" }
            input id="activation_date" name="activation_date" type="datetime-local" data-testid="key-activation";
            label for="deactivation_date" { "Deactivation (UTC; empty: never)" }
            input id="deactivation_date" name="deactivation_date" type="datetime-local" data-testid="key-deactivation";
            label for="tags" { "Tags, one per line: name=value" }
            textarea id="tags" name="tags" rows="3" data-testid="key-tags" {}
            fieldset {
                legend { "Key material" }
                label { input type="radio" name="source" value="generate" checked data-testid="source-generate"; " Generate (in Azure for an HSM object)" }
                label { input type="radio" name="source" value="import" data-testid="source-import"; " Import from a file" }
                label for="file" { "File" }
                input id="file" name="file" type="file" data-testid="key-file";
                label for="format" { "File format" }
                select id="format" name="format" data-testid="key-file-format" {
                    option value="auto" { "recognise it (PEM, hex, base64, else raw)" }
                    option value="raw" { "raw bytes (AES) or DER (RSA, EC)" }
                    option value="pem" { "PEM (RSA, EC private key)" }
                    option value="base64" { "base64" }
                    option value="hex" { "hex" }
                }
                label for="kek" { "Wrapped by a key-encryption key (its key id; empty: not wrapped)" }
                input id="kek" name="kek" data-testid="key-kek";
                label for="wrapping_mode" { "Wrapping (AES KEK: KWP or KW; RSA KEK: an OAEP mode)" }
                select id="wrapping_mode" name="wrapping_mode" data-testid="key-wrapping-mode" {
                    option value="" { "default" }
                    @for m in ["KWP", "KW"] { option value=(m) { (m) } }
                }
            }
            button type="submit" data-testid="save-key" { "Save" }
        }
    };
    page(&v, "Add security object", "keys", &f, body)
}

/// The ticked operations the type has: one form serves every type, and the operations ticked
/// by default include some that, say, EC keys do not have.
fn ops_for_type(obj_type: &str, ticked: Vec<String>) -> Vec<String> {
    let Some(allowed) = ObjType::parse(obj_type).map(ObjType::allowed_ops) else {
        return ticked;
    };
    ticked
        .into_iter()
        .filter(|o| KeyOp::parse(o).is_none_or(|op| allowed.contains(op)))
        .collect()
}

/// The API request the form describes, and whether it imports.
fn request(f: &MultipartFields) -> Result<(KeyRequest, bool), ApiError> {
    let size = f
        .opt("key_size")
        .filter(|_| f.text("obj_type") != "EC")
        .map(|s| {
            s.parse::<u32>()
                .map_err(|_| ApiError::field("key_size", "must be a number"))
        })
        .transpose()?;
    let mut req = KeyRequest {
        name: f.opt("name"),
        group_id: f.opt("group_id"),
        obj_type: f.opt("obj_type"),
        key_size: size,
        elliptic_curve: f.opt("elliptic_curve"),
        key_ops: Some(ops_for_type(&f.text("obj_type"), f.all("key_ops"))),
        description: f.opt("description"),
        enabled: None,
        activation_date: form_time("activation_date", &f.text("activation_date"))?,
        deactivation_date: form_time("deactivation_date", &f.text("deactivation_date"))?,
        custom_metadata: parse_tags(&f.text("tags"))?,
        external_name: f.opt("external_name"),
        value: None,
        value_format: None,
        wrapped_by: None,
        wrapping_mode: None,
        rotation_policy: None,
    };
    let import = f.text("source") == "import";
    if import {
        let format = MaterialFormat::parse(&f.text("format")).unwrap_or(MaterialFormat::Auto);
        if let Some(kek) = f.opt("kek") {
            if format == MaterialFormat::Pem {
                return Err(ApiError::field(
                    "format",
                    "wrapped material is not PEM: give raw, base64 or hex",
                ));
            }
            req.wrapped_by = Some(if is_id(&kek) {
                KeyDescriptor {
                    kid: Some(kek),
                    name: None,
                }
            } else {
                KeyDescriptor {
                    kid: None,
                    name: Some(kek),
                }
            });
            req.wrapping_mode = f.opt("wrapping_mode").map(WrappingMode::Aes);
        }
        let (value, encoding) = material_file::encode(f.bytes("file"), format)
            .map_err(|e| ApiError::field("file", e.to_string()))?;
        req.value = Some(value);
        req.value_format = Some(encoding.to_string());
    }
    Ok((req, import))
}

async fn create(State(state): State<Arc<AppState>>, v: Viewer, form: Multipart) -> Response {
    let fields = match MultipartFields::read(form).await {
        Ok(f) => f,
        Err(e) => return back("/console/keys/new", Err(e)),
    };
    if let Err(r) = v.check(&fields.text("csrf")) {
        return r.into_response();
    }
    let made = match request(&fields) {
        Ok((r, true)) => keys::import(State(state), v.caller.clone(), Body(r)).await,
        Ok((r, false)) => keys::create(State(state), v.caller.clone(), Body(r)).await,
        Err(e) => Err(e),
    };
    match made {
        Ok((_, Json(o))) => back(
            &format!("/console/keys/{}", o.kid),
            Ok(format!("Key {} created", o.name)),
        ),
        Err(e) => back("/console/keys/new", Err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_lines_of_name_equals_value() {
        let t = parse_tags("owner = payments\n\ncost-center=42\n")
            .unwrap()
            .unwrap();
        assert_eq!(t["owner"], "payments");
        assert_eq!(t["cost-center"], "42");
        assert!(parse_tags("  \n").unwrap().is_none());
        assert!(parse_tags("no equals sign").is_err());
    }

    #[test]
    fn form_times_are_utc_dsm_times() {
        assert_eq!(
            form_time("x", "2026-01-01T00:00").unwrap().as_deref(),
            Some("20260101T000000Z")
        );
        assert_eq!(form_time("x", "").unwrap(), None);
        assert!(form_time("x", "tomorrow").is_err());
    }
}
