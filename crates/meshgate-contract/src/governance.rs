//! Federated governance: the mesh-wide rules of `contracts/governance.yaml`, checked on
//! every contract by `meshgate lint` and by the server, which refuses to serve a contract
//! that breaks them (fail closed). Every rule is optional, so a mesh adopts them one by one.

use std::path::Path;

use regex::{Regex, RegexBuilder};
use serde::Deserialize;

use crate::model::{Contract, MaskKind, Permission, Role};
use crate::parse::{SourceMap, syntax_error};
use crate::policies::{EffectivePolicy, MeshPolicy, loosenings};
use crate::{ContractError, Diagnostic};

/// The rules as written in `governance.yaml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Governance {
    /// Every column says `pii: true` or `pii: false`; silence is not a decision.
    #[serde(default)]
    pub explicit_pii: bool,
    /// Columns whose names match one of these (regular expressions, case-insensitive) must
    /// be `pii: true`.
    #[serde(default, deserialize_with = "patterns")]
    pub pii_name_patterns: Vec<NamePattern>,
    /// The owner's e-mail must be at one of these domains.
    #[serde(default)]
    pub owner_domains: Vec<String>,
    /// The product has a description.
    #[serde(default)]
    pub require_description: bool,
    /// Every column has a description.
    #[serde(default)]
    pub require_column_descriptions: bool,
    /// The product states freshness and quality service levels.
    #[serde(default)]
    pub require_sla: bool,
    /// The only roles that may be granted `read` (in the clear) on a product with PII.
    #[serde(default)]
    pub pii_read_roles: Option<Vec<Role>>,
    /// The masks a PII column may use (`hash` when it names none).
    #[serde(default)]
    pub allowed_masks: Option<Vec<MaskKind>>,
    /// Masks, denials and row filters imposed on every product they match, as a floor that
    /// contracts may tighten but not loosen.
    #[serde(default)]
    pub policies: Vec<MeshPolicy>,
}

/// A column-name pattern, kept with its source text for messages.
#[derive(Debug, Clone)]
pub struct NamePattern {
    pub source: String,
    regex: Regex,
}

fn patterns<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<NamePattern>, D::Error> {
    Vec::<String>::deserialize(d)?
        .into_iter()
        .map(|source| {
            RegexBuilder::new(&source)
                .case_insensitive(true)
                .build()
                .map(|regex| NamePattern { source, regex })
                .map_err(|e| serde::de::Error::custom(format!("invalid pattern: {e}")))
        })
        .collect()
}

/// One broken rule: the rule's key in `governance.yaml`, the contract field, the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub rule: &'static str,
    pub field: String,
    pub message: String,
}

impl Governance {
    /// Parses `governance.yaml`; errors are located like a contract's.
    pub fn parse(file: &Path, text: &str) -> Result<Governance, ContractError> {
        let map = SourceMap::new(text);
        let g: Governance =
            serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text))
                .map_err(|e| syntax_error(file, &map, e))?;
        let mut problems = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for (i, p) in g.policies.iter().enumerate() {
            let mut found = p.problems();
            if !names.insert(p.name.as_str()) {
                found.push(("name", format!("policy {} is defined twice", p.name)));
            }
            for (field, message) in found {
                let field = format!("policies[{i}].{field}");
                let (line, column) = map.locate(&field);
                problems.push(Diagnostic {
                    file: file.to_path_buf(),
                    line,
                    column,
                    field,
                    message,
                });
            }
        }
        if problems.is_empty() {
            Ok(g)
        } else {
            Err(ContractError::Invalid(problems))
        }
    }

    /// `c`'s effective policy when served in `domain` under these rules.
    pub fn effective(&self, c: &Contract, domain: &str) -> EffectivePolicy {
        EffectivePolicy::with_policies(c, domain, &self.policies)
    }

    pub fn load(path: &Path) -> Result<Governance, ContractError> {
        let text = std::fs::read_to_string(path).map_err(|source| ContractError::Io {
            path: path.to_path_buf(),
            error: source,
        })?;
        Governance::parse(path, &text)
    }

    /// Every rule `contract` breaks when served in `domain` (`None` when not known: policies
    /// of any domain are then checked); empty when it complies.
    pub fn check(&self, c: &Contract, domain: Option<&str>) -> Vec<Violation> {
        let mut out = Vec::new();
        let mut push = |rule, field: String, message: String| {
            out.push(Violation {
                rule,
                field,
                message,
            })
        };
        if let Some(domain) = c.owner.as_str().rsplit('@').next()
            && !self.owner_domains.is_empty()
            && !self
                .owner_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain))
        {
            push(
                "owner_domains",
                "owner".into(),
                format!(
                    "owner {} is not at an allowed domain ({})",
                    c.owner.as_str(),
                    self.owner_domains.join(", ")
                ),
            );
        }
        if self.require_description && c.description.as_deref().is_none_or(|d| d.trim().is_empty())
        {
            push(
                "require_description",
                "description".into(),
                "the product needs a description".into(),
            );
        }
        if self.require_sla {
            let sla = c.sla.as_ref();
            if sla.and_then(|s| s.freshness.as_ref()).is_none() {
                push(
                    "require_sla",
                    "sla.freshness".into(),
                    "the product needs an sla.freshness".into(),
                );
            }
            if sla.and_then(|s| s.quality.as_ref()).is_none() {
                push(
                    "require_sla",
                    "sla.quality".into(),
                    "the product needs an sla.quality".into(),
                );
            }
        }
        for (i, col) in c.schema.iter().enumerate() {
            let name = col.name.as_str();
            if self.explicit_pii && col.pii.is_none() {
                push(
                    "explicit_pii",
                    format!("schema[{i}].name"),
                    format!("column {name} must state pii: true or pii: false"),
                );
            }
            if col.pii != Some(true)
                && let Some(p) = self
                    .pii_name_patterns
                    .iter()
                    .find(|p| p.regex.is_match(name))
            {
                push(
                    "pii_name_patterns",
                    format!(
                        "schema[{i}].{}",
                        if col.pii.is_some() { "pii" } else { "name" }
                    ),
                    format!(
                        "column {name} looks like PII (matches {:?}) but is not marked pii: true",
                        p.source
                    ),
                );
            }
            if self.require_column_descriptions
                && col
                    .description
                    .as_deref()
                    .is_none_or(|d| d.trim().is_empty())
            {
                push(
                    "require_column_descriptions",
                    format!("schema[{i}].name"),
                    format!("column {name} needs a description"),
                );
            }
            if col.pii == Some(true)
                && let Some(allowed) = &self.allowed_masks
            {
                let mask = col.mask.unwrap_or(MaskKind::Hash);
                if !allowed.contains(&mask) {
                    let field = if col.mask.is_some() { "mask" } else { "name" };
                    push(
                        "allowed_masks",
                        format!("schema[{i}].{field}"),
                        format!(
                            "column {name} uses mask {mask}, which governance does not allow ({})",
                            list(allowed)
                        ),
                    );
                }
            }
        }
        let domain = c.domain.as_ref().map(|d| d.as_str()).or(domain);
        for (field, message) in loosenings(c, domain, &self.policies) {
            push("policies", field, message);
        }
        let has_pii = c.schema.iter().any(|col| col.pii == Some(true));
        if let (true, Some(roles)) = (has_pii, &self.pii_read_roles) {
            for (j, g) in c.access_policy.iter().enumerate() {
                if g.permission == Permission::Read && !roles.contains(&g.role) {
                    push(
                        "pii_read_roles",
                        format!("access_policy[{j}].permission"),
                        format!(
                            "role {} may not read PII in the clear; grant read_masked, or ask \
                             governance to allow it (allowed: {})",
                            g.role.as_str(),
                            list(roles)
                        ),
                    );
                }
            }
        }
        out
    }

    /// [`Governance::check`] as located diagnostics for `file`, whose text is `text`.
    pub fn diagnostics(
        &self,
        file: &Path,
        text: &str,
        c: &Contract,
        domain: Option<&str>,
    ) -> Vec<Diagnostic> {
        let violations = self.check(c, domain);
        if violations.is_empty() {
            return Vec::new();
        }
        let map = SourceMap::new(text);
        violations
            .into_iter()
            .map(|v| {
                let (line, column) = map.locate(&v.field);
                Diagnostic {
                    file: file.to_path_buf(),
                    line,
                    column,
                    field: v.field,
                    message: format!("{} (governance: {})", v.message, v.rule),
                }
            })
            .collect()
    }
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads, parses, validates and checks a contract against governance in one pass, so a
/// caller gets format and governance problems together, each at its line. `domain` is the
/// domain its folder gives it, when known (a contract's own `domain:` wins).
pub fn load_governed_contract(
    path: &Path,
    governance: Option<&Governance>,
    domain: Option<&str>,
) -> Result<Contract, ContractError> {
    let text = std::fs::read_to_string(path).map_err(|source| ContractError::Io {
        path: path.to_path_buf(),
        error: source,
    })?;
    let contract = crate::parse_contract(path, &text)?;
    let problems = governance
        .map(|g| g.diagnostics(path, &text, &contract, domain))
        .unwrap_or_default();
    if problems.is_empty() {
        Ok(contract)
    } else {
        Err(ContractError::Invalid(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r#"
explicit_pii: true
pii_name_patterns: ["e_?mail", "phone", "(^|_)ip($|_)"]
owner_domains: [company.com]
require_description: true
require_column_descriptions: false
require_sla: true
pii_read_roles: [data_analyst]
allowed_masks: [hash, redact]
"#;

    fn rules() -> Governance {
        Governance::parse(Path::new("governance.yaml"), RULES).unwrap()
    }

    fn contract(text: &str) -> Contract {
        crate::parse_contract(Path::new("c.yaml"), text).unwrap()
    }

    const GOOD: &str = r#"
dataset: orders
version: v1
owner: team-a@company.com
description: "Orders"
sla: {freshness: "1 hour", quality: "99%"}
schema:
  - {name: id, type: long, pii: false}
  - {name: user_email, type: string, pii: true}
access_policy:
  - {role: data_analyst, permission: read}
  - {role: marketing, permission: read_masked}
"#;

    #[test]
    fn a_compliant_contract_has_no_violation() {
        assert_eq!(rules().check(&contract(GOOD), None), vec![]);
    }

    #[test]
    fn every_rule_reports_its_name_and_the_field_at_fault() {
        let bad = r#"
dataset: orders
version: v1
owner: someone@gmail.com
schema:
  - {name: id, type: long}
  - {name: client_ip, type: string, pii: false}
  - {name: phone, type: string, pii: true, mask: last4}
access_policy:
  - {role: data_analyst, permission: read}
  - {role: marketing, permission: read}
"#;
        let got: Vec<(&str, String)> = rules()
            .check(&contract(bad), None)
            .into_iter()
            .map(|v| (v.rule, v.field))
            .collect();
        assert_eq!(
            got,
            vec![
                ("owner_domains", "owner".to_string()),
                ("require_description", "description".into()),
                ("require_sla", "sla.freshness".into()),
                ("require_sla", "sla.quality".into()),
                ("explicit_pii", "schema[0].name".into()),
                ("pii_name_patterns", "schema[1].pii".into()),
                ("allowed_masks", "schema[2].mask".into()),
                ("pii_read_roles", "access_policy[1].permission".into()),
            ]
        );
    }

    #[test]
    fn the_seed_as_written_is_valid_but_not_explicit_about_pii() {
        let seed = "dataset: s\nversion: v1\nowner: t@company.com\ndescription: d\n\
                    sla: {freshness: 1 hour, quality: 99%}\nschema:\n  - name: order_id\n    \
                    type: string\n  - name: user_email\n    type: string\n    pii: true\n";
        let c = contract(seed);
        let d = rules().diagnostics(Path::new("seed.yaml"), seed, &c, None);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!((d[0].line, d[0].column), (7, 5), "{}", d[0]);
        assert!(
            d[0].message.ends_with("(governance: explicit_pii)"),
            "{}",
            d[0]
        );
    }

    #[test]
    fn pii_read_roles_only_matter_for_products_with_pii() {
        let text = GOOD
            .replace("pii: true", "pii: false")
            .replace("user_email", "order_total");
        let c = contract(&text.replace(
            "marketing, permission: read_masked",
            "marketing, permission: read",
        ));
        assert_eq!(rules().check(&c, None), vec![]);
    }

    #[test]
    fn malformed_policies_are_located() {
        let text = "policies:\n  - name: a\n    match: {tags: [pii.email]}\n    mask: hash\n    deny: true\n  - name: b\n    match: {}\n    deny: true\n  - name: c\n    match: {domains: [x]}\n    mask: hash\n    roles: [r]\n    except_roles: [s]\n  - name: a\n    match: {domains: [x]}\n    row_filter: \"region = $1\"\n";
        let e = Governance::parse(Path::new("g.yaml"), text).unwrap_err();
        let got: Vec<(usize, String)> = e
            .diagnostics()
            .iter()
            .map(|d| (d.line, d.field.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (2, "policies[0].name".to_string()),
                (7, "policies[1].match".into()),
                (10, "policies[2].match".into()),
                (13, "policies[2].except_roles".into()),
                (16, "policies[3].row_filter".into()),
                (14, "policies[3].name".into()),
            ]
        );
        let e = Governance::parse(
            Path::new("g.yaml"),
            "policies:\n  - name: a\n    match: {tags: [PII Email]}\n    mask: hash\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("pii.email"), "{e}");
    }

    #[test]
    fn a_contract_below_a_policy_floor_breaks_the_policies_rule() {
        let g = Governance::parse(
            Path::new("g.yaml"),
            "policies:\n  - name: emails\n    match: {tags: [pii.email]}\n    mask: hash\n    except_roles: [data_analyst]\n",
        )
        .unwrap();
        let text = GOOD.replace(
            "{name: user_email, type: string, pii: true}",
            "{name: user_email, type: string, pii: true, mask: email, tags: [pii.email]}",
        );
        let c = contract(&text);
        let d = g.diagnostics(Path::new("c.yaml"), &text, &c, Some("checkout"));
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!((d[0].line, d[0].field.as_str()), (9, "schema[1].mask"));
        assert!(d[0].message.ends_with("(governance: policies)"), "{}", d[0]);
        // Tightening is fine: redact hides all that hash hides.
        let text = text.replace("mask: email", "mask: redact");
        assert_eq!(g.check(&contract(&text), Some("checkout")), vec![]);
    }

    #[test]
    fn malformed_rules_are_located() {
        let e = Governance::parse(
            Path::new("g.yaml"),
            "explicit_pii: true\nallowed_masks: [hash, blur]\n",
        )
        .unwrap_err();
        let d = &e.diagnostics()[0];
        assert_eq!(d.line, 2, "{d}");
        assert!(d.field.starts_with("allowed_masks"), "{d}");
        let e = Governance::parse(Path::new("g.yaml"), "pii_name_patterns: [\"(\"]\n").unwrap_err();
        assert!(e.to_string().contains("invalid pattern"), "{e}");
        let e = Governance::parse(Path::new("g.yaml"), "explicit_pi: true\n").unwrap_err();
        assert!(e.to_string().contains("explicit_pi"), "{e}");
    }
}
