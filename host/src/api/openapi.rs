//! The OpenAPI document, generated from the handlers' annotations, at
//! `/sys/v1/openapi.json`.

use axum::Json;
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::{
    accounts, approvals, apps, audit, byok, crypto_ops, error, external_keys, groups, hmg, jobs,
    keys, model, notifications, plugins, reports, rotation, session, users, webhooks, workflows,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "Keyward", description = "Key-management control plane: accounts, users, applications, groups (and their links to Azure Managed HSM), keys and their rotation, cryptographic operations, workflows, cron jobs, webhooks and the audit log, in the style of the Fortanix DSM REST API."),
    paths(
        session::health, session::version, session::scrape, session::auth, session::terminate, session::refresh, session::select_account,
        users::signup, users::invite, users::list, users::get, users::update, users::remove,
        accounts::list, accounts::create, accounts::get, accounts::update, accounts::delete,
        apps::list, apps::create, apps::get, apps::update, apps::delete, apps::reset_secret, apps::credential,
        groups::list, groups::create, groups::get, groups::update, groups::delete,
        hmg::azure_vaults, hmg::check_config, hmg::check_group, hmg::scan, hmg::start_scan, hmg::scans, hmg::get_scan,
        keys::create, keys::import, keys::list, keys::get, keys::info, keys::update, keys::delete,
        keys::activate, keys::deactivate, keys::revoke, keys::destroy, keys::export, keys::export_kid, byok::byok,
        external_keys::copy, external_keys::copy_name, external_keys::schedule_deletion, external_keys::recover,
        external_keys::restore, external_keys::purge,
        rotation::rekey, rotation::rekey_kid, rotation::history,
        jobs::create, jobs::list, jobs::get, jobs::pause, jobs::resume, jobs::delete, jobs::fires,
        webhooks::create, webhooks::list, webhooks::get, webhooks::rotate_secret, webhooks::delete, webhooks::deliveries,
        webhooks::deliver, webhooks::handshake,
        notifications::create, notifications::list, notifications::get, notifications::enable, notifications::disable,
        notifications::delete, notifications::messages,
        crypto_ops::encrypt_with, crypto_ops::encrypt, crypto_ops::decrypt_with, crypto_ops::decrypt,
        crypto_ops::sign_with, crypto_ops::sign, crypto_ops::verify_with, crypto_ops::verify,
        crypto_ops::wrap_with, crypto_ops::wrap, crypto_ops::unwrap_with, crypto_ops::unwrap,
        approvals::create, approvals::list, approvals::get, approvals::approve, approvals::deny,
        approvals::result, approvals::withdraw,
        audit::query, plugins::list,
        reports::keys, reports::rotation, reports::failures, reports::usage, reports::drift,
        workflows::list, workflows::get, workflows::put, workflows::revert, workflows::check,
        workflows::versions, workflows::version, workflows::restore, workflows::start,
        workflows::runs, workflows::run,
    ),
    modifiers(&CommonErrors, &RequiredPerOperation),
    components(schemas(error::ErrorBody, reports::Format, crate::crypto::RsaEncryptionMode, audit::Outcome, audit::Severity, audit::ActionTypeName, audit::ActorType, model::SobjectOut, model::GroupOut, model::AppOut, model::AppWithKey, model::UserOut, model::AccountOut)),
    tags(
        (name = "session", description = "Authentication and sessions"),
        (name = "users"), (name = "accounts"), (name = "apps"), (name = "groups"),
        (name = "keys", description = "Security objects"),
        (name = "crypto", description = "Cryptographic operations (applications only)"),
        (name = "audit", description = "The audit log"),
        (name = "plugins", description = "The daemon's plugins, loaded and skipped"),
        (name = "reports", description = "Key health: the dashboard's figures as JSON or CSV"),
        (name = "workflows", description = "Workflow scripts and their runs"),
        (name = "jobs", description = "Cron jobs: workflows on a schedule"),
        (name = "webhooks", description = "Webhooks that start workflows, and their deliveries"),
        (name = "notifications", description = "Signed notifications of key events"),
        (name = "approvals", description = "Quorum approval requests of protected operations"),
    )
)]
pub struct ApiDoc;

/// Operations that answer without a session (the rest answer 401 without one, and 403 when
/// the caller's roles do not allow them).
const PUBLIC: &[(&str, &str)] = &[
    ("get", "/sys/v1/health"),
    ("get", "/sys/v1/version"),
    ("get", "/sys/v1/openapi.json"),
    ("get", "/metrics"),
    ("post", "/sys/v1/users"),
];

/// The error answers every handler shares, because the extractors give them before the
/// handler runs: 400 for a bad path id, query or body (not JSON included), 413 for a body too
/// large, 404 for an id (in the path or the body) that names nothing the caller may see, 401 and 403 for the
/// session, 409 where the object's state stands in the way. Each handler's annotation lists
/// the answers particular to it.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, op) in operations(item) {
                for p in op.parameters.iter_mut().flatten() {
                    if p.parameter_in != ParameterIn::Path {
                        continue;
                    }
                    // Every path parameter is an id but names and version numbers, which
                    // keep what their annotation declares; workflow names have a pattern.
                    match p.name.as_str() {
                        "version" => {}
                        "name" if path.starts_with("/sys/v1/workflows/") => {
                            p.schema = Some(super::schemas::workflow_name().into());
                        }
                        "name" => {}
                        _ => p.schema = Some(super::schemas::id().into()),
                    }
                }
                let public = PUBLIC.contains(&(method, path.as_str()));
                let has_path_params = path.contains('{');
                let has_input = has_path_params
                    || op.request_body.is_some()
                    || op.parameters.as_ref().is_some_and(|p| !p.is_empty());
                let mut add = |status: &str, why: &str| {
                    op.responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| {
                            ResponseBuilder::new()
                                .description(why)
                                .content(
                                    "application/json",
                                    ContentBuilder::new()
                                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                                        .build(),
                                )
                                .build()
                                .into()
                        });
                };
                if has_input {
                    add("400", "Bad input; the body names the problem");
                }
                if op.request_body.is_some() {
                    add("413", "The body is too large");
                }
                if has_input && !public {
                    add(
                        "404",
                        "An id (in the path or the body) names nothing in the caller's account",
                    );
                    add(
                        "409",
                        "The object's state does not allow it (a name taken, a lifecycle rule, a group not linked)",
                    );
                }
                if !public {
                    add("401", "No session, or one that has ended");
                    add("403", "The caller's roles do not allow this");
                }
            }
        }
    }
}

/// Fields one operation requires of a body type it shares with others that do not (a create
/// and its update; the global crypto endpoints, which name the key in the body, and the
/// per-key ones, which name it in the path), each as the operation takes it (not null).
/// The handlers refuse their absence with a 400.
const REQUIRED: &[(&str, &str, &[&str])] = &[
    ("post", "/sys/v1/accounts", &["name"]),
    ("post", "/sys/v1/groups", &["name"]),
    ("post", "/sys/v1/apps", &["name"]),
    ("post", "/crypto/v1/keys", &["name"]),
    ("put", "/crypto/v1/keys", &["name"]),
    ("post", "/crypto/v1/encrypt", &["key"]),
    ("post", "/crypto/v1/decrypt", &["key"]),
    ("post", "/crypto/v1/sign", &["key"]),
    ("post", "/crypto/v1/verify", &["key"]),
    ("post", "/crypto/v1/wrapkey", &["key"]),
    ("post", "/crypto/v1/unwrapkey", &["key"]),
    (
        "post",
        "/crypto/v1/keys/{kid}/schedule_deletion",
        &["confirm"],
    ),
    (
        "post",
        "/crypto/v1/keys/{kid}/delete_key_material",
        &["confirm"],
    ),
];

/// The per-key crypto endpoints name the key in the path: their body has no `key`.
const KEY_IN_PATH: &[&str] = &[
    "/crypto/v1/keys/{kid}/encrypt",
    "/crypto/v1/keys/{kid}/decrypt",
    "/crypto/v1/keys/{kid}/sign",
    "/crypto/v1/keys/{kid}/verify",
    "/crypto/v1/keys/{kid}/wrapkey",
    "/crypto/v1/keys/{kid}/unwrapkey",
];

/// A required field as the operation takes it.
fn required_field(field: &str) -> RefOr<Schema> {
    match field {
        "key" => Ref::from_schema_name("KeyDescriptor").into(),
        "confirm" => super::schemas::confirm().into(),
        _ => ObjectBuilder::new().schema_type(Type::String).into(),
    }
}

/// Whether a schema already allows `null`.
fn takes_null(s: &RefOr<Schema>) -> bool {
    use utoipa::openapi::schema::SchemaType;
    match s {
        RefOr::Ref(_) => false,
        RefOr::T(Schema::Object(o)) => match &o.schema_type {
            SchemaType::Type(t) => *t == Type::Null,
            SchemaType::Array(ts) => ts.contains(&Type::Null),
            SchemaType::AnyValue => true,
        },
        RefOr::T(Schema::OneOf(one)) => one.items.iter().any(takes_null),
        RefOr::T(Schema::AnyOf(any)) => any.items.iter().any(takes_null),
        RefOr::T(Schema::Array(a)) => match &a.schema_type {
            SchemaType::Array(ts) => ts.contains(&Type::Null),
            _ => false,
        },
        _ => false,
    }
}

fn null() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Null)
}

struct RequiredPerOperation;

impl Modify for RequiredPerOperation {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, op) in operations(item) {
                let narrowed = match REQUIRED.iter().find(|(m, p, _)| *m == method && p == path) {
                    Some((_, _, fields)) => fields.iter().fold(ObjectBuilder::new(), |o, f| {
                        o.required(*f).property(*f, required_field(f))
                    }),
                    None if method == "post" && KEY_IN_PATH.contains(&path.as_str()) => {
                        ObjectBuilder::new().property("key", null())
                    }
                    None => continue,
                };
                let Some(json) = op
                    .request_body
                    .as_mut()
                    .and_then(|b| b.content.get_mut("application/json"))
                else {
                    continue;
                };
                let Some(shared) = json.schema.take() else {
                    continue;
                };
                json.schema = Some(AllOfBuilder::new().item(shared).item(narrowed).into());
            }
        }
        // A request field that may be left out may also be null (serde reads both as
        // absent): said of every optional property of a request body (the closed objects).
        if let Some(components) = doc.components.as_mut() {
            for schema in components.schemas.values_mut() {
                if let RefOr::T(Schema::Object(o)) = schema
                    && matches!(
                        o.additional_properties.as_deref(),
                        Some(utoipa::openapi::schema::AdditionalProperties::FreeForm(
                            false
                        ))
                    )
                {
                    let required = o.required.clone();
                    for (name, property) in o.properties.iter_mut() {
                        if !required.contains(name) && !takes_null(property) {
                            let inner = std::mem::replace(property, RefOr::T(Schema::default()));
                            *property = OneOfBuilder::new().item(null()).item(inner).into();
                        }
                    }
                }
            }
        }
        // Enums serde tags by one key (`{"PSS": {...}}`): that key and no other.
        if let Some(components) = doc.components.as_mut() {
            for schema in components.schemas.values_mut() {
                if let RefOr::T(Schema::OneOf(one_of)) = schema {
                    for item in one_of.items.iter_mut() {
                        if let RefOr::T(Schema::Object(o)) = item
                            && o.properties.len() == 1
                            && o.required.len() == 1
                            && o.properties.contains_key(&o.required[0])
                        {
                            o.additional_properties = Some(Box::new(
                                utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
                            ));
                        }
                    }
                }
            }
        }
        // A standard webhook runs a workflow; an Event Grid one runs none and needs the group
        // linked to the key manager that sends the events.
        if let Some(components) = doc.components.as_mut()
            && let Some(RefOr::T(Schema::Object(request))) =
                components.schemas.remove("WebhookRequest")
        {
            let variant = |kind: &str, required: &[&str], no_workflow: bool| {
                let mut o = request.clone();
                o.properties
                    .insert("kind".into(), super::schemas::names([kind]).into());
                for r in required {
                    o.required.push((*r).to_string());
                    if let Some(p) = o.properties.get_mut(*r) {
                        let plain = match r {
                            &"workflow" => super::schemas::workflow_name(),
                            _ => super::schemas::id(),
                        };
                        *p = plain.into();
                    }
                }
                if no_workflow {
                    o.properties.insert("workflow".into(), null().into());
                }
                o
            };
            let standard = variant("standard", &["workflow"], false);
            let mut event_grid = variant("event_grid", &["group_id"], true);
            event_grid.required.push("kind".into());
            components.schemas.insert(
                "WebhookRequest".into(),
                RefOr::T(OneOfBuilder::new().item(standard).item(event_grid).into()),
            );
        }
        // A key descriptor names the key by exactly one of `kid` and `name` (the other absent
        // or null).
        if let Some(components) = doc.components.as_mut()
            && let Some(descriptor) = components.schemas.remove("KeyDescriptor")
        {
            let by_kid = ObjectBuilder::new()
                .required("kid")
                .property("kid", super::schemas::id())
                .property("name", null());
            let by_name = ObjectBuilder::new()
                .required("name")
                .property("name", ObjectBuilder::new().schema_type(Type::String))
                .property("kid", null());
            let exactly_one: Schema = OneOfBuilder::new().item(by_kid).item(by_name).into();
            components.schemas.insert(
                "KeyDescriptor".into(),
                RefOr::T(
                    AllOfBuilder::new()
                        .item(descriptor)
                        .item(exactly_one)
                        .into(),
                ),
            );
        }
    }
}

fn operations(item: &mut PathItem) -> Vec<(&'static str, &mut Operation)> {
    [
        ("get", item.get.as_mut()),
        ("put", item.put.as_mut()),
        ("post", item.post.as_mut()),
        ("delete", item.delete.as_mut()),
        ("patch", item.patch.as_mut()),
        ("options", item.options.as_mut()),
        ("head", item.head.as_mut()),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.map(|op| (m, op)))
    .collect()
}

#[utoipa::path(get, path = "/sys/v1/openapi.json", tag = "session", responses((status = 200, description = "This document")))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
