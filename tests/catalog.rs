//! The catalog on both databases: SQLite's and PostgreSQL's schemas agree; daemons that start
//! together on one PostgreSQL migrate it once; a daemon with another master key writes
//! nothing. These run on a PostgreSQL cluster of their own (Debian's packages, installed by
//! `tests/postgres.sh`), whichever database the rest of the suite uses.

use std::collections::BTreeMap;
use std::str::FromStr;

use keyward::catalog::db::query;
use keyward::catalog::{Backend, Catalog, CatalogError, Location, MasterKey};
use keyward_tests::postgres::{Cluster, create_database};

/// A column as both schemas can state it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Column {
    /// The storage class: integer, text, blob (SQLite's affinities; PostgreSQL's `boolean`
    /// is stored by SQLite as an integer 0/1).
    class: &'static str,
    not_null: bool,
}

type Schema = BTreeMap<String, BTreeMap<String, Column>>;

fn master() -> MasterKey {
    MasterKey::from_bytes([7u8; 32])
}

async fn sqlite_schema() -> Schema {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::open(&dir.path().join("catalog.db"), master())
        .await
        .unwrap();
    let mut c = catalog.conn().await.unwrap();
    let rows = query(
        "SELECT m.name, p.name, upper(p.type), p.\"notnull\", p.pk
         FROM sqlite_master m JOIN pragma_table_info(m.name) p
         WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    let mut schema = Schema::new();
    for r in rows {
        let declared: String = r.get(2);
        let class = match declared.as_str() {
            "INTEGER" | "BIGINT" => "integer",
            "TEXT" => "text",
            "BLOB" => "blob",
            other => panic!("SQLite column type {other} has no PostgreSQL counterpart"),
        };
        let (not_null, pk): (i64, i64) = (r.get(3), r.get(4));
        schema.entry(r.get(0)).or_default().insert(
            r.get(1),
            Column {
                class,
                // A primary key is never NULL in PostgreSQL; SQLite says so only for
                // INTEGER PRIMARY KEY, but the catalog never writes NULL ids.
                not_null: not_null == 1 || pk > 0,
            },
        );
    }
    schema
}

async fn postgres_schema(url: &str) -> Schema {
    let catalog = Catalog::open_at(&Location::from_str(url).unwrap(), master())
        .await
        .unwrap();
    assert_eq!(catalog.backend(), Backend::Postgres);
    let mut c = catalog.conn().await.unwrap();
    let rows = query(
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text
         FROM information_schema.columns WHERE table_schema = current_schema()",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    let mut schema = Schema::new();
    for r in rows {
        let table: String = r.get(0);
        let column: String = r.get(1);
        // `seq` stands for SQLite's implicit rowid, in the tables listed by insertion order.
        if column == "seq" && ["workflow_runs", "hsm_ops", "outbox"].contains(&table.as_str()) {
            continue;
        }
        let data_type: String = r.get(2);
        let class = match data_type.as_str() {
            "bigint" | "boolean" => "integer",
            "text" => "text",
            "bytea" => "blob",
            other => panic!("PostgreSQL column {table}.{column} has type {other}"),
        };
        let nullable: String = r.get(3);
        schema.entry(table).or_default().insert(
            column,
            Column {
                class,
                not_null: nullable == "NO",
            },
        );
    }
    drop(c);
    catalog.close().await;
    schema
}

/// Named indexes (those a migration creates; not the ones behind keys and UNIQUE).
async fn sqlite_indexes() -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let catalog = Catalog::open(&dir.path().join("catalog.db"), master())
        .await
        .unwrap();
    let mut c = catalog.conn().await.unwrap();
    let mut names: Vec<String> =
        query("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
            .fetch_all(&mut c)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
    names.sort();
    names
}

async fn postgres_indexes(url: &str) -> Vec<String> {
    let catalog = Catalog::open_at(&Location::from_str(url).unwrap(), master())
        .await
        .unwrap();
    let mut c = catalog.conn().await.unwrap();
    let mut names: Vec<String> = query(
        "SELECT i.indexname::text FROM pg_indexes i
         WHERE i.schemaname = current_schema()
           AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conname = i.indexname)",
    )
    .fetch_all(&mut c)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect();
    names.sort();
    drop(c);
    catalog.close().await;
    names
}

#[tokio::test]
async fn both_schemas_agree_table_by_table_column_by_column() {
    let pg = Cluster::primary();
    let url = create_database(&pg.admin_url()).await;
    let sqlite = sqlite_schema().await;
    let postgres = postgres_schema(&url).await;
    assert!(sqlite.len() > 20, "the catalog's tables were read");
    assert_eq!(
        sqlite.keys().collect::<Vec<_>>(),
        postgres.keys().collect::<Vec<_>>(),
        "the same tables"
    );
    for (table, columns) in &sqlite {
        let other = &postgres[table];
        assert_eq!(
            columns.keys().collect::<Vec<_>>(),
            other.keys().collect::<Vec<_>>(),
            "the columns of {table}"
        );
        for (name, column) in columns {
            assert_eq!(column, &other[name], "{table}.{name}");
        }
    }
    assert_eq!(sqlite_indexes().await, postgres_indexes(&url).await);
}

#[tokio::test]
async fn daemons_starting_together_migrate_a_new_database_once() {
    let pg = Cluster::primary();
    let url = create_database(&pg.admin_url()).await;
    let location = Location::from_str(&url).unwrap();
    let opened = futures_join(
        (0..4)
            .map(|_| {
                let location = location.clone();
                tokio::spawn(async move { Catalog::open_at(&location, master()).await })
            })
            .collect(),
    )
    .await;
    for catalog in &opened {
        assert!(catalog.is_ok(), "{:?}", catalog.as_ref().err());
    }
    let catalog = opened.into_iter().next().unwrap().unwrap();
    let mut c = catalog.conn().await.unwrap();
    let migrations: i64 = query("SELECT COUNT(*) FROM schema_migrations")
        .fetch_one(&mut c)
        .await
        .unwrap()
        .get(0);
    let checks: i64 = query("SELECT COUNT(*) FROM catalog_meta")
        .fetch_one(&mut c)
        .await
        .unwrap()
        .get(0);
    let list = keyward::catalog::migrations(Backend::Postgres);
    assert_eq!(
        (migrations, checks),
        (list.len() as i64, 1),
        "each migration applied once, one master key check"
    );
    assert_eq!(catalog.version().await.unwrap(), list.last().unwrap().0);
}

#[tokio::test]
async fn a_daemon_with_another_master_key_writes_nothing_to_a_new_or_existing_catalog() {
    let pg = Cluster::primary();
    let url = create_database(&pg.admin_url()).await;
    let location = Location::from_str(&url).unwrap();
    let first = Catalog::open_at(&location, master()).await.unwrap();
    first.close().await;
    let other = MasterKey::from_bytes([9u8; 32]);
    match Catalog::open_at(&location, other).await {
        Err(CatalogError::WrongMasterKey) => {}
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("another master key opened the catalog"),
    }
}

async fn futures_join<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// An SQLite catalog moved to PostgreSQL with `catalog copy`: a daemon on the copy, with the
/// same master key, signs the same people in and reads every key, group, application,
/// policy, audit event and sealed secret.
#[tokio::test]
async fn a_catalog_copied_from_sqlite_to_postgres_is_whole_and_its_secrets_open() {
    use keyward_tests::api::{ADMIN_EMAIL, ADMIN_PASSWORD, TestDaemon, b64, log_entries};
    use reqwest::Method;
    use serde_json::json;

    let (cluster, admin) = match keyward_tests::postgres::admin_url() {
        Some(url) => (None, url),
        None => {
            let c = Cluster::primary();
            let url = c.admin_url();
            (Some(c), url)
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Location::Sqlite(dir.path().join("catalog.db"));
    let d = TestDaemon::start_configured(dir.path(), |c| c.database = Some(sqlite.clone()))
        .await
        .unwrap();
    let admin_api = d.bootstrap().await;
    let group = admin_api
        .create_group("payments", json!({"description": "moved"}))
        .await;
    let (app_id, api_key) = admin_api.create_app("billing", &[group.as_str()]).await;
    let material = keyward_crypto::random_bytes(32);
    let imported = admin_api
        .ok(
            Method::PUT,
            "/crypto/v1/keys",
            Some(
                json!({"name": "imported", "group_id": group, "obj_type": "AES",
                "value": b64(&material), "key_ops": ["ENCRYPT", "DECRYPT", "EXPORT"],
                "rotation_policy": {"interval_days": 30}, "custom_metadata": {"team": "billing"}}),
            ),
        )
        .await;
    let kid = imported["kid"].as_str().unwrap().to_string();
    let app = d.login_app(&api_key).await;
    let sealed = app
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/encrypt"),
            Some(json!({"alg": "AES", "mode": "GCM", "plain": b64(b"before the move")})),
        )
        .await;
    let logs_before = log_entries(
        &admin_api
            .ok(Method::GET, "/sys/v1/logs?size=1000", None)
            .await,
    )
    .len();
    d.stop().await;

    let master = MasterKey::load_or_create(&dir.path().join("master.key")).unwrap();
    let url = create_database(&admin).await;
    let postgres = Location::from_str(&url).unwrap();
    let from = Catalog::open_at(&sqlite, master.clone()).await.unwrap();
    let to = Catalog::open_at(&postgres, master.clone()).await.unwrap();
    let counts = keyward::catalog::copy::copy(&from, &to).await.unwrap();
    assert_eq!(counts["sobjects"], 1);
    assert_eq!(counts["apps"], 1);
    assert_eq!(counts["audit_events"] as usize, logs_before);
    // A second copy into the same database is refused: it is no longer empty.
    assert!(matches!(
        keyward::catalog::copy::copy(&from, &to).await,
        Err(keyward::catalog::copy::CopyError::NotEmpty { .. })
    ));
    from.close().await;
    to.close().await;

    let moved = TestDaemon::start_configured(dir.path(), |c| c.database = Some(postgres))
        .await
        .unwrap();
    let admin_api = moved.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let key = admin_api
        .ok(Method::GET, &format!("/crypto/v1/keys/{kid}"), None)
        .await;
    assert_eq!(key["custom_metadata"]["team"], "billing");
    assert_eq!(key["rotation_policy"]["interval_days"], 30);
    let app = moved.login_app(&api_key).await;
    let opened = app
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/decrypt"),
            Some(json!({"alg": "AES", "mode": "GCM", "cipher": sealed["cipher"], "iv": sealed["iv"], "tag": sealed["tag"]})),
        )
        .await;
    assert_eq!(
        opened["plain"],
        b64(b"before the move"),
        "the sealed material opens"
    );
    let credential = admin_api
        .ok(
            Method::GET,
            &format!("/sys/v1/apps/{app_id}/credential"),
            None,
        )
        .await;
    assert_eq!(
        credential["credential"]["api_key"],
        api_key.as_str(),
        "the sealed API secret opens"
    );
    let groups = admin_api.ok(Method::GET, "/sys/v1/groups", None).await;
    assert_eq!(groups[0]["description"], "moved");
    let logs_after = log_entries(
        &admin_api
            .ok(Method::GET, "/sys/v1/logs?size=1000", None)
            .await,
    );
    assert!(logs_after.len() >= logs_before, "the audit log came along");
    moved.stop().await;
    drop(cluster);
}
