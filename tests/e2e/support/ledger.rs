//! The three databases read back after a load, and the invariants that must hold between them
//! and with the answers the clients got.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use super::TestStack;
use super::load::{Sent, is_final};

/// An order as the orders database holds it.
pub struct Order {
    pub status: String,
    pub total_cents: i64,
    pub failure_code: Option<String>,
}

/// An idempotency key: its order and the status of the answer kept for it.
pub struct Key {
    pub order_id: String,
    pub response_status: Option<i64>,
}

/// A payment: `captured`, `declined` or `refunded`.
pub struct Payment {
    pub status: String,
    pub amount_cents: i64,
}

/// What order, payment and inventory hold, read at one moment.
pub struct Ledger {
    pub orders: BTreeMap<String, Order>,
    /// `(order_id, sku, quantity)`.
    pub order_items: Vec<(String, String, i64)>,
    pub keys: BTreeMap<String, Key>,
    /// By order id.
    pub payments: BTreeMap<String, Payment>,
    /// By SKU.
    pub stock: BTreeMap<String, i64>,
    /// Status by order id.
    pub reservations: BTreeMap<String, String>,
    /// `(order_id, sku, quantity)`.
    pub reservation_items: Vec<(String, String, i64)>,
}

/// Violations found, by invariant.
pub type Violations = BTreeMap<&'static str, Vec<String>>;

impl Ledger {
    /// Reads the three databases of `stack`.
    pub async fn read(stack: &TestStack) -> Self {
        sqlx::any::install_default_drivers();
        let orders_db = AnyPool::connect(stack.database_url("order")).await.unwrap();
        let payments_db = AnyPool::connect(stack.database_url("payment"))
            .await
            .unwrap();
        let inventory_db = AnyPool::connect(stack.database_url("inventory"))
            .await
            .unwrap();
        let ledger = Self {
            orders: rows(
                &orders_db,
                "SELECT order_id, status, total_cents, failure_code FROM orders",
            )
            .await
            .iter()
            .map(|row| {
                let order = Order {
                    status: row.get("status"),
                    total_cents: row.get("total_cents"),
                    failure_code: row.get("failure_code"),
                };
                (row.get("order_id"), order)
            })
            .collect(),
            order_items: items(&orders_db, "order_items").await,
            keys: rows(
                &orders_db,
                "SELECT idempotency_key, order_id, response_status FROM idempotency_keys",
            )
            .await
            .iter()
            .map(|row| {
                let key = Key {
                    order_id: row.get("order_id"),
                    response_status: row.get("response_status"),
                };
                (row.get("idempotency_key"), key)
            })
            .collect(),
            payments: rows(
                &payments_db,
                "SELECT order_id, status, amount_cents FROM payments",
            )
            .await
            .iter()
            .map(|row| {
                let payment = Payment {
                    status: row.get("status"),
                    amount_cents: row.get("amount_cents"),
                };
                (row.get("order_id"), payment)
            })
            .collect(),
            stock: rows(&inventory_db, "SELECT sku, stock FROM products")
                .await
                .iter()
                .map(|row| (row.get("sku"), row.get("stock")))
                .collect(),
            reservations: rows(&inventory_db, "SELECT order_id, status FROM reservations")
                .await
                .iter()
                .map(|row| (row.get("order_id"), row.get("status")))
                .collect(),
            reservation_items: items(&inventory_db, "reservation_items").await,
        };
        for pool in [orders_db, payments_db, inventory_db] {
            pool.close().await;
        }
        ledger
    }

    /// Reads the databases until every order is confirmed or failed and every key has its
    /// answer kept (the recovery sweep finishes what was left open), for at most `within`.
    pub async fn settled(stack: &TestStack, within: Duration) -> Self {
        let give_up = Instant::now() + within;
        loop {
            let ledger = Self::read(stack).await;
            if ledger.unsettled() == 0 || Instant::now() > give_up {
                return ledger;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Orders neither confirmed nor failed, and keys with no answer kept.
    pub fn unsettled(&self) -> usize {
        let open = self.orders.values().filter(|o| !is_terminal(o)).count();
        let unanswered = self
            .keys
            .values()
            .filter(|k| k.response_status.is_none())
            .count();
        open + unanswered
    }

    /// Every invariant, with its violations (none, when all is well). `initial` is the stock
    /// before the load, `sent` every request of it.
    pub fn violations(&self, initial: &BTreeMap<String, i64>, sent: &[Sent]) -> Violations {
        let mut found = Violations::new();
        let mut check = |invariant: &'static str, violation: Option<String>| {
            let entry = found.entry(invariant).or_default();
            entry.extend(violation);
        };

        // One order per key, and only keys the clients sent.
        let sent_keys: BTreeSet<&str> = sent.iter().map(|s| s.key.as_str()).collect();
        let mut named = BTreeSet::new();
        for (key, k) in &self.keys {
            let problem = if !self.orders.contains_key(&k.order_id) {
                Some(format!("key {key} names no order"))
            } else if !named.insert(k.order_id.as_str()) {
                Some(format!("key {key} names the order of another key"))
            } else if !sent_keys.contains(key.as_str()) {
                Some(format!("key {key} was never sent"))
            } else {
                None
            };
            check("one order per key", problem);
        }
        for id in self.orders.keys().filter(|id| !named.contains(id.as_str())) {
            check("one order per key", Some(format!("order {id} has no key")));
        }

        // Each answer names its key's order; a final one is the answer kept for the key.
        for one in sent {
            let Ok(answer) = &one.outcome else { continue };
            let key = self.keys.get(&one.key);
            if let Some(id) = answer.body["order_id"].as_str() {
                let problem = (key.map(|k| k.order_id.as_str()) != Some(id))
                    .then(|| format!("key {} was answered with order {id}", one.key));
                check("answers name the key's order", problem);
            }
            // 202 (paid, stock pending) is not final for the order: it is never kept.
            if is_final(answer) && answer.status != 202 {
                let kept = key.and_then(|k| k.response_status);
                let problem = (kept != Some(i64::from(answer.status))).then(|| {
                    format!(
                        "key {} was answered {} but {kept:?} is kept",
                        one.key,
                        one.label()
                    )
                });
                check("final answers are the kept answer", problem);
            }
        }

        // Every order ends, its answer kept: 201 for a confirmed one, an error for a failed one.
        for (id, order) in &self.orders {
            let problem = (!is_terminal(order)).then(|| format!("order {id} is {}", order.status));
            check("every order confirmed or failed", problem);
        }
        for (key, k) in &self.keys {
            let confirmed = self
                .orders
                .get(&k.order_id)
                .is_some_and(|o| o.status == "confirmed");
            let problem = match k.response_status {
                None => Some(format!("key {key} has no answer kept")),
                Some(status) if (status == 201) != confirmed => Some(format!(
                    "key {key} keeps {status} for a {} order",
                    self.orders
                        .get(&k.order_id)
                        .map_or("missing", |o| o.status.as_str())
                )),
                Some(_) => None,
            };
            check("every key's answer kept, agreeing with its order", problem);
        }

        // Money: one captured payment of the total per confirmed order, none for a failed one.
        for (id, order) in &self.orders {
            let payment = self.payments.get(id);
            let captured = payment.filter(|p| p.status == "captured");
            let problem = match order.status.as_str() {
                "confirmed" if captured.map(|p| p.amount_cents) != Some(order.total_cents) => {
                    Some(format!(
                        "confirmed order {id} of {} cents has payment {:?}",
                        order.total_cents,
                        payment.map(|p| (&p.status, p.amount_cents))
                    ))
                }
                _ => None,
            };
            check("one captured payment per confirmed order", problem);
            let problem = (order.status == "failed" && captured.is_some())
                .then(|| format!("failed order {id} has a captured payment"));
            check("no captured payment for a failed order", problem);
        }
        for id in self.payments.keys() {
            let problem =
                (!self.orders.contains_key(id)).then(|| format!("payment of no order {id}"));
            check("no payment or reservation without an order", problem);
        }

        // Stock: committed for a confirmed order, given back for a failed one, never left held.
        for (id, order) in &self.orders {
            let reservation = self.reservations.get(id).map(String::as_str);
            let problem = match (order.status.as_str(), reservation) {
                ("confirmed", Some("committed")) | ("failed", None | Some("released")) => None,
                (status, reservation) => Some(format!(
                    "{status} order {id} has reservation {reservation:?}"
                )),
            };
            check("stock committed exactly for confirmed orders", problem);
        }
        for (id, status) in &self.reservations {
            let problem = (status == "reserved").then(|| format!("order {id} still holds stock"));
            check("no reservation left reserved", problem);
            let problem =
                (!self.orders.contains_key(id)).then(|| format!("reservation of no order {id}"));
            check("no payment or reservation without an order", problem);
        }

        // initial − committed = current, and what was committed is what was confirmed.
        let committed = self.committed();
        let mut confirmed = BTreeMap::<&str, i64>::new();
        for (id, sku, quantity) in &self.order_items {
            if self.orders.get(id).is_some_and(|o| o.status == "confirmed") {
                *confirmed.entry(sku).or_default() += quantity;
            }
        }
        for (sku, before) in initial {
            let sold = committed.get(sku.as_str()).copied().unwrap_or(0);
            let now = self.stock.get(sku).copied();
            let problem = (now != Some(before - sold))
                .then(|| format!("{sku}: {before} − {sold} committed ≠ {now:?} in stock"));
            check("stock arithmetic exact", problem);
            let ordered = confirmed.get(sku.as_str()).copied().unwrap_or(0);
            let problem = (ordered != sold)
                .then(|| format!("{sku}: {ordered} in confirmed orders, {sold} committed"));
            check("stock arithmetic exact", problem);
        }
        found
    }

    /// Units committed (sold), by SKU.
    fn committed(&self) -> BTreeMap<&str, i64> {
        let mut committed = BTreeMap::<&str, i64>::new();
        for (id, sku, quantity) in &self.reservation_items {
            if self.reservations.get(id).is_some_and(|s| s == "committed") {
                *committed.entry(sku).or_default() += quantity;
            }
        }
        committed
    }

    /// What the databases hold, to print: orders by status and failure, payments and
    /// reservations by status, and the stock of each product before and after.
    pub fn figures(&self, initial: &BTreeMap<String, i64>) -> String {
        let count = |values: Vec<String>| {
            let mut counts = BTreeMap::<String, usize>::new();
            for value in values {
                *counts.entry(value).or_default() += 1;
            }
            counts
                .iter()
                .map(|(value, n)| format!("{value} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let orders = count(
            self.orders
                .values()
                .map(|o| match &o.failure_code {
                    Some(code) if o.status == "failed" => format!("failed/{code}"),
                    _ => o.status.clone(),
                })
                .collect(),
        );
        let payments = count(
            self.payments
                .values()
                .map(|p| match p.status.as_str() {
                    "refunded" if p.amount_cents == 0 => "refunded-uncharged".to_owned(),
                    status => status.to_owned(),
                })
                .collect(),
        );
        let reservations = count(self.reservations.values().cloned().collect());
        let committed = self.committed();
        let stock = initial
            .iter()
            .map(|(sku, before)| {
                format!(
                    "{sku} {before}→{} ({} sold)",
                    self.stock.get(sku).copied().unwrap_or(-1),
                    committed.get(sku.as_str()).copied().unwrap_or(0)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "orders {}: {orders}\nkeys {}\npayments {}: {payments}\nreservations {}: {reservations}\nstock: {stock}",
            self.orders.len(),
            self.keys.len(),
            self.payments.len(),
            self.reservations.len(),
        )
    }
}

/// The violations as a report: each invariant with its count, then the first few violations.
pub fn report(violations: &Violations) -> String {
    let mut text = String::from("invariants:");
    for (invariant, found) in violations {
        text.push_str(&format!("\n  {:>5} violations  {invariant}", found.len()));
        for violation in found.iter().take(5) {
            text.push_str(&format!("\n           {violation}"));
        }
    }
    text
}

fn is_terminal(order: &Order) -> bool {
    order.status == "confirmed" || order.status == "failed"
}

/// Every value in the database at `url` (SQLite or PostgreSQL), as text: each column of each
/// row of each table, whatever the schema (PostgreSQL's `pg_catalog` and `information_schema`
/// excepted), with where it was (`table.column`). NULLs are left out. A value is read as the
/// hex of its bytes (of its text form, for a number), so that blobs and `bytea` are searched
/// as what they hold, then taken as UTF-8 (lossily).
pub async fn every_value(url: &str) -> Vec<(String, String)> {
    sqlx::any::install_default_drivers();
    let sqlite = url.starts_with("sqlite:");
    let pool = AnyPool::connect(url).await.unwrap();
    // (schema, table, column, type), in the order the tables declare their columns. Names are
    // cast to text: the Any driver reads no `name` or `sql_identifier`.
    let listing = if sqlite {
        "SELECT 'main' AS table_schema, m.name AS table_name, c.name AS column_name, \
         c.type AS data_type \
         FROM sqlite_master AS m JOIN pragma_table_info(m.name) AS c \
         WHERE m.type = 'table' ORDER BY m.name, c.cid"
    } else {
        "SELECT CAST(table_schema AS TEXT) AS table_schema, \
         CAST(table_name AS TEXT) AS table_name, CAST(column_name AS TEXT) AS column_name, \
         CAST(data_type AS TEXT) AS data_type \
         FROM information_schema.columns \
         WHERE table_schema NOT IN ('pg_catalog', 'information_schema') \
         ORDER BY table_schema, table_name, ordinal_position"
    };
    let mut tables = BTreeMap::<(String, String), Vec<(String, String)>>::new();
    for row in rows(&pool, listing).await {
        tables
            .entry((row.get("table_schema"), row.get("table_name")))
            .or_default()
            .push((row.get("column_name"), row.get("data_type")));
    }
    assert!(!tables.is_empty(), "{url} has no table to search");
    let quote = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
    let mut values = Vec::new();
    for ((schema, table), columns) in &tables {
        let select = columns
            .iter()
            .map(|(column, data_type)| {
                let column = quote(column);
                if sqlite {
                    format!("hex({column})")
                } else if data_type == "bytea" {
                    format!("encode({column}, 'hex')")
                } else {
                    format!("encode(convert_to(CAST({column} AS TEXT), 'UTF8'), 'hex')")
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("SELECT {select} FROM {}.{}", quote(schema), quote(table));
        for row in rows(&pool, &sql).await {
            for (i, (column, _)) in columns.iter().enumerate() {
                // SQLite's hex() of NULL is '', as is that of an empty text: both hold nothing.
                let Some(hex) = row.get::<Option<String>, _>(i) else {
                    continue;
                };
                let bytes: Vec<u8> = (0..hex.len())
                    .step_by(2)
                    .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).unwrap())
                    .collect();
                let value = String::from_utf8_lossy(&bytes).into_owned();
                values.push((format!("{table}.{column}"), value));
            }
        }
    }
    pool.close().await;
    values
}

async fn rows(pool: &AnyPool, sql: &str) -> Vec<AnyRow> {
    sqlx::query(sql)
        .fetch_all(pool)
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
}

async fn items(pool: &AnyPool, table: &str) -> Vec<(String, String, i64)> {
    rows(
        pool,
        &format!("SELECT order_id, sku, quantity FROM {table}"),
    )
    .await
    .iter()
    .map(|row| (row.get("order_id"), row.get("sku"), row.get("quantity")))
    .collect()
}
