//! OpenAPI schemas of request fields whose Rust type is looser than what the server takes:
//! they are parsed by hand, for error messages that name the field and the accepted values,
//! and documented here from the same lists the parsers use, so a generated client and a
//! fuzzer see the constraints the server enforces.

use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{RefOr, schema::SchemaFormat};

use crate::auth::credentials::MIN_PASSWORD_LEN;
use crate::catalog::groups::LinkKind;
use crate::catalog::sobjects::{CURVES, KeyOp, ObjType, curve_name};
use crate::crypto::{AES_CRYPT_MODES, AES_WRAP_MODES, RsaEncryptionMode};

/// What `catalog::is_id` accepts.
pub const ID_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// What `workflows::store::valid_name` accepts.
pub const WORKFLOW_NAME_PATTERN: &str = "^[a-z0-9_-]{1,64}$";

/// A workflow's (or module's) name.
pub fn workflow_name() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(WORKFLOW_NAME_PATTERN))
}

/// A string that is one of `values`.
pub fn names<'a>(values: impl IntoIterator<Item = &'a str>) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.into_iter().collect::<Vec<_>>()))
}

/// An object's id.
pub fn id() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::Custom("uuid".into())))
        .pattern(Some(ID_PATTERN))
}

/// `AES`, `RSA` or `EC`.
pub fn obj_type() -> ObjectBuilder {
    names(ObjType::ALL.map(ObjType::as_str))
}

/// Key states, by DSM's names.
pub fn key_state() -> ObjectBuilder {
    names(crate::catalog::sobjects::KeyState::ALL.map(|k| k.as_str()))
}

/// How the key list is sorted.
pub fn key_sort() -> ObjectBuilder {
    names(["name:asc", "name:desc", "created_at:asc", "created_at:desc"])
}

/// DSM's curve names.
pub fn curve() -> ObjectBuilder {
    names(CURVES.map(curve_name))
}

/// Key operations, by DSM's names.
pub fn key_ops() -> ArrayBuilder {
    ArrayBuilder::new().items(names(KeyOp::ALL.map(KeyOp::as_str)))
}

/// A new password.
pub fn password() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(MIN_PASSWORD_LEN))
}

/// A new password, or null (none given).
pub fn password_or_null() -> ObjectBuilder {
    password().schema_type(
        [Type::String, Type::Null]
            .into_iter()
            .collect::<utoipa::openapi::schema::SchemaType>(),
    )
}

/// Object ids, a list.
pub fn ids() -> ArrayBuilder {
    ArrayBuilder::new().items(id())
}

/// Group id → a user's role in it.
pub fn group_roles() -> ObjectBuilder {
    ObjectBuilder::new()
        .property_names(Some(id()))
        .additional_properties(Some(utoipa::openapi::schema::AdditionalProperties::RefOr(
            names(["administrator", "auditor"]).into(),
        )))
}

/// Group id → what an application may do with its keys.
pub fn group_permissions() -> ObjectBuilder {
    ObjectBuilder::new()
        .property_names(Some(id()))
        .additional_properties(Some(utoipa::openapi::schema::AdditionalProperties::RefOr(
            ArrayBuilder::new()
                .items(utoipa::openapi::Ref::from_schema_name("AppPermission"))
                .into(),
        )))
}

/// An account role: Keyward's name, or DSM's flags (exactly one role, optionally with
/// `STATEENABLED`), each flag list spelled out.
pub fn account_role() -> Schema {
    let roles = ["ACCOUNTADMINISTRATOR", "ACCOUNTMEMBER", "ACCOUNTAUDITOR"];
    let flag_lists: Vec<serde_json::Value> = roles
        .iter()
        .flat_map(|r| {
            [
                serde_json::json!([r]),
                serde_json::json!([r, "STATEENABLED"]),
                serde_json::json!(["STATEENABLED", r]),
            ]
        })
        .collect();
    OneOfBuilder::new()
        .item(names(["administrator", "member", "auditor"]))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Array)
                .enum_values(Some(flag_lists)),
        )
        .into()
}

/// DSM's time, or `"remove"`.
pub fn dsm_time_or_remove() -> Schema {
    OneOfBuilder::new()
        .item(names(["remove"]))
        .item(dsm_time())
        .into()
}

/// The kinds of external key manager a group links to.
pub fn link_kind() -> ObjectBuilder {
    names(LinkKind::ALL.map(LinkKind::as_str))
}

/// What a link's instance is.
pub fn vault_type() -> ObjectBuilder {
    names(crate::catalog::groups::VaultType::ALL.map(crate::catalog::groups::VaultType::as_str))
}

/// KMIP revocation reasons: the two compromises, and the rest, which deactivate.
pub fn revocation_code() -> ObjectBuilder {
    names(
        crate::keys::rules::COMPROMISING
            .into_iter()
            .chain(crate::keys::rules::DEACTIVATING),
    )
}

/// DSM's `YYYYMMDDTHHMMSSZ`, with the days each month has (29 February is left out: a
/// pattern cannot tell leap years, and the server takes it in those).
pub const DSM_TIME_PATTERN: &str = "^[0-9]{4}((0[13578]|1[02])(0[1-9]|[12][0-9]|3[01])|(0[469]|11)(0[1-9]|[12][0-9]|30)|02(0[1-9]|1[0-9]|2[0-8]))T([01][0-9]|2[0-3])[0-5][0-9][0-5][0-9]Z$";

/// DSM's `YYYYMMDDTHHMMSSZ`.
pub fn dsm_time() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(DSM_TIME_PATTERN))
}

/// A cron expression Keyward takes: five fields (minute hour day-of-month month
/// day-of-week) or six with seconds first, each `*` or one value. The server takes more of
/// cron's syntax (lists, ranges, steps, names); this is the part a pattern can state
/// exactly, so that every expression it allows is one the server takes.
pub const CRON_PATTERN: &str = "^(([0-5]?[0-9]|\\*) )?([0-5]?[0-9]|\\*) (1?[0-9]|2[0-3]|\\*) ([1-9]|1[0-9]|2[0-8]|\\*) ([1-9]|1[0-2]|\\*) ([1-6]|\\*)$";

pub fn cron() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(CRON_PATTERN))
}

/// An IANA time zone, as the server knows them.
pub fn time_zone() -> ObjectBuilder {
    names(chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()))
}

/// An email address as `users::check_email` takes it.
pub fn email() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(254))
        .pattern(Some("^[^@\\s]+@[^.@\\s][^\\s]*\\.[^\\s]*$"))
}

/// `true`: the field is there to say the request means it.
pub fn confirm() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .enum_values(Some([true]))
}

/// A paging offset (an unsigned 32-bit number).
pub fn offset() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Int64,
        )))
        .minimum(Some(0))
        .maximum(Some(u32::MAX))
}

/// A rotation policy: exactly one of `interval_days`, `interval_months` and `cron` (with its
/// `time_zone`), a start, whether the rotated key is deactivated, which linked copies rotate.
/// One closed object per cadence, so no object is more than one of them.
pub fn rotation_policy() -> Schema {
    use crate::cadence::{MAX_DAYS, MAX_MONTHS};
    let count = |max: u32| {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(max))
    };
    let copies = || {
        OneOfBuilder::new().item(names(["all_external"])).item(
            ObjectBuilder::new()
                .property("select", ArrayBuilder::new().items(id()))
                .required("select")
                .additional_properties(Some(closed())),
        )
    };
    let variant = |cadence: &str, schema: ObjectBuilder| {
        let mut o = ObjectBuilder::new()
            .property(cadence, schema)
            .required(cadence)
            .property("effective_at", dsm_time())
            .property(
                "deactivate_rotated_key",
                ObjectBuilder::new().schema_type(Type::Boolean),
            )
            .property("rotate_copied_keys", copies())
            .additional_properties(Some(closed()));
        if cadence == "cron" {
            o = o.property("time_zone", time_zone());
        }
        o
    };
    OneOfBuilder::new()
        .item(variant("interval_days", count(MAX_DAYS)))
        .item(variant("interval_months", count(MAX_MONTHS)))
        .item(variant("cron", cron()))
        .into()
}

/// No properties but the declared ones.
fn closed() -> utoipa::openapi::schema::AdditionalProperties<Schema> {
    utoipa::openapi::schema::AdditionalProperties::FreeForm(false)
}

/// A rotation policy, or `"remove"`.
pub fn rotation_policy_or_remove() -> Schema {
    OneOfBuilder::new()
        .item(names(["remove"]))
        .item(rotation_policy())
        .into()
}
fn mode(names: Vec<&str>) -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(self::names(names))
        .item(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
            "RsaEncryptionMode",
        )))
        .into()
}

/// The `mode` of encrypt and decrypt: an AES cipher mode, a DSM RSA mode name, or the RSA
/// padding object.
pub fn crypt_mode() -> RefOr<Schema> {
    mode(
        AES_CRYPT_MODES
            .into_iter()
            .chain(RsaEncryptionMode::NAMES)
            .collect(),
    )
}

/// The `mode` of wrapping: an AES key-wrap mode or the RSA padding object.
pub fn wrap_mode() -> RefOr<Schema> {
    mode(AES_WRAP_MODES.to_vec())
}
