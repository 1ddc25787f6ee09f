//! The four roles of the `ordertrail` binary.

use std::fmt;
use std::str::FromStr;

/// One of the four services, as `ordertrail serve <role>` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Catalogue and stock.
    Inventory,
    /// Card payments.
    Payment,
    /// Orders and the checkout saga.
    Order,
    /// The public edge.
    Gateway,
}

impl Role {
    /// Callees first: the order they start in, so that each caller is told where its callees
    /// listen.
    pub const ALL: [Self; 4] = [Self::Inventory, Self::Payment, Self::Order, Self::Gateway];

    /// `inventory`, `payment`, `order` or `gateway`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Inventory => "inventory",
            Self::Payment => "payment",
            Self::Order => "order",
            Self::Gateway => "gateway",
        }
    }

    /// The port `ordertrail serve` listens on when `LISTEN_ADDR` does not say: 8080 to 8083.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Gateway => 8080,
            Self::Order => 8081,
            Self::Payment => 8082,
            Self::Inventory => 8083,
        }
    }

    /// The variable its callers find it by; none for the gateway, which nothing calls.
    pub fn url_var(self) -> Option<&'static str> {
        match self {
            Self::Inventory => Some("INVENTORY_URL"),
            Self::Payment => Some("PAYMENT_URL"),
            Self::Order => Some("ORDER_URL"),
            Self::Gateway => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of the four roles.
#[derive(Debug, thiserror::Error)]
#[error("unknown role {0:?}: expected gateway, order, payment or inventory")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|role| role.name() == name)
            .ok_or_else(|| UnknownRole(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::Role;

    #[test]
    fn every_role_parses_from_its_name() {
        for role in Role::ALL {
            assert_eq!(role.name().parse::<Role>().unwrap(), role);
        }
        assert!("shipping".parse::<Role>().is_err());
    }
}
