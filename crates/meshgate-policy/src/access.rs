//! Who is asking, and what the contracts grant them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::expr::{InList, Placeholder};
use datafusion::logical_expr::{Expr, lit, or};
use meshgate_contract::ATTRIBUTE_PREFIX;
use meshgate_contract::{MaskKind, Permission, RolePolicy};
use meshgate_mesh::{Product, ScanView};

use crate::HashKey;

/// An authenticated caller and the roles in effect for this session (possibly narrowed
/// by the client to one of the roles it holds, never widened).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    pub name: String,
    pub roles: BTreeSet<String>,
    /// What row filters may refer to as `:user.<name>`: from the users file, or from the
    /// claims of an identity provider's token. Every value is text until a filter binds
    /// it as a literal of the column it is compared with.
    pub attributes: BTreeMap<String, Vec<String>>,
    /// The identity provider that vouched for this caller; `None` for users of the
    /// configuration (and service principals). The same name at two issuers is two people.
    pub issuer: Option<String>,
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
            attributes: BTreeMap::new(),
            issuer: None,
        }
    }

    pub fn with_attributes(mut self, attributes: BTreeMap<String, Vec<String>>) -> Self {
        self.attributes = attributes;
        self
    }

    pub fn with_issuer(mut self, issuer: Option<String>) -> Self {
        self.issuer = issuer;
        self
    }

    /// The same principal with only `role` in effect; `None` if it does not hold it.
    pub fn narrowed_to(&self, role: &str) -> Option<Principal> {
        self.roles.contains(role).then(|| Principal {
            roles: BTreeSet::from([role.to_string()]),
            ..self.clone()
        })
    }
}

/// `filter` with each `:user.<name>` parameter replaced by the caller's values, as literals
/// of the type the parameter was planned with (never as SQL text). In `col IN (…)` a
/// reference stands for all of the attribute's values; anywhere else it needs exactly one.
/// A caller without the attribute, with several values where one is needed, or with a
/// value that is not of the column's type sees no rows: the filter fails closed.
pub fn bind_attributes(filter: &Expr, principal: &Principal) -> Expr {
    fn values<'a>(principal: &'a Principal, p: &Placeholder) -> Option<&'a [String]> {
        let name = p.id.strip_prefix(ATTRIBUTE_PREFIX)?;
        principal.attributes.get(name).map(Vec::as_slice)
    }
    fn typed(p: &Placeholder, value: &str) -> Option<Expr> {
        let ty = p.field.as_ref()?.data_type();
        let v = ScalarValue::try_from_string(value.to_string(), ty).ok()?;
        (!v.is_null()).then(|| lit(v))
    }
    if !filter
        .exists(|e| Ok(matches!(e, Expr::Placeholder(_))))
        .unwrap_or(true)
    {
        return filter.clone();
    }
    let mut closed = false;
    let bound = filter.clone().transform_down(|e| {
        match e {
            Expr::InList(InList {
                expr,
                list,
                negated,
            }) if list.iter().any(|i| matches!(i, Expr::Placeholder(_))) => {
                let mut items = Vec::with_capacity(list.len());
                for item in list {
                    match item {
                        Expr::Placeholder(p) => match values(principal, &p) {
                            Some(vs) => {
                                for v in vs {
                                    match typed(&p, v) {
                                        Some(l) => items.push(l),
                                        None => closed = true,
                                    }
                                }
                            }
                            None => closed = true,
                        },
                        other => items.push(other),
                    }
                }
                // `x IN ()` holds for no row, `x NOT IN ()` for every row.
                let e = if items.is_empty() {
                    lit(negated)
                } else {
                    Expr::InList(InList::new(expr, items, negated))
                };
                Ok(Transformed::new(e, true, TreeNodeRecursion::Jump))
            }
            Expr::Placeholder(p) => {
                let one = match values(principal, &p) {
                    Some([v]) => typed(&p, v),
                    _ => None,
                };
                Ok(Transformed::yes(one.unwrap_or_else(|| {
                    closed = true;
                    lit(ScalarValue::Null)
                })))
            }
            other => Ok(Transformed::no(other)),
        }
    });
    match bound {
        Ok(t) if !closed => t.data,
        _ => lit(false),
    }
}

/// What one principal may see of one product.
#[derive(Debug, Clone, PartialEq)]
pub enum Access {
    Denied,
    Granted {
        permission: Permission,
        /// Column → the mask it is read with; absent columns are read in the clear.
        masks: BTreeMap<String, MaskKind>,
        /// Unqualified predicate over the product's columns; `None` shows every row.
        row_filter: Option<Expr>,
    },
}

impl Access {
    /// The most permissive grant among the principal's roles wins (read > read_masked >
    /// none, docs/DESIGN.md §4.5), after governance policies (which may deny a role, add
    /// masks and row filters). Among the roles of that level, no cell may show more than a
    /// role that sees its row would show:
    /// - if some of them see every row, the caller reads as one of those does (the one
    ///   whose masks are nowhere stricter than the others', or else with their masks met);
    /// - otherwise a row is visible if one of them sees it, and each column takes the
    ///   meet of all their masks.
    pub fn resolve(product: &Product, principal: &Principal) -> Access {
        let roles: Vec<(&String, &RolePolicy)> = product
            .policy
            .roles
            .iter()
            .filter(|(r, _)| principal.roles.contains(*r))
            .collect();
        let Some(permission) = roles.iter().map(|(_, p)| p.permission).max() else {
            return Access::Denied;
        };
        let top: Vec<(&String, &RolePolicy)> = roles
            .into_iter()
            .filter(|(_, p)| p.permission == permission)
            .collect();
        let (every_row, filtered): (Vec<_>, Vec<_>) = top
            .iter()
            .partition(|(role, _)| !product.row_filters.contains_key(role.as_str()));
        if !every_row.is_empty() {
            return Access::Granted {
                permission,
                masks: least_masked(&every_row),
                row_filter: None,
            };
        }
        let filters = filtered
            .iter()
            .filter_map(|(role, _)| product.row_filters.get(role.as_str()))
            .map(|f| bind_attributes(f, principal));
        Access::Granted {
            permission,
            masks: met(&filtered),
            row_filter: filters.reduce(or),
        }
    }

    /// Whether reading through this access changes anything: masks or hidden rows.
    pub fn needs_policy(&self) -> bool {
        match self {
            Access::Denied => true,
            Access::Granted {
                masks, row_filter, ..
            } => !masks.is_empty() || row_filter.is_some(),
        }
    }
}

/// Each column masked by any of `roles`, with the meet of their masks.
fn met(roles: &[&(&String, &RolePolicy)]) -> BTreeMap<String, MaskKind> {
    let mut masks: BTreeMap<String, MaskKind> = BTreeMap::new();
    for (_, p) in roles {
        for (column, rule) in &p.masks {
            masks
                .entry(column.clone())
                .and_modify(|m| *m = m.meet(rule.mask))
                .or_insert(rule.mask);
        }
    }
    masks
}

/// The masks of the role among `roles` that shows at least what each other one shows,
/// column by column; without such a role, the meet of all of theirs.
fn least_masked(roles: &[&(&String, &RolePolicy)]) -> BTreeMap<String, MaskKind> {
    let shows_all_of = |a: &RolePolicy, b: &RolePolicy| {
        a.masks.iter().all(|(column, mine)| {
            b.masks
                .get(column)
                .is_some_and(|theirs| theirs.mask.at_least_as_strict_as(mine.mask))
        })
    };
    match roles
        .iter()
        .find(|(_, a)| roles.iter().all(|(_, b)| shows_all_of(a, b)))
    {
        Some((_, p)) => p.masks.iter().map(|(c, r)| (c.clone(), r.mask)).collect(),
        None => met(roles),
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
                masks, row_filter, ..
            } => ScanView {
                masked: masks.into_keys().collect(),
                row_filter,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use datafusion::arrow::datatypes::{DataType, Field};
    use datafusion::logical_expr::expr::Placeholder;
    use datafusion::logical_expr::{Expr, col, lit};

    use super::{Principal, bind_attributes};

    fn reference(name: &str, ty: DataType) -> Expr {
        Expr::Placeholder(Placeholder::new_with_field(
            format!(":user.{name}"),
            Some(Arc::new(Field::new("", ty, true))),
        ))
    }

    fn caller(attributes: &[(&str, &[&str])]) -> Principal {
        let attributes: BTreeMap<String, Vec<String>> = attributes
            .iter()
            .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect()))
            .collect();
        Principal::new("u", ["r"]).with_attributes(attributes)
    }

    #[test]
    fn a_list_reference_binds_every_value_as_a_typed_literal() {
        let filter = col("region").in_list(vec![reference("regions", DataType::Utf8View)], false);
        let bound = bind_attributes(&filter, &caller(&[("regions", &["US", "APAC"])]));
        assert_eq!(
            bound,
            col("region").in_list(
                vec![
                    lit(datafusion::common::ScalarValue::Utf8View(Some("US".into()))),
                    lit(datafusion::common::ScalarValue::Utf8View(Some(
                        "APAC".into()
                    ))),
                ],
                false
            )
        );
        // A value that would be SQL stays one string.
        let hostile = bind_attributes(&filter, &caller(&[("regions", &["x') OR (1=1"])]));
        assert_eq!(
            hostile,
            col("region").in_list(
                vec![lit(datafusion::common::ScalarValue::Utf8View(Some(
                    "x') OR (1=1".into()
                )))],
                false
            )
        );
        // An empty list lets nothing through; NOT IN an empty list lets everything.
        assert_eq!(
            bind_attributes(&filter, &caller(&[("regions", &[])])),
            lit(false)
        );
        let negated = col("region").in_list(vec![reference("regions", DataType::Utf8View)], true);
        assert_eq!(
            bind_attributes(&negated, &caller(&[("regions", &[])])),
            lit(true)
        );
    }

    #[test]
    fn numbers_bind_as_numbers_and_what_does_not_fit_fails_closed() {
        let filter = col("tier").eq(reference("tier", DataType::Int32));
        assert_eq!(
            bind_attributes(&filter, &caller(&[("tier", &["3"])])),
            col("tier").eq(lit(3i32))
        );
        for attrs in [
            &[][..],
            &[("tier", &["three"][..])][..],
            &[("tier", &["1", "2"][..])][..],
            &[("other", &["3"][..])][..],
        ] {
            assert_eq!(
                bind_attributes(&filter, &caller(attrs)),
                lit(false),
                "{attrs:?}"
            );
        }
        // Inside a larger predicate the whole filter closes, not just the comparison
        // (`NOT (tier = <missing>)` must not turn into every row).
        let not = Expr::Not(Box::new(filter.clone())).or(col("x").is_null());
        assert_eq!(bind_attributes(&not, &caller(&[])), lit(false));
        let list = col("tier").in_list(vec![reference("tier", DataType::Int32)], false);
        assert_eq!(
            bind_attributes(&list, &caller(&[("tier", &["1", "x"])])),
            lit(false)
        );
    }

    #[test]
    fn a_filter_without_references_is_returned_as_it_is() {
        let filter = col("region").eq(lit("EU"));
        assert_eq!(bind_attributes(&filter, &caller(&[])), filter);
    }
}
