//! The data contract: the YAML a domain team publishes with its product (docs/DESIGN.md §2).
//!
//! This crate knows nothing about query engines or networks: it turns contract text into
//! a validated [`Contract`], or into [`Diagnostic`]s that name the file, line and field.

mod attributes;
mod diff;
mod governance;
mod model;
mod parse;
mod policies;
mod sql_text;
mod types;
mod validate;

use std::fmt;
use std::path::PathBuf;

pub use attributes::{ATTRIBUTE_PREFIX, RowFilterSql, row_filter_sql};
pub use diff::{Change, Diff, Impact, diff};
pub use governance::{Governance, NamePattern, Violation, load_governed_contract};
pub use model::{
    Column, ColumnName, Contract, DeltaPin, DerivedSource, Freshness, Grant, Identifier, MaskKind,
    Owner, Percent, Permission, Role, Scalar, Sla, StorageFormat, Tag, ValueLabel, Version,
};
pub use parse::{Identity, load_contract, parse_contract, peek_identity};
pub use policies::{
    Effect, EffectivePolicy, MaskRule, MeshPolicy, PolicyMatch, RolePolicy, Source, diff_effective,
};
pub use sql_text::SqlText;
pub use types::{ColumnType, TIMESTAMP_TZ};

/// One problem in a contract file, located for an editor (`file:line:column`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based.
    pub column: usize,
    /// Path of the offending field, e.g. `schema[2].mask`; empty when unknown.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("cannot read contract {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}", join_lines(.0))]
    Invalid(Vec<Diagnostic>),
}

impl ContractError {
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        match self {
            ContractError::Invalid(d) => d.clone(),
            ContractError::Io {
                path,
                error: source,
            } => vec![Diagnostic {
                file: path.clone(),
                line: 1,
                column: 1,
                field: String::new(),
                message: format!("cannot read: {source}"),
            }],
        }
    }
}

fn join_lines(d: &[Diagnostic]) -> String {
    d.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

pub type Result<T, E = ContractError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The seed contract, exactly as the product brief wrote it.
    const SEED: &str = r#"
dataset: checkout_orders_summary
version: v1
owner: team-checkout@company.com
description: "Completed orders, one row per order"
sla:
  freshness: "1 hour"
  quality: "99.9%"
schema:
  - name: order_id
    type: string
    description: "Unique UUID for the order"
  - name: total_amount
    type: decimal
  - name: user_email
    type: string
    pii: true
access_policy:
  - role: data_analyst
    permission: read
  - role: marketing
    permission: read_masked
"#;

    fn errors(text: &str) -> Vec<Diagnostic> {
        match parse_contract(Path::new("c.yaml"), text) {
            Err(ContractError::Invalid(d)) => d,
            other => panic!("expected diagnostics, got {other:?}"),
        }
    }

    #[test]
    fn seed_parses_as_written() {
        let c = parse_contract(Path::new("seed.yaml"), SEED).unwrap();
        assert_eq!(c.dataset.as_str(), "checkout_orders_summary");
        assert_eq!(c.version, Version(1));
        assert_eq!(c.schema[1].data_type, ColumnType::Decimal);
        assert_eq!(
            c.column("user_email").unwrap().effective_mask(),
            Some(MaskKind::Hash)
        );
        assert_eq!(c.column("order_id").unwrap().effective_mask(), None);
        assert_eq!(
            c.grant_for("marketing").unwrap().permission,
            Permission::ReadMasked
        );
        let sla = c.sla.unwrap();
        assert_eq!(sla.freshness.unwrap().0.as_secs(), 3600);
        assert_eq!(sla.quality.unwrap().0, 99.9);
    }

    #[test]
    fn delta_format_and_pins_parse_and_bad_ones_are_located() {
        let delta = SEED.replace("owner:", "format: delta\ndelta: {version: 12}\nowner:");
        let c = parse_contract(Path::new("c.yaml"), &delta).unwrap();
        assert_eq!(c.format, crate::StorageFormat::Delta);
        assert_eq!(c.delta, Some(crate::DeltaPin::Version(12)));
        let at = SEED.replace(
            "owner:",
            "format: delta\ndelta: {timestamp: \"2026-11-30T12:00:00+01:00\"}\nowner:",
        );
        let c = parse_contract(Path::new("c.yaml"), &at).unwrap();
        assert_eq!(
            c.delta.unwrap().to_string(),
            "as of 2026-11-30T11:00:00+00:00"
        );
        assert_eq!(
            parse_contract(Path::new("c.yaml"), SEED).unwrap().format,
            crate::StorageFormat::Parquet
        );

        let d = errors(&SEED.replace("owner:", "format: iceberg\nowner:"));
        assert_eq!(d[0].field, "format");
        assert!(d[0].message.contains("iceberg"), "{}", d[0]);
        let d = errors(&SEED.replace(
            "owner:",
            "format: delta\ndelta: {version: 1, timestamp: \"2026-01-01T00:00:00Z\"}\nowner:",
        ));
        assert_eq!(d[0].field, "delta");
        assert!(d[0].message.contains("exactly one"), "{}", d[0]);
        let d = errors(&SEED.replace(
            "owner:",
            "format: delta\ndelta: {timestamp: yesterday}\nowner:",
        ));
        assert!(d[0].message.contains("RFC 3339"), "{}", d[0]);
        let d = errors(&SEED.replace("owner:", "delta: {version: 3}\nowner:"));
        assert_eq!(d[0].field, "delta");
        assert!(d[0].message.contains("not format: delta"), "{}", d[0]);
    }

    #[test]
    fn unknown_type_is_located() {
        let text = SEED.replace("type: decimal", "type: decimol");
        let d = errors(&text);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].line, d[0].column), (14, 5), "{}", d[0]);
        assert_eq!(d[0].field, "schema[1].type");
        assert!(
            d[0].message.contains("unknown type \"decimol\""),
            "{}",
            d[0]
        );
        assert!(d[0].to_string().starts_with("c.yaml:14:"), "{}", d[0]);
    }

    #[test]
    fn unknown_key_mask_and_permission_are_refused() {
        let d = errors(&SEED.replace("description: \"Unique", "descripton: \"Unique"));
        assert!(
            d[0].message.contains("unknown field `descripton`"),
            "{}",
            d[0]
        );
        assert_eq!(d[0].line, 12);

        let d = errors(&SEED.replace("    pii: true", "    pii: true\n    mask: scramble"));
        assert_eq!(d[0].field, "schema[2].mask");
        assert!(d[0].message.contains("scramble"), "{}", d[0]);

        let d = errors(&SEED.replace("permission: read_masked", "permission: write"));
        assert_eq!(d[0].field, "access_policy[1].permission");
        assert_eq!(d[0].line, 22);
    }

    #[test]
    fn bad_names_versions_and_owner() {
        let d = errors(&SEED.replace(
            "dataset: checkout_orders_summary",
            "dataset: Checkout-Orders",
        ));
        assert_eq!(d[0].field, "dataset");
        assert_eq!(d[0].line, 2);
        let d = errors(&SEED.replace("version: v1", "version: 1.0"));
        assert_eq!(d[0].field, "version");
        assert!(d[0].message.contains("v<major>"), "{}", d[0]);
        let d = errors(&SEED.replace("team-checkout@company.com", "team checkout"));
        assert_eq!(d[0].field, "owner");
        assert!(d[0].message.contains("e-mail"), "{}", d[0]);
    }

    #[test]
    fn a_pii_freshness_column_is_refused() {
        let text = SEED
            .replace(
                "  quality: \"99.9%\"",
                "  quality: \"99.9%\"\n  freshness_column: born",
            )
            .replace(
                "access_policy:",
                "  - name: born\n    type: date\n    pii: true\n    mask: year\naccess_policy:",
            );
        let d = errors(&text);
        assert_eq!(d[0].field, "sla.freshness_column");
        assert!(d[0].message.contains("is PII"), "{}", d[0]);
        // The same column, not PII, is a freshness column like any other.
        let fine = text.replace("    pii: true\n    mask: year\n", "");
        parse_contract(Path::new("c.yaml"), &fine).unwrap();
    }

    #[test]
    fn cross_field_errors_name_their_line() {
        let text = SEED.replace("  - name: total_amount", "  - name: order_id");
        let d = errors(&text);
        assert_eq!(d[0].field, "schema[1].name");
        assert_eq!(d[0].line, 13);
        assert!(d[0].message.contains("duplicate column"));

        let text = SEED.replace(
            "  - name: total_amount\n    type: decimal",
            "  - name: total_amount\n    type: decimal\n    pii: true\n    mask: email",
        );
        let d = errors(&text);
        assert_eq!(d[0].field, "schema[1].mask");
        assert_eq!(d[0].line, 16);
        assert!(
            d[0].message.contains("does not fit a decimal column"),
            "{}",
            d[0]
        );
    }

    const STATUS: &str = "  - name: status_id
    type: integer
    values:
      - {value: 1, label: placed}
      - {value: 2, label: paid, description: \"payment captured\"}
      - {value: 3, label: shipped}
access_policy:";

    #[test]
    fn labelled_values_are_the_allowed_set_and_say_what_codes_mean() {
        let text = SEED
            .replace("access_policy:", STATUS)
            .replace("    type: decimal", "    type: decimal\n    unit: USD");
        let c = parse_contract(Path::new("c.yaml"), &text).unwrap();
        let status = c.column("status_id").unwrap();
        assert_eq!(
            status.allowed_values().unwrap(),
            vec![Scalar::Int(1), Scalar::Int(2), Scalar::Int(3)]
        );
        assert_eq!(
            status.comment().as_deref(),
            Some("Values: 1 = placed, 2 = paid, 3 = shipped")
        );
        assert_eq!(
            c.column("total_amount").unwrap().comment().as_deref(),
            Some("Unit: USD")
        );
    }

    #[test]
    fn labelled_values_are_checked_where_they_are_written() {
        let with = |from: &str, to: &str| SEED.replace("access_policy:", &STATUS.replace(from, to));
        let d = errors(&with("value: 3", "value: 2"));
        assert_eq!(d[0].field, "schema[3].values[2].value");
        assert_eq!(d[0].line, 23);
        assert!(d[0].message.contains("listed twice"), "{}", d[0]);
        let d = errors(&with("label: shipped", "label: Paid"));
        assert_eq!(d[0].field, "schema[3].values[2].label");
        assert!(d[0].message.contains("names two values"), "{}", d[0]);
        let d = errors(&with("value: 1,", "value: \"one\","));
        assert_eq!(d[0].field, "schema[3].values[0].value");
        assert!(d[0].message.contains("does not fit a integer"), "{}", d[0]);
        let d = errors(&with("label: placed", "label: \"\""));
        assert!(d[0].message.contains("label must not be empty"), "{}", d[0]);
        let d = errors(&with("    values:", "    enum: [1, 2]\n    values:"));
        assert_eq!(d[0].field, "schema[3].values");
        assert!(d[0].message.contains("drop enum"), "{}", d[0]);
        let d = errors(&with(
            "{value: 1, label: placed}",
            "{value: 1, lable: placed}",
        ));
        assert!(d[0].message.contains("lable"), "{}", d[0]);
        // A unit measures numbers.
        let d = errors(&SEED.replace(
            "    description: \"Unique UUID for the order\"",
            "    unit: USD",
        ));
        assert_eq!(d[0].field, "schema[0].unit");
        assert!(
            d[0].message.contains("numeric columns, not string"),
            "{}",
            d[0]
        );
    }

    #[test]
    fn row_filters_must_parse_and_name_known_columns() {
        let with = |f: &str| {
            SEED.replace(
                "    permission: read_masked",
                &format!("    permission: read_masked\n    row_filter: \"{f}\""),
            )
        };
        assert!(parse_contract(Path::new("c"), &with("order_id LIKE 'a%'")).is_ok());
        let d = errors(&with("region = 'EU'"));
        assert_eq!(d[0].field, "access_policy[1].row_filter");
        assert_eq!(d[0].line, 23);
        assert!(
            d[0].message.contains("unknown column \\\"region\\\"")
                || d[0].message.contains("\"region\""),
            "{}",
            d[0]
        );
        let d = errors(&with("order_id = = 1"));
        assert!(d[0].message.contains("does not parse"), "{}", d[0]);
        let d = errors(&with("order_id IN (SELECT x FROM other)"));
        assert!(d[0].message.contains("subquery"), "{}", d[0]);
        let d = errors(&with("t.order_id = 'x'"));
        assert!(d[0].message.contains("qualifier"), "{}", d[0]);
    }

    #[test]
    fn attribute_references_stand_where_a_column_types_them() {
        let with = |f: &str| {
            SEED.replace(
                "    permission: read_masked",
                &format!("    permission: read_masked\n    row_filter: \"{f}\""),
            )
        };
        for ok in [
            "order_id IN (:user.orders)",
            "order_id = :user.order AND :user.order <> order_id",
            "order_id BETWEEN :user.low AND :user.high",
            "order_id LIKE :user.prefix OR order_id NOT IN (:user.blocked, 'x')",
        ] {
            assert!(parse_contract(Path::new("c"), &with(ok)).is_ok(), "{ok}");
        }
        for (bad, says) in [
            (
                "upper(:user.order) = order_id",
                "compare each :user.<name> with a column",
            ),
            (":user.a = :user.b", "compare each"),
            ("order_id = :user.order || 'x'", "compare each"),
            ("order_id = :order", "starts a reference"),
            ("order_id = $1", "parameter $1"),
        ] {
            let d = errors(&with(bad));
            assert_eq!(d[0].field, "access_policy[1].row_filter", "{bad}");
            assert!(d[0].message.contains(says), "{bad}: {}", d[0]);
        }
    }

    #[test]
    fn malformed_yaml_is_located() {
        let d = errors("dataset: a\nschema: [\n  - name: x\n");
        assert!(d[0].line >= 2, "{}", d[0]);
    }
}
