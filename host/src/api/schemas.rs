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

/// The kinds of external key manager a group links to.
pub fn link_kind() -> ObjectBuilder {
    names(LinkKind::ALL.map(LinkKind::as_str))
}

/// KMIP revocation reasons: the two compromises, and the rest, which deactivate.
pub fn revocation_code() -> ObjectBuilder {
    names(
        crate::keys::rules::COMPROMISING
            .into_iter()
            .chain(crate::keys::rules::DEACTIVATING),
    )
}

/// DSM's `YYYYMMDDTHHMMSSZ`.
pub fn dsm_time() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[0-9]{8}T[0-9]{6}Z$"))
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
