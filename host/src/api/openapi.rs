//! The OpenAPI document, generated from the handlers' annotations, at
//! `/sys/v1/openapi.json`.

use axum::Json;
use utoipa::OpenApi;

use super::{
    accounts, apps, audit, crypto_ops, error, external_keys, groups, hmg, jobs, keys, model,
    notifications, rotation, session, users, webhooks, workflows,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "Keyward", description = "Key-management control plane: accounts, users, applications, groups (and their links to Azure Managed HSM), keys and their rotation, cryptographic operations, workflows, cron jobs, webhooks and the audit log, in the style of the Fortanix DSM REST API."),
    paths(
        session::health, session::version, session::auth, session::terminate, session::refresh, session::select_account,
        users::signup, users::invite, users::list, users::get, users::update, users::remove,
        accounts::list, accounts::create, accounts::get, accounts::update, accounts::delete,
        apps::list, apps::create, apps::get, apps::update, apps::delete, apps::reset_secret, apps::credential,
        groups::list, groups::create, groups::get, groups::update, groups::delete,
        hmg::azure_vaults, hmg::check_config, hmg::check_group, hmg::scan, hmg::start_scan, hmg::scans, hmg::get_scan,
        keys::create, keys::import, keys::list, keys::get, keys::info, keys::update, keys::delete,
        keys::activate, keys::deactivate, keys::revoke, keys::destroy, keys::export, keys::export_kid,
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
        audit::query,
        workflows::list, workflows::get, workflows::runs, workflows::run,
    ),
    components(schemas(error::ErrorBody, model::SobjectOut, model::GroupOut, model::AppOut, model::AppWithKey, model::UserOut, model::AccountOut)),
    tags(
        (name = "session", description = "Authentication and sessions"),
        (name = "users"), (name = "accounts"), (name = "apps"), (name = "groups"),
        (name = "keys", description = "Security objects"),
        (name = "crypto", description = "Cryptographic operations (applications only)"),
        (name = "audit", description = "The audit log"),
        (name = "workflows", description = "Workflow scripts and their runs"),
        (name = "jobs", description = "Cron jobs: workflows on a schedule"),
        (name = "webhooks", description = "Webhooks that start workflows, and their deliveries"),
        (name = "notifications", description = "Signed notifications of key events"),
    )
)]
pub struct ApiDoc;

#[utoipa::path(get, path = "/sys/v1/openapi.json", tag = "session", responses((status = 200, description = "This document")))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
