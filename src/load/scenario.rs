//! The scenarios of a load, their mix, and the requests each one sends.

use std::fmt;
use std::str::FromStr;

use ordertrail_shared::api::OrderLine;
use serde::Serialize;
use serde_json::{Value, json};

/// What one step of the load does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// An order paid with 4242 4242 4242 4242: `201` confirmed (or `202` paid, stock pending).
    Captured,
    /// An order paid with 4000 0000 0000 0002: `402`, reason `card_declined`.
    Declined,
    /// An order paid with 4000 0000 0000 9995: `402`, reason `insufficient_funds`.
    Insufficient,
    /// 1000 of [`SCARCE`], which holds less: `409`, reason `out_of_stock`.
    OutOfStock,
    /// `GET /api/products`: `200` with the catalogue.
    Reads,
    /// A captured order sent twice at once with one `Idempotency-Key`, then once more after
    /// the answer: every final answer is the same, the duplicate may be `409` in progress.
    Retried,
}

impl Scenario {
    /// Every scenario, in the order reports list them.
    pub const ALL: [Self; 6] = [
        Self::Captured,
        Self::Declined,
        Self::Insufficient,
        Self::OutOfStock,
        Self::Reads,
        Self::Retried,
    ];

    /// The name used in `--mix`, in reports and in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Captured => "captured",
            Self::Declined => "declined",
            Self::Insufficient => "insufficient",
            Self::OutOfStock => "out_of_stock",
            Self::Reads => "reads",
            Self::Retried => "retried",
        }
    }

    /// The card an order of this scenario is paid with; `None` for reads.
    fn card(self) -> Option<&'static str> {
        match self {
            Self::Captured | Self::OutOfStock | Self::Retried => Some("4242424242424242"),
            Self::Declined => Some("4000000000000002"),
            Self::Insufficient => Some("4000000000009995"),
            Self::Reads => None,
        }
    }
}

/// The products captured orders buy, from the seeded catalogue
/// (services/inventory/migrations/0001_catalogue.sql); `--restock` keeps them in stock.
pub const POOL: [&str; 5] = [
    "TRAIL-MUG",
    "TRAIL-TEE",
    "TRAIL-CAP",
    "TRAIL-BOTTLE",
    "TRAIL-LAMP",
];

/// The product the out-of-stock scenario orders 1000 of. It holds 3 and is never restocked, so
/// that out of stock stays demonstrable however long a load runs.
pub const SCARCE: &str = "TRAIL-MAP";

/// The lines of the `n`th step's order: one or two units of one product of [`POOL`], or
/// 1000 of [`SCARCE`] for [`Scenario::OutOfStock`].
pub fn lines(scenario: Scenario, n: u64) -> Vec<OrderLine> {
    let line = match scenario {
        Scenario::OutOfStock => OrderLine {
            sku: SCARCE.to_owned(),
            quantity: 1000,
        },
        _ => OrderLine {
            sku: POOL[(n % POOL.len() as u64) as usize].to_owned(),
            quantity: 1 + (n / POOL.len() as u64 % 2) as i64,
        },
    };
    vec![line]
}

/// The body of the `n`th step's order, `None` for reads.
pub fn order_body(scenario: Scenario, n: u64) -> Option<Value> {
    let card = scenario.card()?;
    Some(json!({
        "customer_id": format!("load-{}", n % 100),
        "items": lines(scenario, n),
        "payment": {"card_number": card, "expiry": "12/30", "cvc": "123"},
    }))
}

/// How much of each scenario a load runs: `captured=60,declined=10,…`, weights in any unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    weights: Vec<(Scenario, u32)>,
}

impl Mix {
    /// The weight of `scenario`, 0 when the mix leaves it out.
    #[cfg(test)]
    pub fn weight(&self, scenario: Scenario) -> u32 {
        self.weights
            .iter()
            .find(|(s, _)| *s == scenario)
            .map_or(0, |(_, w)| *w)
    }
}

impl Default for Mix {
    /// `captured=60,declined=10,insufficient=5,out_of_stock=5,reads=10,retried=10`.
    fn default() -> Self {
        "captured=60,declined=10,insufficient=5,out_of_stock=5,reads=10,retried=10"
            .parse()
            .expect("the default mix parses")
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut weights: Vec<(Scenario, u32)> = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}` is not name=weight"))?;
            let scenario = Scenario::ALL
                .into_iter()
                .find(|s| s.name() == name.trim())
                .ok_or_else(|| {
                    let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                    format!("no scenario `{name}`; there are {}", names.join(", "))
                })?;
            let weight: u32 = weight
                .trim()
                .parse()
                .ok()
                .filter(|w| *w <= 1_000_000)
                .ok_or_else(|| format!("the weight of {name} must be 0 to 1000000"))?;
            if weights.iter().any(|(s, _)| *s == scenario) {
                return Err(format!("{name} is given twice"));
            }
            weights.push((scenario, weight));
        }
        weights.sort();
        if weights.iter().all(|(_, w)| *w == 0) {
            return Err("the mix needs at least one scenario with a weight above 0".into());
        }
        Ok(Self { weights })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .weights
            .iter()
            .map(|(s, w)| format!("{}={w}", s.name()))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Picks scenarios in the proportions of a [`Mix`], interleaved and the same on every run:
/// smooth weighted round-robin (as nginx balances upstreams), so that any run of
/// `total weight` steps holds each scenario exactly its weight's times.
#[derive(Debug)]
pub struct Picker {
    weights: Vec<(Scenario, i64)>,
    current: Vec<i64>,
    total: i64,
}

impl Picker {
    /// A picker for `mix`.
    pub fn new(mix: &Mix) -> Self {
        let weights: Vec<(Scenario, i64)> = mix
            .weights
            .iter()
            .filter(|(_, w)| *w > 0)
            .map(|(s, w)| (*s, i64::from(*w)))
            .collect();
        Self {
            current: vec![0; weights.len()],
            total: weights.iter().map(|(_, w)| w).sum(),
            weights,
        }
    }

    /// The next scenario to run.
    pub fn next_scenario(&mut self) -> Scenario {
        for (current, (_, weight)) in self.current.iter_mut().zip(&self.weights) {
            *current += weight;
        }
        let (best, _) = self
            .current
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
            .expect("a mix has a scenario");
        self.current[best] -= self.total;
        self.weights[best].0
    }
}
