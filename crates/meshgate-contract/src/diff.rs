//! What changed between two versions of a contract, and what it means for consumers.
//!
//! The rule of thumb: a change that can make an existing consumer's query fail or return
//! different rows is **breaking** and needs a new major version (served side by side,
//! docs/DESIGN.md §5); a change that shows more of the data to someone is **security-relevant**
//! and needs a reviewer, whatever its version; the rest is **non-breaking**.

use std::fmt;

use serde::Serialize;

use crate::model::{Column, Contract, MaskKind, Permission, Scalar};
use crate::types::ColumnType;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Impact {
    Breaking,
    Security,
    NonBreaking,
}

impl fmt::Display for Impact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Impact::Breaking => "breaking",
            Impact::Security => "security",
            Impact::NonBreaking => "non-breaking",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub impact: Impact,
    /// Where, in the new contract's terms: `schema.email.mask`, `access_policy.marketing`…
    pub field: String,
    pub message: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<12} {}: {}", self.impact, self.field, self.message)
    }
}

/// The verdict of a diff: every change, and whether the versions are allowed.
#[derive(Debug, Clone, Serialize)]
pub struct Diff {
    pub changes: Vec<Change>,
    /// Set when the changes are not allowed under the new version number.
    pub version_error: Option<String>,
}

impl Diff {
    pub fn has(&self, impact: Impact) -> bool {
        self.changes.iter().any(|c| c.impact == impact)
    }
}

pub fn diff(old: &Contract, new: &Contract) -> Diff {
    let mut changes = Vec::new();
    let mut push = |impact, field: String, message: String| {
        changes.push(Change {
            impact,
            field,
            message,
        })
    };
    if old.dataset != new.dataset || old.domain != new.domain {
        push(
            Impact::Breaking,
            "dataset".into(),
            format!(
                "the product is renamed from {} to {}: consumers' queries name the old one",
                old.dataset.as_str(),
                new.dataset.as_str()
            ),
        );
    }
    if old.location != new.location {
        push(
            Impact::NonBreaking,
            "location".into(),
            format!(
                "location changed from {:?} to {:?}",
                old.location, new.location
            ),
        );
    }
    if old.owner != new.owner {
        push(
            Impact::NonBreaking,
            "owner".into(),
            format!(
                "owner changed from {} to {}",
                old.owner.as_str(),
                new.owner.as_str()
            ),
        );
    }
    if old.description != new.description {
        push(
            Impact::NonBreaking,
            "description".into(),
            "description changed".into(),
        );
    }
    if old.sla != new.sla {
        push(
            Impact::NonBreaking,
            "sla".into(),
            format!("service levels changed from {:?} to {:?}", old.sla, new.sla),
        );
    }
    // What the columns hold is the contract's promise, checked against the schema above;
    // how a derived product computes them is its owner's business.
    match (&old.source, &new.source) {
        (None, Some(_)) => push(
            Impact::NonBreaking,
            "source".into(),
            "the product is now derived from other products by SQL".into(),
        ),
        (Some(_), None) => push(
            Impact::NonBreaking,
            "source".into(),
            "the product is no longer derived: its producer publishes it".into(),
        ),
        (Some(o), Some(n)) if o != n => push(
            Impact::NonBreaking,
            "source".into(),
            if o.sql != n.sql {
                "the derivation's SQL changed".into()
            } else {
                format!(
                    "refreshed every {} instead of every {}",
                    n.refresh, o.refresh
                )
            },
        ),
        _ => {}
    }

    for o in &old.schema {
        let name = o.name.as_str();
        match new.column(name) {
            None => push(
                Impact::Breaking,
                format!("schema.{name}"),
                format!("column {name} is removed (or renamed): queries that name it fail"),
            ),
            Some(n) => column(o, n, &mut push),
        }
    }
    for n in &new.schema {
        let name = n.name.as_str();
        if old.column(name).is_none() {
            let pii = if n.is_pii() { " (PII)" } else { "" };
            push(
                Impact::NonBreaking,
                format!("schema.{name}"),
                format!("column {name}{pii} is added"),
            );
        }
    }
    grants(old, new, &mut push);

    let breaking = changes.iter().any(|c| c.impact == Impact::Breaking);
    let version_error = if new.version < old.version {
        Some(format!(
            "the new version {} is older than {}",
            new.version, old.version
        ))
    } else if breaking && new.version == old.version {
        Some(format!(
            "breaking changes need a new major version: publish them as v{} and serve both",
            old.version.0 + 1
        ))
    } else {
        None
    };
    Diff {
        changes,
        version_error,
    }
}

/// Which codes a check accepts (`enum` or labelled `values`): a narrowed set rejects data
/// consumers already read; a widened one is listed, since a consumer's mapping may not
/// know the new codes yet.
fn allowed(o: &Column, n: &Column, push: &mut impl FnMut(Impact, String, String)) {
    let name = n.name.as_str();
    let field = if n.values.is_some() || (n.allowed.is_none() && o.values.is_some()) {
        "values"
    } else {
        "enum"
    };
    let at = format!("schema.{name}.{field}");
    let show = |v: &Scalar| match [o, n]
        .iter()
        .flat_map(|c| c.values.iter().flatten())
        .find(|l| &l.value == v)
    {
        Some(l) => format!("{v} ({})", l.label),
        None => v.to_string(),
    };
    match (o.allowed_values(), n.allowed_values()) {
        (None, Some(_)) => push(Impact::Breaking, at, "values are now restricted".into()),
        (Some(_), None) => push(
            Impact::NonBreaking,
            at,
            "values are no longer restricted".into(),
        ),
        (Some(a), Some(b)) => {
            let dropped: Vec<String> = a.iter().filter(|v| !b.contains(v)).map(show).collect();
            let added: Vec<String> = b.iter().filter(|v| !a.contains(v)).map(show).collect();
            if !dropped.is_empty() {
                push(
                    Impact::Breaking,
                    at.clone(),
                    format!("no longer allowed: {}", dropped.join(", ")),
                );
            }
            if !added.is_empty() {
                push(
                    Impact::NonBreaking,
                    at,
                    format!("new allowed values: {}", added.join(", ")),
                );
            }
        }
        (None, None) => {}
    }
}

/// Codes carry meaning: a consumer's report reads `5` as "shipped". A relabelled code, or
/// labels dropped altogether, break that reading.
fn labels(o: &Column, n: &Column, push: &mut impl FnMut(Impact, String, String)) {
    let Some(old) = &o.values else {
        return;
    };
    let at = format!("schema.{}.values", n.name.as_str());
    let Some(new) = &n.values else {
        push(
            Impact::Breaking,
            at,
            "the values' labels are removed: consumers lose what the codes mean".into(),
        );
        return;
    };
    for v in old {
        match new.iter().find(|w| w.value == v.value) {
            Some(w) if w.label != v.label => push(
                Impact::Breaking,
                format!("{at}.{}", v.value),
                format!(
                    "value {} changes meaning: {:?} becomes {:?}",
                    v.value, v.label, w.label
                ),
            ),
            Some(w) if w.description != v.description => push(
                Impact::NonBreaking,
                format!("{at}.{}", v.value),
                format!("value {} ({}) is described anew", v.value, v.label),
            ),
            _ => {}
        }
    }
}

fn column(o: &Column, n: &Column, push: &mut impl FnMut(Impact, String, String)) {
    let name = n.name.as_str();
    let at = |f: &str| format!("schema.{name}.{f}");
    if o.data_type != n.data_type {
        let impact = if widens(&o.data_type, &n.data_type) {
            Impact::NonBreaking
        } else {
            Impact::Breaking
        };
        let how = if impact == Impact::Breaking {
            "changes"
        } else {
            "widens"
        };
        push(
            impact,
            at("type"),
            format!("type {how} from {} to {}", o.data_type, n.data_type),
        );
    }
    // Tightened checks can reject the data consumers already read; loosened ones cannot.
    if !o.required && n.required {
        push(Impact::Breaking, at("required"), "becomes required".into());
    } else if o.required && !n.required {
        push(
            Impact::NonBreaking,
            at("required"),
            "is no longer required: expect nulls".into(),
        );
    }
    if !o.unique && n.unique {
        push(Impact::Breaking, at("unique"), "becomes unique".into());
    } else if o.unique && !n.unique {
        push(
            Impact::NonBreaking,
            at("unique"),
            "is no longer unique: expect duplicates".into(),
        );
    }
    allowed(o, n, push);
    labels(o, n, push);
    match (&o.unit, &n.unit) {
        (None, Some(u)) => push(
            Impact::NonBreaking,
            at("unit"),
            format!("unit {u} declared"),
        ),
        (Some(u), None) => push(
            Impact::Breaking,
            at("unit"),
            format!("unit {u} removed: consumers no longer know what the numbers measure"),
        ),
        (Some(a), Some(b)) if a != b => push(
            Impact::Breaking,
            at("unit"),
            format!("unit changes from {a} to {b}: the same number means another amount"),
        ),
        _ => {}
    }
    bound(&o.min, &n.min, true, &at("min"), push);
    bound(&o.max, &n.max, false, &at("max"), push);
    if o.pattern != n.pattern {
        let impact = if n.pattern.is_some() {
            Impact::Breaking
        } else {
            Impact::NonBreaking
        };
        push(
            impact,
            at("pattern"),
            format!("pattern changed from {:?} to {:?}", o.pattern, n.pattern),
        );
    }

    // Tags decide which governance policies apply: a tag removed may unmask the column.
    for t in o.tags.iter().filter(|t| !n.tags.contains(t)) {
        push(
            Impact::Security,
            at("tags"),
            format!("loses tag {t}: governance policies on {t} no longer apply to it"),
        );
    }
    // Governance may tighten what a tag means at any time, so gaining one needs no new
    // version; `meshgate diff` of the governance change lists its effect.
    for t in n.tags.iter().filter(|t| !o.tags.contains(t)) {
        push(
            Impact::NonBreaking,
            at("tags"),
            format!("gains tag {t}: governance policies on {t} now apply to it"),
        );
    }

    // Visibility of the values to masked readers.
    match (o.effective_mask(), n.effective_mask()) {
        (Some(_), None) => push(
            Impact::Security,
            at("pii"),
            "is no longer PII: masked readers will see it in the clear".into(),
        ),
        (None, Some(m)) => push(
            Impact::Breaking,
            at("pii"),
            format!("becomes PII: masked readers now see {m} values instead of the data"),
        ),
        (Some(a), Some(b)) if a != b => {
            let impact = if reveals(b) > reveals(a) {
                Impact::Security
            } else {
                Impact::Breaking
            };
            let how = if impact == Impact::Security {
                "shows more"
            } else {
                "shows less"
            };
            push(
                impact,
                at("mask"),
                format!("mask {a} → {b} {how} to masked readers"),
            );
        }
        _ => {}
    }
    if o.description != n.description {
        push(
            Impact::NonBreaking,
            at("description"),
            "description changed".into(),
        );
    }
}

/// How much a mask reveals: nothing, a constant, a linkable token, part of the value.
fn reveals(m: MaskKind) -> u8 {
    match m {
        MaskKind::Null => 0,
        MaskKind::Redact => 1,
        MaskKind::Hash => 2,
        MaskKind::Year | MaskKind::Email | MaskKind::Last4 => 3,
    }
}

/// Types whose every old value is still representable, so queries keep working.
fn widens(from: &ColumnType, to: &ColumnType) -> bool {
    use ColumnType::*;
    match (from, to) {
        (Integer, Long) => true,
        (DecimalPs(p1, s1), DecimalPs(p2, s2)) => {
            s2 >= s1 && (*p2 as i16 - *s2 as i16) >= (*p1 as i16 - *s1 as i16)
        }
        _ => false,
    }
}

/// A lower bound raised (or an upper bound lowered) tightens the check.
fn bound(
    o: &Option<Scalar>,
    n: &Option<Scalar>,
    lower: bool,
    field: &str,
    push: &mut impl FnMut(Impact, String, String),
) {
    let tighter = match (o, n) {
        (a, b) if a == b => return,
        (None, Some(_)) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => match (as_f64(a), as_f64(b)) {
            (Some(a), Some(b)) => {
                if lower {
                    b > a
                } else {
                    b < a
                }
            }
            _ => true,
        },
        (None, None) => return,
    };
    let impact = if tighter {
        Impact::Breaking
    } else {
        Impact::NonBreaking
    };
    let show = |s: &Option<Scalar>| s.as_ref().map_or("none".to_string(), |v| v.to_string());
    push(
        impact,
        field.to_string(),
        format!(
            "{} from {} to {}",
            if tighter { "tightened" } else { "loosened" },
            show(o),
            show(n)
        ),
    );
}

fn as_f64(s: &Scalar) -> Option<f64> {
    match s {
        Scalar::Int(i) => Some(*i as f64),
        Scalar::Float(f) => Some(*f),
        _ => None,
    }
}

fn grants(old: &Contract, new: &Contract, push: &mut impl FnMut(Impact, String, String)) {
    let has_pii = new.schema.iter().any(Column::is_pii);
    for g in &old.access_policy {
        let role = g.role.as_str();
        let at = format!("access_policy.{role}");
        match new.grant_for(role) {
            None => push(
                Impact::Breaking,
                at,
                format!("role {role} loses access to the product"),
            ),
            Some(n) => {
                if n.permission > g.permission {
                    let impact = if has_pii {
                        Impact::Security
                    } else {
                        Impact::NonBreaking
                    };
                    push(
                        impact,
                        format!("{at}.permission"),
                        format!(
                            "role {role} is raised from {} to {}",
                            g.permission, n.permission
                        ),
                    );
                } else if n.permission < g.permission {
                    push(
                        Impact::Breaking,
                        format!("{at}.permission"),
                        format!(
                            "role {role} is lowered from {} to {}",
                            g.permission, n.permission
                        ),
                    );
                }
                match (&g.row_filter, &n.row_filter) {
                    (Some(f), None) => push(
                        Impact::Security,
                        format!("{at}.row_filter"),
                        format!("row filter {f:?} is removed: role {role} sees every row"),
                    ),
                    (None, Some(f)) => push(
                        Impact::Breaking,
                        format!("{at}.row_filter"),
                        format!("row filter {f:?} is added: role {role} sees fewer rows"),
                    ),
                    (Some(a), Some(b)) if a != b => push(
                        Impact::Security,
                        format!("{at}.row_filter"),
                        format!(
                            "row filter changed from {a:?} to {b:?}: review which rows role {role} now sees"
                        ),
                    ),
                    _ => {}
                }
            }
        }
    }
    for n in &new.access_policy {
        let role = n.role.as_str();
        if old.grant_for(role).is_none() {
            let clear = n.permission == Permission::Read && has_pii;
            push(
                Impact::Security,
                format!("access_policy.{role}"),
                if clear {
                    format!("new grant: role {role} may read PII in the clear")
                } else {
                    format!("new grant: role {role} may {}", n.permission)
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const V1: &str = r#"
dataset: profiles
version: v1
owner: team@company.com
schema:
  - {name: id, type: integer, required: true, pii: false}
  - {name: full_name, type: string, pii: true, mask: redact}
  - {name: email, type: string, pii: true}
  - {name: tier, type: string, enum: [bronze, silver, gold], pii: false}
  - {name: score, type: double, min: 0, max: 100, pii: false}
access_policy:
  - {role: data_analyst, permission: read}
  - {role: marketing, permission: read_masked}
  - {role: eu_support, permission: read, row_filter: "tier = 'gold'"}
"#;

    fn parse(text: &str) -> Contract {
        crate::parse_contract(Path::new("c.yaml"), text).unwrap()
    }

    fn changes(new: &str) -> Vec<(Impact, String)> {
        diff(&parse(V1), &parse(new))
            .changes
            .into_iter()
            .map(|c| (c.impact, c.field))
            .collect()
    }

    #[test]
    fn labelled_values_diff_by_meaning() {
        let v1 = V1.replace(
            "enum: [bronze, silver, gold]",
            "values: [{value: bronze, label: Bronze}, {value: silver, label: Silver}, \
             {value: gold, label: Gold}]",
        );
        let with = |values: &str| {
            let new = V1.replace("enum: [bronze, silver, gold]", values);
            diff(&parse(&v1), &parse(&new))
                .changes
                .into_iter()
                .map(|c| (c.impact, c.field, c.message))
                .collect::<Vec<_>>()
        };
        // A new code: allowed, listed with its label.
        let d = with(
            "values: [{value: bronze, label: Bronze}, {value: silver, label: Silver}, \
             {value: gold, label: Gold}, {value: platinum, label: Platinum}]",
        );
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].0, Impact::NonBreaking);
        assert_eq!(d[0].1, "schema.tier.values");
        assert!(d[0].2.contains("platinum (Platinum)"), "{d:?}");
        // A removed code and a relabelled one: breaking, each named.
        let d = with("values: [{value: bronze, label: Bronze}, {value: silver, label: Gold}]");
        assert_eq!(
            d.iter().map(|c| (c.0, c.1.as_str())).collect::<Vec<_>>(),
            vec![
                (Impact::Breaking, "schema.tier.values"),
                (Impact::Breaking, "schema.tier.values.silver"),
            ]
        );
        assert!(d[0].2.contains("gold (Gold)"), "{d:?}");
        assert!(d[1].2.contains("\"Silver\" becomes \"Gold\""), "{d:?}");
        // A new description of a code is listed, not breaking.
        let d = with(
            "values: [{value: bronze, label: Bronze}, {value: silver, label: Silver, \
             description: second tier}, {value: gold, label: Gold}]",
        );
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].0, Impact::NonBreaking);
        // Back to a bare enum of the same codes: the labels are lost.
        let d = with("enum: [bronze, silver, gold]");
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(
            (d[0].0, d[0].1.as_str()),
            (Impact::Breaking, "schema.tier.values")
        );
        // A unit: declared is listed, changed is breaking.
        let scored =
            |u: &str| V1.replace("min: 0, max: 100", &format!("min: 0, max: 100, unit: {u}"));
        let d = diff(&parse(V1), &parse(&scored("points")));
        assert_eq!(d.changes[0].impact, Impact::NonBreaking);
        let d = diff(&parse(&scored("points")), &parse(&scored("percent")));
        assert_eq!(d.changes[0].impact, Impact::Breaking);
        assert_eq!(d.changes[0].field, "schema.score.unit");
    }

    #[test]
    fn a_lost_tag_is_a_security_change_and_a_new_one_is_not_breaking() {
        let tagged = V1.replace(
            "{name: email, type: string, pii: true}",
            "{name: email, type: string, pii: true, tags: [pii.email]}",
        );
        let d = diff(&parse(&tagged), &parse(V1));
        assert_eq!(
            d.changes
                .iter()
                .map(|c| (c.impact, c.field.as_str()))
                .collect::<Vec<_>>(),
            vec![(Impact::Security, "schema.email.tags")]
        );
        assert!(d.changes[0].message.contains("pii.email"), "{d:?}");
        assert_eq!(
            changes(&tagged),
            vec![(Impact::NonBreaking, "schema.email.tags".to_string())]
        );
    }

    #[test]
    fn an_identical_contract_has_no_change() {
        let d = diff(&parse(V1), &parse(V1));
        assert!(d.changes.is_empty() && d.version_error.is_none(), "{d:?}");
    }

    #[test]
    fn schema_changes_are_classified() {
        let new = V1
            .replace(
                "  - {name: full_name, type: string, pii: true, mask: redact}\n",
                "",
            )
            .replace("{name: id, type: integer", "{name: id, type: long")
            .replace(
                "enum: [bronze, silver, gold]",
                "enum: [silver, gold], required: true",
            )
            .replace("min: 0, max: 100", "min: 10, max: 1000")
            + "";
        let new = new.replace(
            "access_policy:",
            "  - {name: nickname, type: string, pii: false}\naccess_policy:",
        );
        assert_eq!(
            changes(&new),
            vec![
                (Impact::NonBreaking, "schema.id.type".into()),
                (Impact::Breaking, "schema.full_name".into()),
                (Impact::Breaking, "schema.tier.required".into()),
                (Impact::Breaking, "schema.tier.enum".into()),
                (Impact::Breaking, "schema.score.min".into()),
                (Impact::NonBreaking, "schema.score.max".into()),
                (Impact::NonBreaking, "schema.nickname".into()),
            ]
        );
        let d = diff(&parse(V1), &parse(&new));
        assert!(d.version_error.unwrap().contains("v2"));
        // The same changes under v2 are allowed.
        assert!(
            diff(
                &parse(V1),
                &parse(&new.replace("version: v1", "version: v2"))
            )
            .version_error
            .is_none()
        );
    }

    #[test]
    fn narrowing_a_type_is_breaking() {
        let v = V1.replace("{name: score, type: double", "{name: score, type: integer");
        assert_eq!(
            changes(&v),
            vec![(Impact::Breaking, "schema.score.type".into())]
        );
    }

    #[test]
    fn more_visibility_is_security_relevant_even_without_a_breaking_change() {
        let new = V1
            .replace(
                "{name: full_name, type: string, pii: true, mask: redact}",
                "{name: full_name, type: string, pii: true, mask: hash}",
            )
            .replace(
                "{name: email, type: string, pii: true}",
                "{name: email, type: string, pii: false}",
            )
            .replace(", row_filter: \"tier = 'gold'\"", "")
            .replace(
                "  - {role: marketing, permission: read_masked}",
                "  - {role: marketing, permission: read}\n  - {role: sales, permission: read}",
            );
        assert_eq!(
            changes(&new),
            vec![
                (Impact::Security, "schema.full_name.mask".into()),
                (Impact::Security, "schema.email.pii".into()),
                (
                    Impact::Security,
                    "access_policy.marketing.permission".into()
                ),
                (
                    Impact::Security,
                    "access_policy.eu_support.row_filter".into()
                ),
                (Impact::Security, "access_policy.sales".into()),
            ]
        );
        let d = diff(&parse(V1), &parse(&new));
        assert!(
            d.version_error.is_none(),
            "security changes need review, not a major"
        );
        assert!(
            d.changes[4].message.contains("in the clear"),
            "{:?}",
            d.changes[4]
        );
    }

    #[test]
    fn a_changed_row_filter_and_a_lost_grant() {
        let new = V1
            .replace("tier = 'gold'", "tier IN ('gold', 'silver')")
            .replace("  - {role: data_analyst, permission: read}\n", "");
        assert_eq!(
            changes(&new),
            vec![
                (Impact::Breaking, "access_policy.data_analyst".into()),
                (
                    Impact::Security,
                    "access_policy.eu_support.row_filter".into()
                ),
            ]
        );
    }

    #[test]
    fn a_version_going_backwards_is_refused() {
        let v2 = V1.replace("version: v1", "version: v2");
        let d = diff(&parse(&v2), &parse(V1));
        assert!(d.version_error.unwrap().contains("older"));
    }
}
