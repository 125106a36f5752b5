//! The outbox contract between the schema (`migrations/`), the embedded relay
//! (`payment_infra::outbox`) and the Debezium outbox connector
//! (`debezium/*.json`), checked against what really runs: a freshly migrated
//! MariaDB read through `information_schema`, and the relay publishing to the
//! local broker. Either delivery path (embedded relay or Debezium's
//! EventRouter) must give consumers the same topic, key, value and headers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use payment_application::{Commit, OutboxMessage, PaymentRepository as _};
use payment_e2e::kafka;
use payment_infra::mariadb::{MariaDbPaymentRepository, MIGRATOR};
use payment_infra::outbox::{OutboxRelay, RelaySettings};
use serde_json::json;
use sqlx::MySqlPool;
use tokio::sync::Notify;
use uuid::Uuid;

const EVENT_ROUTER: &str = "io.debezium.transforms.outbox.EventRouter";
const STRING_CONVERTER: &str = "org.apache.kafka.connect.storage.StringConverter";
/// MariaDB types Debezium reads as a Connect STRING.
const STRING_TYPES: &[&str] = &[
    "char",
    "varchar",
    "tinytext",
    "text",
    "mediumtext",
    "longtext",
];
/// Types the router accepts for `table.field.event.timestamp`.
const TIMESTAMP_TYPES: &[&str] = &["datetime", "timestamp", "bigint"];

/// One EventRouter transform of one connector config file.
struct Router {
    file: String,
    config: BTreeMap<String, String>,
    /// `transforms.<alias>.`
    prefix: String,
}

/// `field:placement[:alias]` of `table.fields.additional.placement`.
struct Placement {
    field: String,
    placement: String,
    alias: String,
}

impl Router {
    fn setting(&self, key: &str) -> Option<&str> {
        self.config
            .get(&format!("{}{key}", self.prefix))
            .map(String::as_str)
    }

    /// A router setting, or the router's documented default.
    fn field(&self, key: &str, default: &str) -> String {
        self.setting(key).unwrap_or(default).to_owned()
    }

    fn placements(&self) -> Vec<Placement> {
        self.setting("table.fields.additional.placement")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let parts: Vec<&str> = entry.split(':').collect();
                assert!(
                    (2..=3).contains(&parts.len()),
                    "{}: placement entry {entry:?} is not field:placement[:alias]",
                    self.file
                );
                Placement {
                    field: parts[0].to_owned(),
                    placement: parts[1].to_owned(),
                    alias: parts.get(2).unwrap_or(&parts[0]).to_string(),
                }
            })
            .collect()
    }

    /// The outbox table's name, from `table.include.list` (`db.table`).
    fn table(&self) -> String {
        let list = self
            .config
            .get("table.include.list")
            .unwrap_or_else(|| panic!("{}: no table.include.list", self.file));
        let tables: Vec<&str> = list.split(',').map(str::trim).collect();
        assert_eq!(
            tables.len(),
            1,
            "{}: an outbox connector captures exactly one table",
            self.file
        );
        tables[0].rsplit('.').next().unwrap().to_owned()
    }
}

fn debezium_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../debezium")
}

/// Every EventRouter transform in `debezium/*.json`. The files are what
/// `PUT /connectors/NAME/config` takes: a flat object of string values.
fn routers() -> Vec<Router> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(debezium_dir())
        .expect("debezium/ exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    let mut routers = Vec::new();
    for path in files {
        let file = format!("debezium/{}", path.file_name().unwrap().to_string_lossy());
        let text = std::fs::read_to_string(&path).unwrap();
        let config: BTreeMap<String, String> = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{file} is not a flat JSON object of strings: {e}"));
        let aliases = config.get("transforms").cloned().unwrap_or_default();
        for alias in aliases.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            let prefix = format!("transforms.{alias}.");
            if config.get(&format!("{prefix}type")).map(String::as_str) == Some(EVENT_ROUTER) {
                routers.push(Router {
                    file: file.clone(),
                    config: config.clone(),
                    prefix,
                });
            }
        }
    }
    assert!(
        !routers.is_empty(),
        "no connector in debezium/ uses the {EVENT_ROUTER} transform"
    );
    routers
}

#[derive(Debug)]
struct Column {
    data_type: String,
    nullable: bool,
}

/// The columns of `table` as the migrations left it.
async fn columns(pool: &MySqlPool, table: &str) -> HashMap<String, Column> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR), CAST(IS_NULLABLE AS CHAR) \
         FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(!rows.is_empty(), "the migrations create no table {table}");
    rows.into_iter()
        .map(|(name, data_type, nullable)| {
            (
                name,
                Column {
                    data_type: data_type.to_lowercase(),
                    nullable: nullable == "YES",
                },
            )
        })
        .collect()
}

fn quoted(identifier: &str) -> String {
    format!("`{}`", identifier.replace('`', "``"))
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn every_outbox_field_the_router_names_is_a_column_of_a_type_it_can_carry(pool: MySqlPool) {
    for router in routers() {
        let file = &router.file;
        let table = router.table();
        let columns = columns(&pool, &table).await;
        let check = |role: &str, name: &str, types: &[&str], not_null: bool| {
            let column = columns.get(name).unwrap_or_else(|| {
                let mut known: Vec<_> = columns.keys().collect();
                known.sort();
                panic!("{file}: {role} field {name:?} is not a column of {table} {known:?}")
            });
            assert!(
                types.contains(&column.data_type.as_str()),
                "{file}: {role} field {table}.{name} is {}, not one of {types:?}",
                column.data_type
            );
            assert!(
                !not_null || !column.nullable,
                "{file}: {role} field {table}.{name} must be NOT NULL"
            );
        };
        // Debezium's defaults where the config names none. Topic, key, id
        // and value are never null: the relay reads them as such.
        check(
            "event id",
            &router.field("table.field.event.id", "id"),
            STRING_TYPES,
            true,
        );
        check(
            "event key",
            &router.field("table.field.event.key", "aggregateid"),
            STRING_TYPES,
            true,
        );
        check(
            "payload",
            &router.field("table.field.event.payload", "payload"),
            STRING_TYPES,
            true,
        );
        check(
            "route by",
            &router.field("route.by.field", "aggregatetype"),
            STRING_TYPES,
            true,
        );
        if let Some(name) = router.setting("table.field.event.type") {
            check("event type", name, STRING_TYPES, true);
        }
        if let Some(name) = router.setting("table.field.event.timestamp") {
            check("event timestamp", name, TIMESTAMP_TYPES, true);
        }
        for placement in router.placements() {
            let role = format!("additional ({}:{})", placement.placement, placement.alias);
            check(&role, &placement.field, STRING_TYPES, false);
        }
    }
}

/// The settings that make the router's record what the relay sends: topic =
/// the route-by column as is, key and value as text, no other headers, no
/// tombstones for the deletes that follow each insert.
#[test]
fn the_router_is_set_to_publish_records_shaped_like_the_relays() {
    for router in routers() {
        let file = &router.file;
        let expected = [
            ("key.converter".to_owned(), STRING_CONVERTER),
            ("value.converter".to_owned(), STRING_CONVERTER),
            ("extended.headers.enabled".to_owned(), "false"),
            ("tombstones.on.delete".to_owned(), "false"),
            (
                format!("{}route.topic.replacement", router.prefix),
                "${routedByValue}",
            ),
            (
                format!("{}table.expand.json.payload", router.prefix),
                "false",
            ),
        ];
        for (key, value) in expected {
            assert_eq!(
                router.config.get(&key).map(String::as_str),
                Some(value),
                "{file}: {key}"
            );
        }
        for placement in router.placements() {
            assert_eq!(
                placement.placement, "header",
                "{file}: {} goes to the {}, but the relay writes additional fields only as headers",
                placement.field, placement.placement
            );
        }
    }
}

/// The router's view of every outbox row: column name → value as text, in
/// `seq` order (NULL stays `None`).
async fn rows_as_the_router_reads_them(
    pool: &MySqlPool,
    router: &Router,
) -> Vec<HashMap<String, Option<String>>> {
    let table = router.table();
    let mut names = vec![
        router.field("table.field.event.id", "id"),
        router.field("table.field.event.key", "aggregateid"),
        router.field("table.field.event.payload", "payload"),
        router.field("route.by.field", "aggregatetype"),
    ];
    names.extend(router.placements().into_iter().map(|p| p.field));
    let mut rows: Vec<HashMap<String, Option<String>>> = Vec::new();
    for name in names {
        let values: Vec<Option<String>> = sqlx::query_scalar(&format!(
            "SELECT CAST({} AS CHAR) FROM {} ORDER BY seq",
            quoted(&name),
            quoted(&table)
        ))
        .fetch_all(pool)
        .await
        .unwrap();
        rows.resize_with(values.len(), HashMap::new);
        for (row, value) in rows.iter_mut().zip(values) {
            row.insert(name.clone(), value);
        }
    }
    rows
}

#[sqlx::test(migrator = "MIGRATOR")]
async fn the_relay_writes_exactly_the_headers_the_router_places_from_the_same_columns(
    pool: MySqlPool,
) {
    let topic = kafka::unique_topic("contracts.headers");
    kafka::create_topics(std::slice::from_ref(&topic)).await;
    // One row with every optional column filled, one with them NULL: the
    // router places a header for a NULL column too (with no value).
    let messages: Vec<OutboxMessage> = [
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        None,
    ]
    .into_iter()
    .map(|traceparent| {
        let id = Uuid::now_v7();
        OutboxMessage {
            id,
            topic: topic.clone(),
            key: "payment-contract".into(),
            event_type: "PaymentCreatedEvent".into(),
            payload: json!({ "id": id, "subject": "payment-contract" }),
            traceparent: traceparent.map(str::to_owned),
            created_at: Utc::now(),
        }
    })
    .collect();
    MariaDbPaymentRepository::new(pool.clone())
        .commit(Commit {
            outbox: messages,
            ..Commit::default()
        })
        .await
        .unwrap();

    let routers = routers();
    let mut expected = Vec::new();
    for router in &routers {
        expected.push(rows_as_the_router_reads_them(&pool, router).await);
    }

    let relay = OutboxRelay::new(
        pool.clone(),
        kafka::producer(),
        RelaySettings::default(),
        Arc::new(Notify::new()),
    );
    assert_eq!(relay.relay_once().await.unwrap(), 2);
    // One key: one partition, in row order.
    let received = kafka::read_until(&topic, Duration::from_secs(30), |seen| seen.len() >= 2).await;
    assert_eq!(received.len(), 2, "the relay published both rows");

    for (router, rows) in routers.iter().zip(&expected) {
        let file = &router.file;
        let placements = router.placements();
        // The router always adds `id` (the event id column).
        let placed: BTreeSet<&str> = std::iter::once("id")
            .chain(placements.iter().map(|p| p.alias.as_str()))
            .collect();
        assert_eq!(rows.len(), received.len());
        for (row, record) in rows.iter().zip(&received) {
            let column = |name: &str| row[name].clone().unwrap_or_default();
            let written: BTreeSet<&str> = record.headers.keys().map(String::as_str).collect();
            assert_eq!(
                written, placed,
                "{file}: the relay's header names against the router's"
            );
            assert_eq!(
                record.headers["id"],
                column(&router.field("table.field.event.id", "id")),
                "{file}: id header"
            );
            // The test reader shows a header without a value as "".
            for placement in &placements {
                assert_eq!(
                    record.headers[&placement.alias],
                    column(&placement.field),
                    "{file}: header {} carries column {}",
                    placement.alias,
                    placement.field
                );
            }
            assert_eq!(
                record.key,
                Some(column(
                    &router.field("table.field.event.key", "aggregateid")
                )),
                "{file}: key"
            );
            assert_eq!(
                topic,
                column(&router.field("route.by.field", "aggregatetype")),
                "{file}: topic"
            );
            assert_eq!(
                record.payload.as_deref(),
                Some(column(&router.field("table.field.event.payload", "payload")).as_bytes()),
                "{file}: value, byte for byte"
            );
        }
    }
}
