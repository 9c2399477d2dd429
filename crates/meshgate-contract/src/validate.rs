//! Checks that involve several fields of a contract. Single values are checked by their
//! types while parsing (see [`crate::model`]).

use std::collections::HashSet;

use regex::Regex;
use sqlparser::ast::{Expr, Visit, Visitor};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;
use std::ops::ControlFlow;

use crate::model::{Column, Contract, Scalar, ValueLabel};
use crate::types::ColumnType;

/// Every problem as (field path, message); empty when the contract is valid.
pub(crate) fn validate(c: &Contract) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut push = |field: String, message: String| out.push((field, message));

    if c.schema.is_empty() {
        push(
            "schema".into(),
            "a contract must declare at least one column".into(),
        );
    }
    let mut seen = HashSet::new();
    for (i, col) in c.schema.iter().enumerate() {
        let at = |f: &str| format!("schema[{i}].{f}");
        if !seen.insert(col.name.as_str().to_ascii_lowercase()) {
            push(
                at("name"),
                format!("duplicate column {:?}", col.name.as_str()),
            );
        }
        if let Some(mask) = col.mask {
            if col.pii != Some(true) {
                push(
                    at("mask"),
                    format!("mask {mask} is set but the column is not marked pii: true"),
                );
            } else if !mask.fits(&col.data_type) {
                push(
                    at("mask"),
                    format!(
                        "mask {mask} does not fit a {} column ({})",
                        col.data_type,
                        match mask {
                            crate::MaskKind::Year => "year fits date and timestamp columns",
                            _ => "email and last4 fit string columns",
                        }
                    ),
                );
            }
        }
        check_column_checks(col, &mut |f, m| push(at(f), m));
    }

    if c.delta.is_some() && c.format != crate::StorageFormat::Delta {
        push(
            "delta".into(),
            "a Delta version or timestamp is pinned but the product is not format: delta".into(),
        );
    }
    if c.format == crate::StorageFormat::Delta && c.source.is_some() {
        push(
            "format".into(),
            "a derived product is published by meshgate as Parquet; leave format out".into(),
        );
    }

    if let Some(sla) = &c.sla
        && let Some(name) = &sla.freshness_column
    {
        match c.column(name) {
            None => push(
                "sla.freshness_column".into(),
                format!("unknown column {name:?}"),
            ),
            Some(col) if !col.data_type.is_temporal() => push(
                "sla.freshness_column".into(),
                format!(
                    "column {name:?} is {}, expected date or timestamp",
                    col.data_type
                ),
            ),
            // Freshness is measured over every row and shown with the product's health: the
            // newest value of a PII column would reach readers who see it masked or not.
            Some(col) if col.is_pii() => push(
                "sla.freshness_column".into(),
                format!(
                    "column {name:?} is PII: freshness is shown to every consumer, so \
                     measure it on a column that is not (a load or event time)"
                ),
            ),
            Some(_) => {}
        }
    }

    let mut roles = HashSet::new();
    for (i, grant) in c.access_policy.iter().enumerate() {
        if !roles.insert(grant.role.as_str()) {
            push(
                format!("access_policy[{i}].role"),
                format!("role {:?} is granted twice", grant.role.as_str()),
            );
        }
        if let Some(filter) = &grant.row_filter
            && let Err(msg) = check_row_filter(filter, c)
        {
            push(format!("access_policy[{i}].row_filter"), msg);
        }
    }
    if let Some(source) = &c.source
        && let Err(msg) = check_source_sql(&source.sql)
    {
        push("source.sql".into(), msg);
    }
    out
}

/// A derived product's SQL is one query: the refresher runs it and publishes its rows, so
/// a statement that writes, sets or creates has no place there. Whether it plans over the
/// mesh (names, types, lineage) needs every contract, and is checked by the mesh.
fn check_source_sql(sql: &str) -> Result<(), String> {
    let statements = Parser::parse_sql(&GenericDialect {}, sql)
        .map_err(|e| format!("source.sql does not parse: {e}"))?;
    match statements.as_slice() {
        [sqlparser::ast::Statement::Query(_)] => Ok(()),
        [] => Err("source.sql is empty".into()),
        [_] => Err("source.sql must be a query (SELECT …), not another statement".into()),
        _ => Err(format!(
            "source.sql must be one query, found {} statements",
            statements.len()
        )),
    }
}

fn check_column_checks(col: &Column, push: &mut dyn FnMut(&str, String)) {
    let ty = col.data_type;
    if let Some(values) = &col.allowed {
        if values.is_empty() {
            push("enum", "an enum must list at least one value".into());
        }
        for v in values {
            if !scalar_fits(v, &ty) {
                push("enum", format!("value {v} does not fit a {ty} column"));
            }
        }
    }
    if let Some(values) = &col.values {
        check_values(col, values, push);
    }
    if let Some(unit) = &col.unit {
        if unit.trim().is_empty() {
            push("unit", "a unit must not be empty".into());
        } else if !ty.is_numeric() {
            push(
                "unit",
                format!("unit applies to numeric columns, not {ty} (say it in the description)"),
            );
        }
    }
    for (field, bound) in [("min", &col.min), ("max", &col.max)] {
        if let Some(v) = bound {
            if !(ty.is_numeric() || ty.is_temporal()) {
                push(
                    field,
                    format!("{field} applies to numeric, date and timestamp columns, not {ty}"),
                );
            } else if !scalar_fits(v, &ty) {
                push(field, format!("{field} {v} does not fit a {ty} column"));
            }
        }
    }
    if let (Some(Scalar::Int(lo)), Some(Scalar::Int(hi))) = (&col.min, &col.max)
        && lo > hi
    {
        push("max", format!("max {hi} is below min {lo}"));
    }
    if let Some(p) = &col.pattern {
        if ty != ColumnType::String {
            push(
                "pattern",
                format!("pattern applies to string columns, not {ty}"),
            );
        } else if let Err(e) = Regex::new(p) {
            push("pattern", format!("invalid regular expression: {e}"));
        }
    }
}

/// Labelled values are the allowed set and a lookup: each code once, each label once (a
/// label that means two codes cannot be turned back into one), and no second `enum`.
fn check_values(col: &Column, values: &[ValueLabel], push: &mut dyn FnMut(&str, String)) {
    let ty = col.data_type;
    if col.allowed.is_some() {
        push(
            "values",
            "values already lists the allowed codes: drop enum".into(),
        );
    }
    if values.is_empty() {
        push("values", "values must list at least one value".into());
    }
    let (mut codes, mut labels) = (Vec::new(), HashSet::new());
    for (j, v) in values.iter().enumerate() {
        let at = format!("values[{j}]");
        if !scalar_fits(&v.value, &ty) {
            push(
                &format!("{at}.value"),
                format!("value {} does not fit a {ty} column", v.value),
            );
        } else if codes.contains(&&v.value) {
            push(
                &format!("{at}.value"),
                format!("value {} is listed twice", v.value),
            );
        }
        codes.push(&v.value);
        if v.label.trim().is_empty() {
            push(&format!("{at}.label"), "a label must not be empty".into());
        } else if !labels.insert(v.label.to_lowercase()) {
            push(
                &format!("{at}.label"),
                format!("label {:?} names two values", v.label),
            );
        }
    }
}

fn scalar_fits(v: &Scalar, ty: &ColumnType) -> bool {
    match (v, ty) {
        (Scalar::String(_), ColumnType::String | ColumnType::Date | ColumnType::Timestamp) => true,
        (Scalar::Int(_), t) => t.is_numeric(),
        (Scalar::Float(_), t) => {
            matches!(
                t,
                ColumnType::Double | ColumnType::Decimal | ColumnType::DecimalPs(..)
            )
        }
        (Scalar::Bool(_), ColumnType::Boolean) => true,
        _ => false,
    }
}

/// A row filter is one SQL predicate over the contract's own columns: no subqueries (they
/// would read other products as the owner) and no qualified names. A `:user.<name>`
/// reference stands where a column is compared with it (`col = :user.x`,
/// `col IN (:user.xs)`, `BETWEEN`, `LIKE`), which types it.
pub(crate) fn check_row_filter(sql: &str, c: &Contract) -> Result<(), String> {
    let filter = crate::attributes::row_filter_sql(sql)?;
    let expr = Parser::new(&GenericDialect {})
        .try_with_sql(&filter.sql)
        .and_then(|mut p| {
            let e = p.parse_expr()?;
            p.expect_token(&sqlparser::tokenizer::Token::EOF)?;
            Ok(e)
        })
        .map_err(|e| format!("row_filter {sql:?} does not parse: {e}"))?;

    struct Check<'a> {
        contract: &'a Contract,
        /// Attribute references anywhere, and those compared with a column.
        references: usize,
        placed: usize,
    }
    fn is_reference(e: &Expr) -> bool {
        matches!(e, Expr::Value(v) if matches!(v.value, sqlparser::ast::Value::Placeholder(_)))
    }
    fn is_column(e: &Expr) -> bool {
        matches!(e, Expr::Identifier(_))
    }
    impl Visitor for Check<'_> {
        type Break = String;
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<String> {
            use sqlparser::ast::BinaryOperator as Op;
            match expr {
                Expr::Identifier(id) if self.contract.column(&id.value).is_none() => {
                    return ControlFlow::Break(format!(
                        "row_filter names unknown column {:?}",
                        id.value
                    ));
                }
                Expr::CompoundIdentifier(parts) => {
                    return ControlFlow::Break(format!(
                        "row_filter must name columns without a qualifier, found {}",
                        parts
                            .iter()
                            .map(|p| p.value.as_str())
                            .collect::<Vec<_>>()
                            .join(".")
                    ));
                }
                Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => {
                    return ControlFlow::Break("row_filter must not contain a subquery".into());
                }
                Expr::BinaryOp {
                    left,
                    op: Op::Eq | Op::NotEq | Op::Lt | Op::LtEq | Op::Gt | Op::GtEq,
                    right,
                } if (is_reference(left) && is_column(right))
                    || (is_reference(right) && is_column(left)) =>
                {
                    self.placed += 1;
                }
                Expr::InList { expr, list, .. } if is_column(expr) => {
                    self.placed += list.iter().filter(|e| is_reference(e)).count();
                }
                Expr::Between {
                    expr, low, high, ..
                } if is_column(expr) => {
                    self.placed += usize::from(is_reference(low)) + usize::from(is_reference(high));
                }
                Expr::Like { expr, pattern, .. } | Expr::ILike { expr, pattern, .. }
                    if is_column(expr) && is_reference(pattern) =>
                {
                    self.placed += 1;
                }
                e if is_reference(e) => self.references += 1,
                _ => {}
            }
            ControlFlow::Continue(())
        }
    }
    let mut check = Check {
        contract: c,
        references: 0,
        placed: 0,
    };
    if let ControlFlow::Break(msg) = expr.visit(&mut check) {
        return Err(msg);
    }
    if check.references > check.placed {
        return Err(format!(
            "row_filter {sql:?}: compare each {}<name> with a column directly (col = \
             {0}x, col IN ({0}xs), BETWEEN, LIKE): its type is the column's",
            crate::attributes::ATTRIBUTE_PREFIX
        ));
    }
    Ok(())
}
