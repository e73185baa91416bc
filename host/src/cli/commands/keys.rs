//! `keyward keys`: generate, import, copy, rotate, the lifecycle, rotation policies, and the
//! cryptographic operations (which only applications may do).

use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::Subcommand;
use keyward::keys::material_file::{self, MaterialFormat};
use serde_json::{Value, json};

use super::{json_arg, list_arg, query, read_file, seg};
use crate::cli::output::{Columns, Shown};
use crate::cli::{CliError, Ctx, Paging, local};

const KEY: Columns = &[
    ("KID", "/kid"),
    ("NAME", "/name"),
    ("TYPE", "/obj_type"),
    ("SIZE", "/key_size"),
    ("STATE", "/state"),
    ("GROUP", "/group_id"),
    ("EXTERNAL", "/external/id/label"),
    ("VERSION", "/external/id/version"),
    ("SOURCE", "/external/source"),
];

const KEY_INFO: Columns = &[
    ("kid", "/kid"),
    ("name", "/name"),
    ("group", "/group_id"),
    ("type", "/obj_type"),
    ("size", "/key_size"),
    ("curve", "/elliptic_curve"),
    ("state", "/state"),
    ("enabled", "/enabled"),
    ("operations", "/key_ops"),
    ("created", "/created_at"),
    ("created by", "/creator"),
    ("deactivation", "/deactivation_date"),
    ("external key", "/external/id/key_id"),
    ("external version", "/external/id/version"),
    ("external source", "/external/source"),
    ("external state", "/external/state"),
    ("rotation policy", "/rotation_policy"),
    ("next rotation", "/scheduled_rotation"),
];

#[derive(Subcommand, Debug)]
pub enum KeyCmd {
    /// Keys you can see, across your groups (or one).
    #[command(after_help = "Example:\n  keyward keys list --group 3f0c… -o json")]
    List {
        #[arg(long)]
        group: Option<String>,
        /// The exact name.
        #[arg(long)]
        name: Option<String>,
        /// Part of the name, in any case.
        #[arg(long)]
        name_contains: Option<String>,
        /// AES, RSA or EC.
        #[arg(long = "type")]
        obj_type: Option<String>,
        /// PreActive, Active, Deactivated, Compromised or Destroyed.
        #[arg(long)]
        state: Option<String>,
        /// `true`: only keys held by an HSM; `false`: only Keyward-held ones.
        #[arg(long)]
        external: Option<bool>,
        #[command(flatten)]
        paging: Paging,
    },
    /// One key.
    #[command(after_help = "Example:\n  keyward keys show 9a1e…")]
    Show { kid: String },
    /// Generate a key (in the group's HSM when the group is linked).
    #[command(
        after_help = "Example:\n  keyward keys generate --name orders --type AES --size 256 --group 3f0c…"
    )]
    Generate {
        #[arg(long)]
        name: String,
        /// AES, RSA or EC.
        #[arg(long = "type")]
        obj_type: String,
        #[arg(long)]
        size: Option<u32>,
        /// NistP256, NistP384 or NistP521.
        #[arg(long)]
        curve: Option<String>,
        #[command(flatten)]
        fields: KeyFields,
    },
    /// Import key material from a file: AES as the key bytes, RSA and EC as PKCS#8, PKCS#1
    /// or SEC1; the file raw, base64, hex, PEM or DER. With `--kek`, the file holds the
    /// material wrapped by that key-encryption key (unwrapped in the daemon, by
    /// applications of the KEK's group only).
    #[command(
        after_help = "Examples:\n  keyward keys import --name legacy --type RSA --file legacy.pem --group 3f0c…\n  keyward keys import --name shared --type AES --file shared.b64 --format base64\n  keyward keys import --name wrapped --type AES --file wrapped.bin --kek 9a1e…"
    )]
    Import {
        #[arg(long)]
        name: String,
        #[arg(long = "type")]
        obj_type: String,
        /// The material (`-`: stdin).
        #[arg(long)]
        file: PathBuf,
        /// How the file holds it: auto (PEM, hex, base64, else raw bytes), raw, der, base64,
        /// hex or pem.
        #[arg(long, default_value = "auto")]
        format: MaterialFormat,
        /// The file is wrapped by this key-encryption key (kid).
        #[arg(long)]
        kek: Option<String>,
        /// How it is wrapped: KW or KWP (AES KEK, default KWP), or an OAEP mode (RSA KEK).
        #[arg(long, requires = "kek")]
        wrapping_mode: Option<String>,
        #[command(flatten)]
        fields: KeyFields,
    },
    /// Set or remove tags (custom metadata) of a key, leaving the others as they are.
    #[command(
        after_help = "Example:\n  keyward keys tag 9a1e… --set team=payments --set env=prod --remove owner"
    )]
    Tag {
        kid: String,
        /// A tag to set, `name=value` (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// A tag to remove (repeatable).
        #[arg(long = "remove", value_name = "NAME")]
        remove: Vec<String>,
    },
    /// Copy a key into another group (BYOK into a linked group).
    #[command(after_help = "Example:\n  keyward keys copy 9a1e… --group 77b2… --name orders-azure")]
    Copy {
        kid: String,
        #[arg(long)]
        group: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        ops: Option<String>,
    },
    /// Rotate keys; prints each new key id. Several keys rotate one after the other, with a
    /// progress bar.
    #[command(
        after_help = "Examples:\n  keyward keys rotate 9a1e… --copies all\n  keyward keys rotate 9a1e… 4c2d… 8f00… --deactivate-old"
    )]
    Rotate {
        #[arg(required = true)]
        kids: Vec<String>,
        /// Linked copies that rotate along: `all` (every external one) or kids, comma-separated.
        #[arg(long)]
        copies: Option<String>,
        /// A key of an external key manager takes this catalog key's material.
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        deactivate_old: bool,
    },
    /// A key's rotations.
    #[command(after_help = "Example:\n  keyward keys rotations 9a1e…")]
    Rotations { kid: String },
    /// Show, set (`--set '{"interval_days": 90}'` or `--set @file`) or remove a key's rotation policy.
    #[command(
        after_help = "Example:\n  keyward keys rotation-policy 9a1e… --set '{\"interval_days\": 90, \"rotate_copied_keys\": \"all_external\"}'"
    )]
    RotationPolicy {
        kid: String,
        #[arg(long, conflicts_with = "remove")]
        set: Option<String>,
        #[arg(long)]
        remove: bool,
    },
    /// Deactivate a key (it can still decrypt and verify).
    #[command(after_help = "Example:\n  keyward keys deactivate 9a1e…")]
    Deactivate { kid: String },
    /// Soft delete a key in its HSM (recoverable until the HSM purges it).
    #[command(after_help = "Example:\n  keyward keys soft-delete 9a1e… --yes")]
    SoftDelete {
        kid: String,
        /// Confirm.
        #[arg(long)]
        yes: bool,
    },
    /// Recover a soft-deleted key.
    #[command(after_help = "Example:\n  keyward keys recover 9a1e…")]
    Recover { kid: String },
    /// Restore a purged key into its HSM from Keyward's escrow.
    #[command(after_help = "Example:\n  keyward keys restore 9a1e…")]
    Restore { kid: String },
    /// Purge a soft-deleted key's material from its HSM.
    #[command(after_help = "Example:\n  keyward keys purge 9a1e… --yes")]
    Purge {
        kid: String,
        #[arg(long)]
        yes: bool,
    },
    /// Delete a key from the catalog.
    #[command(after_help = "Example:\n  keyward keys delete 9a1e…")]
    Delete { kid: String },
    /// Write the key as an Azure BYOK transfer file (`.byok`) for a key-exchange key, for
    /// `az keyvault key import --byok-file`. An export: the key must permit EXPORT.
    #[command(
        after_help = "Examples:\n  keyward keys byok 9a1e… --kek-id https://contoso.vault.azure.net/keys/KEK/0a1b… --kek-public-key kek.pem --out key.byok\n  keyward keys byok 9a1e… --kek 5c2d… --out key.byok"
    )]
    Byok {
        kid: String,
        /// The key-exchange key's Azure identifier, with its version.
        #[arg(long, requires = "kek_public_key", conflicts_with = "kek")]
        kek_id: Option<String>,
        /// Its public key: a PEM file (`az keyvault key download --encoding PEM`).
        #[arg(long)]
        kek_public_key: Option<PathBuf>,
        /// Or the key-exchange key as a key of a linked group (its id).
        #[arg(long)]
        kek: Option<String>,
        /// Where to write the transfer file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Encrypt (applications): prints cipher, iv and tag, base64.
    #[command(
        after_help = "Example:\n  keyward keys encrypt 9a1e… --in secret.txt -o json > sealed.json"
    )]
    Encrypt {
        kid: String,
        /// The plaintext file (`-`: stdin).
        #[arg(long = "in")]
        input: PathBuf,
        /// AES, or RSA.
        #[arg(long, default_value = "AES")]
        alg: String,
        #[arg(long)]
        mode: Option<String>,
    },
    /// Decrypt (applications) what `encrypt -o json` printed.
    #[command(
        after_help = "Example:\n  keyward keys decrypt 9a1e… --in sealed.json --out secret.txt"
    )]
    Decrypt {
        kid: String,
        /// The JSON `encrypt -o json` printed (`-`: stdin).
        #[arg(long = "in")]
        input: PathBuf,
        /// Write the plaintext here (else it is printed, base64, as `plain`).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Sign a file (applications).
    #[command(after_help = "Example:\n  keyward keys sign 9a1e… --in release.tar --hash SHA256")]
    Sign {
        kid: String,
        #[arg(long = "in")]
        input: PathBuf,
        #[arg(long, default_value = "SHA256")]
        hash: String,
    },
    /// Verify a signature (applications).
    #[command(
        after_help = "Example:\n  keyward keys verify 9a1e… --in release.tar --signature \"$SIG\""
    )]
    Verify {
        kid: String,
        #[arg(long = "in")]
        input: PathBuf,
        /// Base64, as `sign` printed it.
        #[arg(long)]
        signature: String,
        #[arg(long, default_value = "SHA256")]
        hash: String,
    },
}

/// What generate and import set beyond the key itself.
#[derive(clap::Args, Debug)]
pub struct KeyFields {
    #[arg(long)]
    group: Option<String>,
    /// Operations, comma-separated (default: every one of the type but EXPORT).
    #[arg(long)]
    ops: Option<String>,
    #[arg(long)]
    description: Option<String>,
    /// A tag, `name=value` (repeatable).
    #[arg(long = "tag", value_name = "NAME=VALUE")]
    tags: Vec<String>,
    /// When the key becomes active: `2027-01-31`, `2027-01-31T08:00:00Z` or `20270131T080000Z`.
    #[arg(long)]
    activation: Option<String>,
    /// When the key is deactivated (same forms).
    #[arg(long)]
    deactivation: Option<String>,
    /// In a group linked to an HSM: the key's name there (letters, digits and dashes).
    #[arg(long)]
    azure_name: Option<String>,
}

impl KeyFields {
    /// The fields as the request body has them.
    fn body(self) -> Result<Value, CliError> {
        Ok(json!({
            "group_id": self.group,
            "key_ops": ops(self.ops.as_deref()),
            "description": self.description,
            "custom_metadata": if self.tags.is_empty() { None } else { Some(tags(&self.tags)?) },
            "activation_date": self.activation.as_deref().map(time_arg).transpose()?,
            "deactivation_date": self.deactivation.as_deref().map(time_arg).transpose()?,
            "external_name": self.azure_name,
        }))
    }
}

/// `name=value` pairs as a map.
fn tags(pairs: &[String]) -> Result<serde_json::Map<String, Value>, CliError> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), json!(v))),
            _ => Err(local(format!("'{p}': a tag is name=value"))),
        })
        .collect()
}

/// A time as the API takes it (DSM's `YYYYMMDDTHHMMSSZ`), from that form, RFC 3339 or a date.
fn time_arg(text: &str) -> Result<String, CliError> {
    if keyward::time::parse_dsm(text).is_ok() {
        return Ok(text.to_string());
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(keyward::time::format_dsm(t.timestamp()));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let midnight = d.and_hms_opt(0, 0, 0).expect("midnight exists");
        return Ok(keyward::time::format_dsm(midnight.and_utc().timestamp()));
    }
    Err(local(format!(
        "'{text}' is not a time: give 2027-01-31, 2027-01-31T08:00:00Z or 20270131T080000Z"
    )))
}

/// Merges `extra` (an object) into `body`, leaving out nulls.
fn with(mut body: Value, extra: Value) -> Value {
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e.into_iter().filter(|(_, v)| !v.is_null()));
    }
    body
}

fn key_path(kid: &str, rest: &str) -> String {
    format!("/crypto/v1/keys/{}{rest}", seg(kid))
}

fn ops(text: Option<&str>) -> Option<Vec<String>> {
    text.map(|t| list_arg(t).into_iter().map(|o| o.to_uppercase()).collect())
}

/// The material of a file to send and its `value_format` (`keys::material_file`).
fn material(
    path: &std::path::Path,
    format: MaterialFormat,
) -> Result<(String, &'static str), CliError> {
    let bytes = read_file(path)?;
    material_file::encode(&bytes, format).map_err(|e| local(format!("{}: {e}", path.display())))
}

impl KeyCmd {
    pub async fn run(self, ctx: &Ctx) -> Result<Shown, CliError> {
        match self {
            KeyCmd::List {
                group,
                name,
                name_contains,
                obj_type,
                state,
                external,
                paging,
            } => Ok(Shown::new(
                ctx.list(
                    &format!(
                        "/crypto/v1/keys{}",
                        query(&[
                            ("group_id", group),
                            ("name", name),
                            ("name_contains", name_contains),
                            ("obj_type", obj_type.map(|t| t.to_uppercase())),
                            ("state", state),
                            ("external", external.map(|e| e.to_string())),
                        ])
                    ),
                    &paging,
                    1000,
                )
                .await?,
                KEY,
            )),
            KeyCmd::Show { kid } => Ok(Shown::new(ctx.get(&key_path(&kid, "")).await?, KEY_INFO)),
            KeyCmd::Generate {
                name,
                obj_type,
                size,
                curve,
                fields,
            } => Ok(Shown::new(
                ctx.post(
                    "/crypto/v1/keys",
                    with(
                        json!({"name": name, "obj_type": obj_type.to_uppercase(), "key_size": size,
                            "elliptic_curve": curve}),
                        fields.body()?,
                    ),
                )
                .await?,
                KEY_INFO,
            )),
            KeyCmd::Import {
                name,
                obj_type,
                file,
                format,
                kek,
                wrapping_mode,
                fields,
            } => {
                // Wrapped material is opaque bytes, never PEM: only the file's encoding is
                // undone.
                if kek.is_some() && format == MaterialFormat::Pem {
                    return Err(local(
                        "wrapped material is not PEM: give raw, base64 or hex",
                    ));
                }
                let (value, value_format) = material(&file, format)?;
                Ok(Shown::new(
                    ctx.put(
                        "/crypto/v1/keys",
                        with(
                            json!({"name": name, "obj_type": obj_type.to_uppercase(), "value": value,
                                "value_format": value_format,
                                "wrapped_by": kek.map(|k| json!({"kid": k})),
                                "wrapping_mode": wrapping_mode.map(|m| m.to_uppercase())}),
                            fields.body()?,
                        ),
                    )
                    .await?,
                    KEY_INFO,
                ))
            }
            KeyCmd::Tag { kid, set, remove } => {
                if set.is_empty() && remove.is_empty() {
                    return Err(local("give --set name=value or --remove name"));
                }
                let key = ctx
                    .patch(
                        &key_path(&kid, ""),
                        json!({"custom_metadata_edits": {"set": tags(&set)?, "remove": remove}}),
                    )
                    .await?;
                Ok(Shown::object(json!({
                    "kid": key["kid"],
                    "custom_metadata": key["custom_metadata"],
                })))
            }
            KeyCmd::Copy {
                kid,
                group,
                name,
                ops: o,
            } => Ok(Shown::new(
                ctx.post(
                    "/crypto/v1/keys/copy",
                    json!({"key": {"kid": kid}, "group_id": group, "name": name,
                        "key_ops": ops(o.as_deref())}),
                )
                .await?,
                KEY_INFO,
            )),
            KeyCmd::Rotate {
                kids,
                copies,
                from,
                deactivate_old,
            } => rotate(ctx, kids, copies, from, deactivate_old).await,
            KeyCmd::Rotations { kid } => Ok(Shown::new(
                ctx.get(&key_path(&kid, "/rotations")).await?,
                &[],
            )),
            KeyCmd::RotationPolicy { kid, set, remove } => {
                let policy = match (set, remove) {
                    (Some(p), _) => Some(json_arg("--set", &p)?),
                    (None, true) => Some(json!("remove")),
                    (None, false) => None,
                };
                let key = match policy {
                    Some(p) => ctx.patch(&key_path(&kid, ""), json!({"rotation_policy": p})).await?,
                    None => ctx.get(&key_path(&kid, "")).await?,
                };
                Ok(Shown::object(json!({
                    "kid": key["kid"],
                    "rotation_policy": key["rotation_policy"],
                    "scheduled_rotation": key["scheduled_rotation"],
                    "rotation_status": key["rotation_status"],
                })))
            }
            KeyCmd::Deactivate { kid } => Ok(Shown::new(
                ctx.post(&key_path(&kid, "/deactivate"), json!({})).await?,
                KEY_INFO,
            )),
            KeyCmd::SoftDelete { kid, yes } => {
                confirm(yes, "soft delete the key in its HSM")?;
                Ok(Shown::new(
                    ctx.post(&key_path(&kid, "/schedule_deletion"), json!({"confirm": true}))
                        .await?,
                    KEY_INFO,
                ))
            }
            KeyCmd::Recover { kid } => Ok(Shown::new(
                ctx.post(&key_path(&kid, "/recover"), json!({})).await?,
                KEY_INFO,
            )),
            KeyCmd::Restore { kid } => Ok(Shown::new(
                ctx.post(&key_path(&kid, "/restore"), json!({})).await?,
                KEY_INFO,
            )),
            KeyCmd::Purge { kid, yes } => {
                confirm(yes, "purge the key's material from its HSM")?;
                Ok(Shown::new(
                    ctx.post(&key_path(&kid, "/delete_key_material"), json!({"confirm": true}))
                        .await?,
                    KEY_INFO,
                ))
            }
            KeyCmd::Byok {
                kid,
                kek_id,
                kek_public_key,
                kek,
                out,
            } => {
                let body = match (kek_id, kek_public_key, kek) {
                    (Some(id), Some(path), None) => {
                        let pem = String::from_utf8(read_file(&path)?).map_err(|_| {
                            local(format!("{}: not a PEM file", path.display()))
                        })?;
                        json!({"kek_id": id, "kek_public_key": pem})
                    }
                    (None, None, Some(k)) => json!({"kek": {"kid": k}}),
                    _ => {
                        return Err(local(
                            "give --kek, or --kek-id with --kek-public-key".to_string(),
                        ));
                    }
                };
                let file = ctx.post(&key_path(&kid, "/byok"), body).await?;
                let text = serde_json::to_string_pretty(&file).expect("JSON");
                std::fs::write(&out, text).map_err(|e| local(format!("{}: {e}", out.display())))?;
                Ok(Shown::object(
                    json!({"kid": kid, "kek": file["header"]["kid"], "written": out}),
                ))
            }
            KeyCmd::Delete { kid } => {
                ctx.delete(&key_path(&kid, "")).await?;
                Ok(Shown::object(json!({"kid": kid, "deleted": true})))
            }
            KeyCmd::Encrypt {
                kid,
                input,
                alg,
                mode,
            } => {
                let plain = STANDARD.encode(read_file(&input)?);
                Ok(Shown::object(
                    ctx.post(
                        &key_path(&kid, "/encrypt"),
                        json!({"alg": alg.to_uppercase(), "plain": plain, "mode": mode}),
                    )
                    .await?,
                ))
            }
            KeyCmd::Decrypt { kid, input, out } => {
                let sealed = super::json_arg("--in", &format!("@{}", input.display()))?;
                let mut body = json!({"alg": sealed.get("alg").cloned().unwrap_or(json!("AES"))});
                for field in ["cipher", "iv", "tag", "mode", "ad"] {
                    if let Some(v) = sealed.get(field).filter(|v| !v.is_null()) {
                        body[field] = v.clone();
                    }
                }
                let answer = ctx.post(&key_path(&kid, "/decrypt"), body).await?;
                match out {
                    Some(path) => {
                        let plain = STANDARD
                            .decode(answer["plain"].as_str().unwrap_or_default())
                            .map_err(|e| local(format!("the daemon's plain is not base64: {e}")))?;
                        std::fs::write(&path, plain)
                            .map_err(|e| local(format!("{}: {e}", path.display())))?;
                        Ok(Shown::object(json!({"kid": answer["kid"], "written": path})))
                    }
                    None => Ok(Shown::object(answer)),
                }
            }
            KeyCmd::Sign { kid, input, hash } => Ok(Shown::object(
                ctx.post(
                    &key_path(&kid, "/sign"),
                    json!({"hash_alg": hash.to_uppercase(), "data": STANDARD.encode(read_file(&input)?)}),
                )
                .await?,
            )),
            KeyCmd::Verify {
                kid,
                input,
                signature,
                hash,
            } => {
                let answer = ctx
                    .post(
                        &key_path(&kid, "/verify"),
                        json!({"hash_alg": hash.to_uppercase(), "data": STANDARD.encode(read_file(&input)?),
                            "signature": signature}),
                    )
                    .await?;
                if answer["result"] != true {
                    return Err(CliError::Failed {
                        message: "the signature does not verify".into(),
                        record: answer,
                    });
                }
                Ok(Shown::object(answer))
            }
        }
    }
}

fn confirm(yes: bool, what: &str) -> Result<(), CliError> {
    if yes {
        Ok(())
    } else {
        Err(local(format!("this would {what}: add --yes to confirm")))
    }
}

async fn rotate(
    ctx: &Ctx,
    kids: Vec<String>,
    copies: Option<String>,
    from: Option<String>,
    deactivate_old: bool,
) -> Result<Shown, CliError> {
    let copies: Option<Value> = copies.map(|c| match c.as_str() {
        "all" | "all_external" => json!("all_external"),
        list => json!({"select": list_arg(list)}),
    });
    let body = json!({
        "rotate_copied_keys": copies,
        "rotate_from": from.map(|f| json!({"kid": f})),
        "deactivate_rotated_key": deactivate_old.then_some(true),
    });
    let bar = if ctx.progress_visible() && kids.len() > 1 {
        indicatif::ProgressBar::new(kids.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} rotated {msg}")
            .expect("a valid template"),
    );
    let mut rotated = Vec::new();
    let mut failed = 0;
    for kid in &kids {
        bar.set_message(kid.clone());
        match ctx.post(&key_path(kid, "/rekey"), body.clone()).await {
            Ok(new) => {
                // The copies' new ids on their own too, so the table shows every one.
                let copies: Vec<Value> = new["rotated_copies"]
                    .as_array()
                    .map(|c| c.iter().map(|c| c["new_kid"].clone()).collect())
                    .unwrap_or_default();
                rotated.push(json!({
                    "kid": kid,
                    "new_kid": new["kid"],
                    "rotated_copies": new["rotated_copies"],
                    "new_copy_kids": copies,
                }))
            }
            // One key's refusal does not stop the others; it is reported with them.
            Err(e) if kids.len() > 1 => {
                failed += 1;
                rotated.push(json!({"kid": kid, "error": e.to_string()}));
            }
            Err(e) => return Err(e),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let value = Value::Array(rotated);
    if failed > 0 {
        return Err(CliError::Failed {
            message: format!("{failed} of {} keys did not rotate", kids.len()),
            record: value,
        });
    }
    Ok(Shown::new(
        value,
        &[
            ("KID", "/kid"),
            ("NEW KID", "/new_kid"),
            ("NEW COPY KIDS", "/new_copy_kids"),
            ("ERROR", "/error"),
        ],
    ))
}
