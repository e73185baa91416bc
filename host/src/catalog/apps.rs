//! Applications: authenticate with an API key (checked against a SHA-256 hash of its
//! secret; the secret itself is kept sealed under the master key for its administrators to
//! read again), belong to groups, and are the only principals that perform cryptographic
//! operations.

use crate::catalog::db::{self, Row};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::sobjects::KeyOp;
use super::{CatalogError, Conn, Result};

/// What an application may do with the keys of one of its groups: DSM's `AppPermissions`.
/// A key's own operations still apply on top (an app with ENCRYPT cannot encrypt with a key
/// that does not permit it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AppPermission {
    Encrypt,
    Decrypt,
    WrapKey,
    UnwrapKey,
    Sign,
    Verify,
    MacGenerate,
    MacVerify,
    DeriveKey,
    AgreeKey,
    MaskDecrypt,
    Export,
    /// Create, update, lifecycle and delete of the group's keys (those that permit
    /// APPMANAGEABLE).
    Manage,
}

impl AppPermission {
    pub const ALL: [AppPermission; 13] = [
        AppPermission::Encrypt,
        AppPermission::Decrypt,
        AppPermission::WrapKey,
        AppPermission::UnwrapKey,
        AppPermission::Sign,
        AppPermission::Verify,
        AppPermission::MacGenerate,
        AppPermission::MacVerify,
        AppPermission::DeriveKey,
        AppPermission::AgreeKey,
        AppPermission::MaskDecrypt,
        AppPermission::Export,
        AppPermission::Manage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AppPermission::Encrypt => "ENCRYPT",
            AppPermission::Decrypt => "DECRYPT",
            AppPermission::WrapKey => "WRAPKEY",
            AppPermission::UnwrapKey => "UNWRAPKEY",
            AppPermission::Sign => "SIGN",
            AppPermission::Verify => "VERIFY",
            AppPermission::MacGenerate => "MACGENERATE",
            AppPermission::MacVerify => "MACVERIFY",
            AppPermission::DeriveKey => "DERIVEKEY",
            AppPermission::AgreeKey => "AGREEKEY",
            AppPermission::MaskDecrypt => "MASKDECRYPT",
            AppPermission::Export => "EXPORT",
            AppPermission::Manage => "MANAGE",
        }
    }

    pub fn parse(s: &str) -> Option<AppPermission> {
        AppPermission::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The permission a key operation needs; `None` for APPMANAGEABLE, which is the key's
    /// consent to MANAGE rather than an operation.
    pub fn for_op(op: KeyOp) -> Option<AppPermission> {
        Some(match op {
            KeyOp::Sign => AppPermission::Sign,
            KeyOp::Verify => AppPermission::Verify,
            KeyOp::Encrypt => AppPermission::Encrypt,
            KeyOp::Decrypt => AppPermission::Decrypt,
            KeyOp::WrapKey => AppPermission::WrapKey,
            KeyOp::UnwrapKey => AppPermission::UnwrapKey,
            KeyOp::Export => AppPermission::Export,
            KeyOp::AppManageable => return None,
        })
    }
}

/// An application's groups and what it may do in each.
pub type AppGroups = BTreeMap<String, Vec<AppPermission>>;

/// Stored as the names joined by commas, in a fixed order.
fn permissions_text(ps: &[AppPermission]) -> String {
    let mut ps = ps.to_vec();
    ps.sort();
    ps.dedup();
    ps.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(",")
}

fn permissions_of(text: &str) -> Result<Vec<AppPermission>> {
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            AppPermission::parse(p)
                .ok_or_else(|| CatalogError::Corrupt(format!("unknown app permission '{p}'")))
        })
        .collect()
}

/// What a trusted-CA application's certificate must name (DSM's `TrustAnchorSubject`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustSubject {
    /// Attributes of the subject's distinguished name, each by its short name (`CN`, `O`,
    /// `OU`, `C`, `L`, `ST`, `DC`, `Email`) or dotted OID, with its exact value. The
    /// certificate's subject must carry every one.
    DirectoryName(Vec<(String, String)>),
    /// A DNS name the certificate's subject alternative names must hold.
    DnsName(String),
    /// An IP address the certificate's subject alternative names must hold.
    IpAddress(std::net::IpAddr),
}

/// How an application's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertCredential {
    Pinned {
        certificate: Vec<u8>,
    },
    TrustedCa {
        ca_certificate: Vec<u8>,
        subject: TrustSubject,
        /// Revocation is checked against this CRL (DER) when the application has one.
        crl: Option<CrlSource>,
    },
}

/// Where a trusted-CA application's CRL comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrlSource {
    /// Fetched by the daemon and cached until its next update.
    Url(String),
    /// Uploaded with the application (DER).
    Uploaded(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub description: Option<String>,
    pub created_at: i64,
    pub created_by: String,
    pub api_key_hash: Vec<u8>,
    /// The secret sealed with [`secret_context`]; `None` for apps made before version 6 of
    /// the catalog, until their secret is reset.
    pub api_secret_sealed: Option<Vec<u8>>,
    pub enabled: bool,
    pub default_group: Option<String>,
    pub groups: AppGroups,
    /// How the application logs in with a TLS client certificate; `None`: with its API key.
    pub credential: Option<CertCredential>,
    /// The pinned or CA certificate's expiry (Unix seconds).
    pub cert_not_after: Option<i64>,
}

/// DSM's `AppAuthType`, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    Secret,
    Certificate,
    TrustedCa,
}

impl AuthType {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::Secret => "secret",
            AuthType::Certificate => "certificate",
            AuthType::TrustedCa => "trusted_ca",
        }
    }
}

impl App {
    pub fn auth_type(&self) -> AuthType {
        match &self.credential {
            None => AuthType::Secret,
            Some(CertCredential::Pinned { .. }) => AuthType::Certificate,
            Some(CertCredential::TrustedCa { .. }) => AuthType::TrustedCa,
        }
    }
}

/// The sealing context of an application's secret: a sealed secret opens only as its own.
pub fn secret_context(app_id: &str) -> String {
    format!("app-secret:{app_id}")
}

fn from_row(r: &Row) -> Result<App> {
    Ok(App {
        id: r.get("id"),
        account_id: r.get("account_id"),
        name: r.get("name"),
        description: r.get("description"),
        created_at: r.get("created_at"),
        created_by: r.get("created_by"),
        api_key_hash: r.get("api_key_hash"),
        api_secret_sealed: r.get("api_secret_sealed"),
        enabled: r.get("enabled"),
        default_group: r.get("default_group"),
        groups: AppGroups::new(),
        credential: credential_of(r)?,
        cert_not_after: r.get("cert_not_after"),
    })
}

/// The certificate columns as the credential they store.
fn credential_of(r: &Row) -> Result<Option<CertCredential>> {
    let auth: String = r.get("auth_type");
    let certificate: Option<Vec<u8>> = r.get("certificate");
    let missing = || {
        CatalogError::Corrupt(format!(
            "application with auth_type {auth} has no certificate"
        ))
    };
    Ok(match auth.as_str() {
        "secret" => None,
        "certificate" => Some(CertCredential::Pinned {
            certificate: certificate.ok_or_else(missing)?,
        }),
        "trusted_ca" => {
            let subject: Option<String> = r.get("cert_subject");
            let subject =
                serde_json::from_str(subject.as_deref().unwrap_or_default()).map_err(|e| {
                    CatalogError::Corrupt(format!("an application's cert_subject: {e}"))
                })?;
            let url: Option<String> = r.get("crl_url");
            let uploaded: Option<Vec<u8>> = r.get("crl");
            Some(CertCredential::TrustedCa {
                ca_certificate: certificate.ok_or_else(missing)?,
                subject,
                crl: url
                    .map(CrlSource::Url)
                    .or(uploaded.map(CrlSource::Uploaded)),
            })
        }
        other => {
            return Err(CatalogError::Corrupt(format!(
                "unknown app auth_type '{other}'"
            )));
        }
    })
}

/// The certificate columns of a credential: auth_type, certificate, subject, CRL URL, CRL.
type CertColumns = (
    &'static str,
    Option<Vec<u8>>,
    Option<String>,
    Option<String>,
    Option<Vec<u8>>,
);

fn columns_of(a: &App) -> CertColumns {
    let auth = a.auth_type().as_str();
    match &a.credential {
        None => (auth, None, None, None, None),
        Some(CertCredential::Pinned { certificate }) => {
            (auth, Some(certificate.clone()), None, None, None)
        }
        Some(CertCredential::TrustedCa {
            ca_certificate,
            subject,
            crl,
        }) => (
            auth,
            Some(ca_certificate.clone()),
            Some(serde_json::to_string(subject).expect("a subject serializes")),
            match crl {
                Some(CrlSource::Url(u)) => Some(u.clone()),
                _ => None,
            },
            match crl {
                Some(CrlSource::Uploaded(d)) => Some(d.clone()),
                _ => None,
            },
        ),
    }
}

async fn with_groups(c: &mut Conn, mut app: App) -> Result<App> {
    app.groups = groups_of(c, &app.id).await?;
    Ok(app)
}

pub async fn insert(c: &mut Conn, a: &App) -> Result<()> {
    let cols = columns_of(a);
    db::query(
        "INSERT INTO apps (id, account_id, name, description, created_at, created_by, api_key_hash, api_secret_sealed, enabled, default_group,
                           auth_type, certificate, cert_subject, crl_url, crl, cert_not_after)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&a.id)
    .bind(&a.account_id)
    .bind(&a.name)
    .bind(&a.description)
    .bind(a.created_at)
    .bind(&a.created_by)
    .bind(&a.api_key_hash)
    .bind(&a.api_secret_sealed)
    .bind(a.enabled)
    .bind(&a.default_group)
    .bind(cols.0)
    .bind(cols.1)
    .bind(cols.2)
    .bind(cols.3)
    .bind(cols.4)
    .bind(a.cert_not_after)
    .execute(&mut *c)
    .await?;
    set_groups(c, &a.account_id, &a.id, &a.groups).await
}

pub async fn update(c: &mut Conn, a: &App) -> Result<()> {
    let cols = columns_of(a);
    db::query("UPDATE apps SET name = ?, description = ?, api_key_hash = ?, api_secret_sealed = ?, enabled = ?, default_group = ?,
                   auth_type = ?, certificate = ?, cert_subject = ?, crl_url = ?, crl = ?, cert_not_after = ?
               WHERE id = ? AND account_id = ?")
        .bind(&a.name)
        .bind(&a.description)
        .bind(&a.api_key_hash)
        .bind(&a.api_secret_sealed)
        .bind(a.enabled)
        .bind(&a.default_group)
        .bind(cols.0)
        .bind(cols.1)
        .bind(cols.2)
        .bind(cols.3)
        .bind(cols.4)
        .bind(a.cert_not_after)
        .bind(&a.id)
        .bind(&a.account_id)
        .execute(&mut *c)
        .await?;
    set_groups(c, &a.account_id, &a.id, &a.groups).await
}

/// Only groups of the application's own account are linked.
async fn set_groups(c: &mut Conn, account: &str, app: &str, groups: &AppGroups) -> Result<()> {
    db::query("DELETE FROM app_groups WHERE app_id = ?")
        .bind(app)
        .execute(&mut *c)
        .await?;
    for (g, permissions) in groups {
        db::query(
            "INSERT INTO app_groups (app_id, group_id, permissions) SELECT ?, id, ? FROM groups WHERE id = ? AND account_id = ?",
        )
        .bind(app)
        .bind(permissions_text(permissions))
        .bind(g)
        .bind(account)
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

pub async fn groups_of(c: &mut Conn, app: &str) -> Result<AppGroups> {
    let rows = db::query("SELECT group_id, permissions FROM app_groups WHERE app_id = ?")
        .bind(app)
        .fetch_all(c)
        .await?;
    rows.iter()
        .map(|r| Ok((r.get("group_id"), permissions_of(r.get("permissions"))?)))
        .collect()
}

/// An application of `account`.
pub async fn get(c: &mut Conn, account: &str, id: &str) -> Result<Option<App>> {
    match db::query("SELECT * FROM apps WHERE id = ? AND account_id = ?")
        .bind(id)
        .bind(account)
        .fetch_optional(&mut *c)
        .await?
    {
        Some(r) => Ok(Some(with_groups(c, from_row(&r)?).await?)),
        None => Ok(None),
    }
}

/// The application an API key names, whatever its account (logging in decides the account).
pub async fn get_for_login(c: &mut Conn, id: &str) -> Result<Option<App>> {
    match db::query("SELECT * FROM apps WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut *c)
        .await?
    {
        Some(r) => Ok(Some(with_groups(c, from_row(&r)?).await?)),
        None => Ok(None),
    }
}

pub async fn in_account(c: &mut Conn, account: &str) -> Result<Vec<App>> {
    let rows = db::query("SELECT * FROM apps WHERE account_id = ? ORDER BY name")
        .bind(account)
        .fetch_all(&mut *c)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(with_groups(c, from_row(r)?).await?);
    }
    Ok(out)
}

pub async fn delete(c: &mut Conn, account: &str, id: &str) -> Result<()> {
    db::query("DELETE FROM apps WHERE id = ? AND account_id = ?")
        .bind(id)
        .bind(account)
        .execute(c)
        .await?;
    Ok(())
}

/// An application whose certificate expires soon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiringCert {
    pub app_id: String,
    pub account_id: String,
    pub name: String,
    pub not_after: i64,
}

/// Enabled certificate applications whose certificate expires before `until`, soonest first.
pub async fn certs_expiring(c: &mut Conn, until: i64, limit: i64) -> Result<Vec<ExpiringCert>> {
    let rows = db::query(
        "SELECT id, account_id, name, cert_not_after FROM apps
         WHERE auth_type <> 'secret' AND enabled AND cert_not_after IS NOT NULL AND cert_not_after < ?
         ORDER BY cert_not_after LIMIT ?",
    )
    .bind(until)
    .bind(limit)
    .fetch_all(c)
    .await?;
    Ok(rows
        .iter()
        .map(|r| ExpiringCert {
            app_id: r.get("id"),
            account_id: r.get("account_id"),
            name: r.get("name"),
            not_after: r.get("cert_not_after"),
        })
        .collect())
}

/// Records that the warning of `threshold_days` for this certificate went out; false when
/// it had already (another daemon, an earlier round).
pub async fn cert_notice_once(
    c: &mut Conn,
    app_id: &str,
    threshold_days: i64,
    not_after: i64,
    now: i64,
) -> Result<bool> {
    Ok(db::query(
        "INSERT INTO app_cert_notices (app_id, threshold_days, not_after, sent_at) VALUES (?, ?, ?, ?)
         ON CONFLICT DO NOTHING",
    )
    .bind(app_id)
    .bind(threshold_days)
    .bind(not_after)
    .bind(now)
    .execute(c)
    .await?
    .rows_affected()
        == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_keep_their_names_through_storage() {
        for p in AppPermission::ALL {
            assert_eq!(AppPermission::parse(p.as_str()), Some(p));
        }
        let stored = permissions_text(&[
            AppPermission::Sign,
            AppPermission::Encrypt,
            AppPermission::Sign,
        ]);
        assert_eq!(stored, "ENCRYPT,SIGN");
        assert_eq!(
            permissions_of(&stored).unwrap(),
            vec![AppPermission::Encrypt, AppPermission::Sign]
        );
        assert_eq!(permissions_of("").unwrap(), vec![]);
        assert!(permissions_of("ENCRYPT,FLY").is_err());
    }

    #[test]
    fn every_key_operation_but_appmanageable_needs_its_permission() {
        for op in KeyOp::ALL {
            assert_eq!(
                AppPermission::for_op(op).is_none(),
                op == KeyOp::AppManageable
            );
        }
    }
}
