//! Links between keys (a copy and its source, a rotated key and its replacement) and the
//! escrowed backups of virtual keys.

use crate::catalog::db;

use super::{Conn, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// The target is a copy of the source.
    Copy,
    /// The target replaced the source (rotation).
    Replacement,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub kind: LinkKind,
    pub source: String,
    pub target: String,
    pub target_group: Option<String>,
    pub created_by: String,
    pub created_at: i64,
}

pub async fn add_link(c: &mut Conn, l: &Link) -> Result<()> {
    db::query("INSERT INTO key_links (kind, source_kid, target_kid, target_group, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?)")
        .bind(match l.kind {
            LinkKind::Copy => "copy",
            LinkKind::Replacement => "replacement",
        })
        .bind(&l.source)
        .bind(&l.target)
        .bind(&l.target_group)
        .bind(&l.created_by)
        .bind(l.created_at)
        .execute(c)
        .await?;
    Ok(())
}

/// Every link where `kid` is the source or the target, oldest first.
pub async fn links_of(c: &mut Conn, kid: &str) -> Result<Vec<Link>> {
    let rows =
        db::query("SELECT * FROM key_links WHERE source_kid = ? OR target_kid = ? ORDER BY id")
            .bind(kid)
            .bind(kid)
            .fetch_all(c)
            .await?;
    Ok(rows
        .iter()
        .map(|r| Link {
            kind: if r.get::<&str, _>("kind") == "copy" {
                LinkKind::Copy
            } else {
                LinkKind::Replacement
            },
            source: r.get("source_kid"),
            target: r.get("target_kid"),
            target_group: r.get("target_group"),
            created_by: r.get("created_by"),
            created_at: r.get("created_at"),
        })
        .collect())
}

pub async fn put_escrow(c: &mut Conn, kid: &str, sealed: &[u8], at: i64) -> Result<()> {
    db::query("INSERT INTO escrow_blobs (kid, blob, created_at) VALUES (?, ?, ?) ON CONFLICT (kid) DO UPDATE SET blob = excluded.blob, created_at = excluded.created_at")
        .bind(kid)
        .bind(sealed)
        .bind(at)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn get_escrow(c: &mut Conn, kid: &str) -> Result<Option<Vec<u8>>> {
    Ok(db::query("SELECT blob FROM escrow_blobs WHERE kid = ?")
        .bind(kid)
        .fetch_optional(c)
        .await?
        .map(|r| r.get(0)))
}

/// Whether the key has an escrowed backup (without opening it).
pub async fn has_escrow(c: &mut Conn, kid: &str) -> Result<bool> {
    Ok(db::query("SELECT 1 FROM escrow_blobs WHERE kid = ?")
        .bind(kid)
        .fetch_optional(c)
        .await?
        .is_some())
}
