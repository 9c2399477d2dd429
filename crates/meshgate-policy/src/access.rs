//! Who is asking, and what the contracts grant them.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::logical_expr::{Expr, lit, or};
use meshgate_contract::{MaskKind, Permission};
use meshgate_mesh::{Product, ScanView};

use crate::HashKey;

/// An authenticated caller and the roles in effect for this session (possibly narrowed
/// by the client to one of the roles it holds, never widened).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    pub name: String,
    pub roles: BTreeSet<String>,
}

impl Principal {
    pub fn new<I, S>(name: impl Into<String>, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Principal {
            name: name.into(),
            roles: roles.into_iter().map(Into::into).collect(),
        }
    }

    /// The same principal with only `role` in effect; `None` if it does not hold it.
    pub fn narrowed_to(&self, role: &str) -> Option<Principal> {
        self.roles.contains(role).then(|| Principal {
            name: self.name.clone(),
            roles: BTreeSet::from([role.to_string()]),
        })
    }
}

/// What one principal may see of one product.
#[derive(Debug, Clone, PartialEq)]
pub enum Access {
    Denied,
    Granted {
        permission: Permission,
        /// Unqualified predicate over the product's columns; `None` shows every row.
        row_filter: Option<Expr>,
    },
}

impl Access {
    /// The most permissive grant among the principal's roles wins (read > read_masked >
    /// none, docs/DESIGN.md §4.5). Among grants of that level, a row is visible if any of their
    /// row filters lets it through, and every row is visible if one of them has none.
    pub fn resolve(product: &Product, principal: &Principal) -> Access {
        let grants: Vec<_> = product
            .contract
            .access_policy
            .iter()
            .filter(|g| principal.roles.contains(g.role.as_str()))
            .collect();
        let Some(permission) = grants.iter().map(|g| g.permission).max() else {
            return Access::Denied;
        };
        let mut filters = Vec::new();
        for g in grants.iter().filter(|g| g.permission == permission) {
            match product.row_filters.get(g.role.as_str()) {
                Some(f) => filters.push(f.clone()),
                None => {
                    return Access::Granted {
                        permission,
                        row_filter: None,
                    };
                }
            }
        }
        Access::Granted {
            permission,
            row_filter: filters.into_iter().reduce(or),
        }
    }
}

/// Everything the policy rule needs for one session: immutable, shared by the rule and
/// the physical planner.
#[derive(Debug)]
pub struct Policy {
    pub principal: Principal,
    pub key: Arc<HashKey>,
}

impl Policy {
    pub fn new(principal: Principal, key: Arc<HashKey>) -> Self {
        Policy { principal, key }
    }

    /// What this principal may learn of `product` beyond its rows: statistics of the
    /// columns it reads masked stay hidden, and a row filter hides everything about the
    /// rows it removes. Derived from the same grant as the masks and the row filter.
    pub fn view(&self, product: &Product) -> ScanView {
        match Access::resolve(product, &self.principal) {
            // The rule refuses the scan first; should it not, nothing is shown.
            Access::Denied => ScanView {
                masked: product
                    .contract
                    .schema
                    .iter()
                    .map(|c| c.name.as_str().to_string())
                    .collect(),
                row_filter: Some(lit(false)),
            },
            Access::Granted {
                permission,
                row_filter,
            } => ScanView {
                masked: if permission == Permission::ReadMasked {
                    Policy::masks(product).map(|(c, _)| c.to_string()).collect()
                } else {
                    Default::default()
                },
                row_filter,
            },
        }
    }

    /// The masks a `read_masked` caller sees, column by column.
    pub fn masks(product: &Product) -> impl Iterator<Item = (&str, MaskKind)> {
        product
            .contract
            .schema
            .iter()
            .filter_map(|c| c.effective_mask().map(|m| (c.name.as_str(), m)))
    }
}
