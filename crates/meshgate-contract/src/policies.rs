//! Mesh-wide policies: the `policies:` of governance.yaml, which impose a mask, a denial or
//! a row filter on every product whose columns carry a tag (or that lives in a domain), for
//! some roles. They are a floor: each product's effective policy is its contract's grants
//! made at least as strict as every policy that matches it, and a contract that asks for
//! less than the floor is refused (by `meshgate lint` and by the server alike).
//!
//! Everything here is data: the gateway plans the row filters and applies the masks that
//! [`EffectivePolicy`] lists, the catalog shows them with their [`Source`], and `meshgate
//! diff` compares two of them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::diff::{Change, Impact};
use crate::model::{Column, Contract, Identifier, MaskKind, Permission, Role, Tag};

/// One rule of `policies:`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshPolicy {
    /// Names the policy in the catalog, in diffs and in refusals.
    pub name: Role,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(rename = "match")]
    pub matches: PolicyMatch,
    /// The roles the policy binds; every role when absent.
    #[serde(default)]
    pub roles: Option<Vec<Role>>,
    /// Roles the policy leaves alone (with `roles` absent: "everyone but these").
    #[serde(default)]
    pub except_roles: Vec<Role>,
    /// Matching columns are shown with this mask (or a stricter one).
    #[serde(default)]
    pub mask: Option<MaskKind>,
    /// Matching products are not readable at all.
    #[serde(default)]
    pub deny: bool,
    /// Only rows this predicate keeps are visible; it may refer to `:user.<name>`.
    #[serde(default)]
    pub row_filter: Option<String>,
}

/// What a policy applies to: columns with one of `tags`, in products of one of `domains`.
/// An empty list does not narrow; a policy with both empty is refused.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyMatch {
    #[serde(default)]
    pub tags: Vec<Tag>,
    #[serde(default)]
    pub domains: Vec<Identifier>,
}

/// What a policy does, once validated.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect<'a> {
    Mask(MaskKind),
    Deny,
    RowFilter(&'a str),
}

impl MeshPolicy {
    pub fn effect(&self) -> Option<Effect<'_>> {
        match (self.mask, self.deny, &self.row_filter) {
            (Some(m), false, None) => Some(Effect::Mask(m)),
            (None, true, None) => Some(Effect::Deny),
            (None, false, Some(f)) => Some(Effect::RowFilter(f)),
            _ => None,
        }
    }

    /// Whether the policy binds `role`.
    pub fn binds(&self, role: &str) -> bool {
        self.roles
            .as_ref()
            .is_none_or(|r| r.iter().any(|r| r.as_str() == role))
            && !self.except_roles.iter().any(|r| r.as_str() == role)
    }

    fn tags_column(&self, col: &Column) -> bool {
        col.tags.iter().any(|t| self.matches.tags.contains(t))
    }

    /// Whether the policy applies to the product `c` served in `domain`.
    pub fn matches(&self, c: &Contract, domain: &str) -> bool {
        (self.matches.domains.is_empty()
            || self.matches.domains.iter().any(|d| d.as_str() == domain))
            && (self.matches.tags.is_empty() || c.schema.iter().any(|col| self.tags_column(col)))
    }

    /// The columns a mask policy covers in a product it matches.
    fn masked_columns<'c>(&self, c: &'c Contract) -> impl Iterator<Item = &'c Column> {
        c.schema.iter().filter(|col| self.tags_column(col))
    }

    /// The problems of the policy itself, as (field under `policies[i]`, message).
    pub(crate) fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let name = &self.name;
        match self.effect() {
            None => out.push((
                "name",
                format!("policy {name} must do exactly one thing: mask, deny or row_filter"),
            )),
            Some(Effect::Mask(_)) if self.matches.tags.is_empty() => out.push((
                "match",
                format!("policy {name} masks columns, so its match needs tags"),
            )),
            Some(Effect::RowFilter(sql)) => {
                if let Err(e) = crate::attributes::row_filter_sql(sql) {
                    out.push(("row_filter", e));
                }
            }
            _ => {}
        }
        if self.matches.tags.is_empty() && self.matches.domains.is_empty() {
            out.push((
                "match",
                format!("policy {name} matches nothing: give tags, domains or both"),
            ));
        }
        if self.roles.is_some() && !self.except_roles.is_empty() {
            out.push((
                "except_roles",
                format!("policy {name} lists roles and except_roles: give one of them"),
            ));
        }
        if self.roles.as_ref().is_some_and(Vec::is_empty) {
            out.push((
                "roles",
                format!("policy {name} binds no role (roles: []); remove it or name the roles"),
            ));
        }
        out
    }
}

/// Where a piece of a product's effective policy comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Contract,
    /// A governance policy, by name.
    Policy(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Contract => f.write_str("contract"),
            Source::Policy(p) => write!(f, "governance policy {p}"),
        }
    }
}

/// How one role sees one masked column, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MaskRule {
    pub mask: MaskKind,
    /// Every rule that asked for this mask, or whose masks met into it.
    pub sources: BTreeSet<Source>,
}

impl MaskRule {
    fn tighten(&mut self, mask: MaskKind, source: Source) {
        let met = self.mask.meet(mask);
        match (met == self.mask, met == mask) {
            (true, true) => {
                self.sources.insert(source);
            }
            (true, false) => {}
            (false, true) => self.sources = BTreeSet::from([source]),
            (false, false) => {
                self.sources.insert(source);
            }
        }
        self.mask = met;
    }
}

/// What one granted role reads of a product once governance is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RolePolicy {
    pub permission: Permission,
    /// Column → the mask it is read with; a column that is absent is read in the clear.
    pub masks: BTreeMap<String, MaskRule>,
    /// Every predicate a row must pass (all of them), with where each comes from.
    pub row_filters: Vec<(Source, String)>,
}

/// A product's policy as the gateway enforces it: the contract's grants under the floor of
/// every governance policy that matches the product.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EffectivePolicy {
    /// Each role the contract grants and no policy denies.
    pub roles: BTreeMap<String, RolePolicy>,
    /// Roles the contract grants but a policy denies (role → policy).
    pub denied: BTreeMap<String, String>,
}

impl EffectivePolicy {
    /// The contract's own policy, with no governance above it.
    pub fn of_contract(c: &Contract) -> EffectivePolicy {
        EffectivePolicy::with_policies(c, "", &[])
    }

    /// `c`'s effective policy in `domain` under `policies`. A policy mask that does not fit
    /// a column's type (`year` on a string) is applied as `redact`, which fits every type.
    pub fn with_policies(c: &Contract, domain: &str, policies: &[MeshPolicy]) -> EffectivePolicy {
        let matching: Vec<&MeshPolicy> = policies.iter().filter(|p| p.matches(c, domain)).collect();
        let mut out = EffectivePolicy::default();
        for g in &c.access_policy {
            let role = g.role.as_str();
            if out.roles.contains_key(role) || out.denied.contains_key(role) {
                continue;
            }
            let bound = || matching.iter().filter(|p| p.binds(role));
            if let Some(p) = bound().find(|p| p.effect() == Some(Effect::Deny)) {
                out.denied.insert(role.to_string(), p.name.to_string());
                continue;
            }
            let mut masks: BTreeMap<String, MaskRule> = BTreeMap::new();
            if g.permission == Permission::ReadMasked {
                for col in &c.schema {
                    if let Some(mask) = col.effective_mask() {
                        masks.insert(
                            col.name.to_string(),
                            MaskRule {
                                mask,
                                sources: BTreeSet::from([Source::Contract]),
                            },
                        );
                    }
                }
            }
            let mut row_filters = Vec::new();
            if let Some(f) = &g.row_filter {
                row_filters.push((Source::Contract, f.clone()));
            }
            for p in bound() {
                let source = Source::Policy(p.name.to_string());
                match p.effect() {
                    Some(Effect::Mask(mask)) => {
                        for col in p.masked_columns(c) {
                            let mask = if mask.fits(&col.data_type) {
                                mask
                            } else {
                                MaskKind::Redact
                            };
                            match masks.get_mut(col.name.as_str()) {
                                Some(rule) => rule.tighten(mask, source.clone()),
                                None => {
                                    masks.insert(
                                        col.name.to_string(),
                                        MaskRule {
                                            mask,
                                            sources: BTreeSet::from([source.clone()]),
                                        },
                                    );
                                }
                            }
                        }
                    }
                    Some(Effect::RowFilter(sql)) => row_filters.push((source, sql.to_string())),
                    Some(Effect::Deny) | None => {}
                }
            }
            out.roles.insert(
                role.to_string(),
                RolePolicy {
                    permission: g.permission,
                    masks,
                    row_filters,
                },
            );
        }
        out
    }

    /// How `role` reads `column`: `None` in the clear, or not granted at all.
    pub fn mask_of(&self, role: &str, column: &str) -> Option<&MaskRule> {
        self.roles.get(role)?.masks.get(column)
    }
}

/// What a change of governance does to one product: each role's masks, row filters and
/// denials before and after. Anything that shows more than before is a security change;
/// anything that shows less is breaking for the consumers who relied on it.
pub fn diff_effective(old: &EffectivePolicy, new: &EffectivePolicy) -> Vec<Change> {
    let mut out = Vec::new();
    let mut push = |impact, field: String, message: String| {
        out.push(Change {
            impact,
            field,
            message,
        })
    };
    for (role, policy) in &old.denied {
        if !new.denied.contains_key(role) {
            push(
                Impact::Security,
                format!("access_policy.{role}"),
                format!(
                    "role {role} is no longer denied (was by policy {policy}): it reads the product again"
                ),
            );
        }
    }
    for (role, policy) in &new.denied {
        if !old.denied.contains_key(role) {
            push(
                Impact::Breaking,
                format!("access_policy.{role}"),
                format!("role {role} is denied by policy {policy}"),
            );
        }
    }
    let sources = |r: &MaskRule| {
        r.sources
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (role, n) in &new.roles {
        let Some(o) = old.roles.get(role) else {
            continue;
        };
        let columns: BTreeSet<&String> = o.masks.keys().chain(n.masks.keys()).collect();
        for column in columns {
            let field = format!("schema.{column}.{role}");
            match (o.masks.get(column), n.masks.get(column)) {
                (Some(a), None) => push(
                    Impact::Security,
                    field,
                    format!(
                        "{role} now reads it in the clear (was {} by {})",
                        a.mask,
                        sources(a)
                    ),
                ),
                (None, Some(b)) => push(
                    Impact::Breaking,
                    field,
                    format!("{role} now reads it masked {} ({})", b.mask, sources(b)),
                ),
                (Some(a), Some(b)) if a.mask != b.mask => {
                    if b.mask.at_least_as_strict_as(a.mask) {
                        push(
                            Impact::Breaking,
                            field,
                            format!(
                                "{role} reads it {} instead of {} ({})",
                                b.mask,
                                a.mask,
                                sources(b)
                            ),
                        )
                    } else {
                        push(
                            Impact::Security,
                            field,
                            format!(
                                "{role} reads it {} instead of {}, which shows more ({})",
                                b.mask,
                                a.mask,
                                sources(b)
                            ),
                        )
                    }
                }
                _ => {}
            }
        }
        for (source, sql) in &o.row_filters {
            if !n.row_filters.contains(&(source.clone(), sql.clone())) {
                push(
                    Impact::Security,
                    format!("access_policy.{role}.row_filter"),
                    format!("{role} is no longer filtered by {sql} ({source}): it sees more rows"),
                );
            }
        }
        for (source, sql) in &n.row_filters {
            if !o.row_filters.contains(&(source.clone(), sql.clone())) {
                push(
                    Impact::Breaking,
                    format!("access_policy.{role}.row_filter"),
                    format!("{role} is now filtered by {sql} ({source})"),
                );
            }
        }
    }
    out
}

/// Where a contract asks for less than a policy's floor, as (field, message); the caller
/// names the rule. Each is a way a contract could loosen the floor if it were obeyed:
/// a tagged column declared not PII, a contract mask that shows what the policy hides, a
/// grant to a role the policy denies, a policy row filter over a column the product lacks.
pub(crate) fn loosenings(
    c: &Contract,
    domain: Option<&str>,
    policies: &[MeshPolicy],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in policies {
        // Without a known domain, a domain-scoped policy is checked as if it matched: lint
        // of a loose file errs on the strict side.
        let in_domain = p.matches.domains.is_empty()
            || domain.is_none_or(|d| p.matches.domains.iter().any(|m| m.as_str() == d));
        let tagged = p.matches.tags.is_empty() || c.schema.iter().any(|col| p.tags_column(col));
        if !(in_domain && tagged) {
            continue;
        }
        match p.effect() {
            Some(Effect::Mask(mask)) => {
                // The contract's mask is what its read_masked roles get; it only has to
                // reach the policy's floor for the roles the policy binds.
                let masked_readers_bound = c
                    .access_policy
                    .iter()
                    .any(|g| g.permission == Permission::ReadMasked && p.binds(g.role.as_str()));
                for (i, col) in c.schema.iter().enumerate() {
                    if !p.tags_column(col) {
                        continue;
                    }
                    let name = col.name.as_str();
                    // The newest value of the freshness column is shown as the product's
                    // age, to every reader of the catalog.
                    if c.sla.as_ref().and_then(|s| s.freshness_column.as_deref()) == Some(name) {
                        out.push((
                            "sla.freshness_column".to_string(),
                            format!(
                                "column {name} is masked by policy {}, so its values cannot \
                                 measure freshness (the catalog would show its newest value)",
                                p.name
                            ),
                        ));
                    }
                    let mask = if mask.fits(&col.data_type) {
                        mask
                    } else {
                        MaskKind::Redact
                    };
                    if col.pii == Some(false) {
                        out.push((
                            format!("schema[{i}].pii"),
                            format!(
                                "column {name} is tagged for policy {}, which masks it ({mask}): \
                                 it cannot be pii: false",
                                p.name
                            ),
                        ));
                    } else if let Some(declared) = col.effective_mask()
                        && !declared.at_least_as_strict_as(mask)
                        && masked_readers_bound
                    {
                        let field = if col.mask.is_some() { "mask" } else { "name" };
                        out.push((
                            format!("schema[{i}].{field}"),
                            format!(
                                "column {name} is masked {declared}, which shows what policy {} \
                                 hides ({mask}); use {}",
                                p.name,
                                stricter_than(mask)
                            ),
                        ));
                    }
                }
            }
            Some(Effect::Deny) => {
                for (j, g) in c.access_policy.iter().enumerate() {
                    if p.binds(g.role.as_str()) {
                        out.push((
                            format!("access_policy[{j}].role"),
                            format!(
                                "role {} may not read this product: governance policy {} denies it",
                                g.role, p.name
                            ),
                        ));
                    }
                }
            }
            Some(Effect::RowFilter(sql)) => {
                if c.access_policy.iter().any(|g| p.binds(g.role.as_str()))
                    && let Err(e) = crate::validate::check_row_filter(sql, c)
                {
                    out.push((
                        "schema".to_string(),
                        format!("policy {} filters rows of this product, but {e}", p.name),
                    ));
                }
            }
            None => {}
        }
    }
    out
}

/// `mask`, or the masks that hide at least as much, for a message.
fn stricter_than(mask: MaskKind) -> String {
    let mut ok: Vec<String> = vec![mask.to_string()];
    ok.extend(
        MaskKind::ALL
            .iter()
            .filter(|m| **m != mask && m.at_least_as_strict_as(mask))
            .map(|m| m.to_string()),
    );
    match ok.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => ok.join(""),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::Governance;

    const POLICIES: &str = r#"
policies:
  - name: email-hashed
    match: {tags: [pii.email]}
    mask: hash
    except_roles: [data_analyst]
  - name: no-finance-for-interns
    match: {domains: [finance]}
    deny: true
    roles: [intern]
  - name: support-sees-its-region
    match: {domains: [customers]}
    roles: [support]
    row_filter: "region IN (:user.regions)"
  - name: locations-redacted
    match: {tags: [pii.location]}
    mask: "null"
"#;

    fn policies() -> Vec<MeshPolicy> {
        Governance::parse(Path::new("governance.yaml"), POLICIES)
            .unwrap()
            .policies
    }

    fn contract(text: &str) -> Contract {
        crate::parse_contract(Path::new("c.yaml"), text).unwrap()
    }

    const PROFILES: &str = r#"
dataset: profiles
version: v1
owner: t@company.com
schema:
  - {name: id, type: long, pii: false}
  - {name: email, type: string, pii: true, mask: redact, tags: [pii.email]}
  - {name: alt_email, type: string, pii: true, mask: hash, tags: [pii.email]}
  - {name: city, type: string, pii: true, mask: "null", tags: [pii.location]}
  - {name: region, type: string, pii: false}
access_policy:
  - {role: data_analyst, permission: read}
  - {role: support, permission: read, row_filter: "region <> 'XX'"}
  - {role: marketing, permission: read_masked}
"#;

    fn mask(e: &EffectivePolicy, role: &str, col: &str) -> Option<(MaskKind, Vec<String>)> {
        e.mask_of(role, col)
            .map(|r| (r.mask, r.sources.iter().map(|s| s.to_string()).collect()))
    }

    #[test]
    fn policies_tighten_each_role_and_say_why() {
        let c = contract(PROFILES);
        let e = EffectivePolicy::with_policies(&c, "customers", &policies());
        // The analysts are exempt from the e-mail policy, not from the location one.
        assert_eq!(mask(&e, "data_analyst", "email"), None);
        assert_eq!(
            mask(&e, "data_analyst", "city"),
            Some((
                MaskKind::Null,
                vec!["governance policy locations-redacted".into()]
            ))
        );
        // A reader in the clear gets the policy's mask.
        assert_eq!(
            mask(&e, "support", "alt_email"),
            Some((
                MaskKind::Hash,
                vec!["governance policy email-hashed".into()]
            ))
        );
        // A contract mask stricter than the policy stands, and is credited to the contract.
        assert_eq!(
            mask(&e, "marketing", "email"),
            Some((MaskKind::Redact, vec!["contract".into()]))
        );
        // The same mask from both: both are named.
        assert_eq!(
            mask(&e, "marketing", "alt_email"),
            Some((
                MaskKind::Hash,
                vec!["contract".into(), "governance policy email-hashed".into()]
            ))
        );
        assert_eq!(mask(&e, "marketing", "id"), None);
        // Row filters add up: the contract's and the policy's must both hold.
        assert_eq!(
            e.roles["support"].row_filters,
            vec![
                (Source::Contract, "region <> 'XX'".to_string()),
                (
                    Source::Policy("support-sees-its-region".into()),
                    "region IN (:user.regions)".to_string()
                ),
            ]
        );
        assert!(e.roles["marketing"].row_filters.is_empty());
        // Outside the domain the row filter does not apply.
        let elsewhere = EffectivePolicy::with_policies(&c, "web", &policies());
        assert_eq!(elsewhere.roles["support"].row_filters.len(), 1);
    }

    #[test]
    fn a_governance_change_is_listed_per_role_and_loosening_is_security() {
        let c = contract(PROFILES);
        let before = EffectivePolicy::with_policies(&c, "customers", &policies());
        let mut looser = policies();
        looser.retain(|p| p.name.as_str() != "support-sees-its-region");
        for p in &mut looser {
            if p.name.as_str() == "email-hashed" {
                p.except_roles.push("support".parse().unwrap());
            }
        }
        let after = EffectivePolicy::with_policies(&c, "customers", &looser);
        let got: Vec<(Impact, String)> = diff_effective(&before, &after)
            .into_iter()
            .map(|c| (c.impact, c.field))
            .collect();
        assert_eq!(
            got,
            vec![
                (Impact::Security, "schema.alt_email.support".to_string()),
                (Impact::Security, "schema.email.support".to_string()),
                (
                    Impact::Security,
                    "access_policy.support.row_filter".to_string()
                ),
            ]
        );
        // The other way round, the same changes tighten: breaking, not security.
        let back = diff_effective(&after, &before);
        assert_eq!(back.len(), 3);
        assert!(
            back.iter().all(|c| c.impact == Impact::Breaking),
            "{back:?}"
        );
        assert_eq!(diff_effective(&before, &before), vec![]);
    }

    #[test]
    fn a_denial_removes_the_role_and_names_the_policy() {
        let c = contract(&PROFILES.replace("role: support", "role: intern"));
        let e = EffectivePolicy::with_policies(&c, "finance", &policies());
        assert!(!e.roles.contains_key("intern"));
        assert_eq!(e.denied["intern"], "no-finance-for-interns");
        assert!(e.roles.contains_key("marketing"));
        assert!(
            EffectivePolicy::with_policies(&c, "customers", &policies())
                .roles
                .contains_key("intern")
        );
    }

    #[test]
    fn masks_meet_where_neither_shows_what_the_other_hides() {
        use MaskKind::*;
        for m in MaskKind::ALL {
            assert_eq!(m.meet(m), m);
            assert_eq!(m.meet(Null), Null);
            assert!(Null.at_least_as_strict_as(m));
        }
        assert_eq!(Hash.meet(Email), Redact);
        assert_eq!(Last4.meet(Hash), Redact);
        assert_eq!(Redact.meet(Year), Redact);
        assert!(Redact.at_least_as_strict_as(Hash));
        assert!(!Hash.at_least_as_strict_as(Redact));
        assert!(!Email.at_least_as_strict_as(Hash));
        assert!(!Hash.at_least_as_strict_as(Email));
    }

    #[test]
    fn a_mask_that_does_not_fit_the_type_becomes_redact() {
        let text = PROFILES.replace(
            "{name: id, type: long, pii: false}",
            "{name: id, type: long, pii: true, tags: [pii.email]}",
        );
        let c = contract(&text);
        let p = Governance::parse(
            Path::new("g.yaml"),
            "policies:\n  - {name: p, match: {tags: [pii.email]}, mask: email}\n",
        )
        .unwrap()
        .policies;
        let e = EffectivePolicy::with_policies(&c, "d", &p);
        assert_eq!(mask(&e, "data_analyst", "id").unwrap().0, MaskKind::Redact);
    }

    #[test]
    fn a_contract_that_asks_for_less_than_the_floor_is_refused() {
        let loose = r#"
dataset: profiles
version: v1
owner: t@company.com
schema:
  - {name: email, type: string, pii: false, tags: [pii.email]}
  - {name: alt_email, type: string, pii: true, mask: email, tags: [pii.email]}
  - {name: other_email, type: string, pii: true, tags: [pii.email]}
  - {name: city, type: string, pii: true, mask: redact, tags: [pii.location]}
access_policy:
  - {role: intern, permission: read_masked}
  - {role: support, permission: read}
"#;
        let c = contract(loose);
        let fields: Vec<String> = loosenings(&c, Some("finance"), &policies())
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            fields,
            vec![
                "schema[0].pii",         // tagged e-mail declared not PII
                "schema[1].mask",        // email shows the domain that hash hides
                "access_policy[0].role", // intern in finance
                "schema[3].mask",        // redact shows what null hides
            ]
        );
        // In customers, the support filter needs a region column the product lacks.
        let in_customers: Vec<String> = loosenings(&c, Some("customers"), &policies())
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        assert!(
            in_customers
                .iter()
                .any(|m| m.contains("support-sees-its-region") && m.contains("region")),
            "{in_customers:?}"
        );
        // Unknown domain: domain policies are checked as if they matched.
        assert_eq!(loosenings(&c, None, &policies()).len(), 5);
        // A masked column cannot be the freshness column.
        let dated = contract(
            &PROFILES
                .replace(
                    "schema:",
                    "sla: {freshness: 1 hour, freshness_column: seen_at}\nschema:",
                )
                .replace(
                    "  - {name: region,",
                    "  - {name: seen_at, type: timestamp, \
                     tags: [pii.location]}\n  - {name: region,",
                ),
        );
        let found: Vec<String> = loosenings(&dated, Some("customers"), &policies())
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(found, vec!["sla.freshness_column"]);
        // The compliant product has nothing to say.
        assert_eq!(
            loosenings(&contract(PROFILES), Some("customers"), &policies()),
            vec![]
        );
    }
}
