//! What psql's describe commands (`\dt+`, `\df`, `\du`, `\dn+`) send that DataFusion does
//! not plan as written, made plannable: `ARRAY(SELECT …)` becomes an aggregated scalar
//! subquery, `obj_description`/`col_description` read `pg_description` (the contracts'
//! descriptions), and the size and function-catalog helpers exist.
//!
//! Sizes are an output channel like any other: `pg_table_size` is NULL for every table, so
//! `\dt+` shows no size rather than the bytes of rows a caller may not see.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, BooleanArray, StringArray};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::scalar::ScalarValue;
use sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Query, SelectItem, SetExpr, Statement,
    visit_expressions_mut,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// Rewrites the describe-command idioms in `statement` in place.
pub(crate) fn rewrite(statement: &mut Statement) {
    let _ = visit_expressions_mut(statement, |e| {
        if let Some(new) = replacement(e) {
            *e = new;
        }
        ControlFlow::<()>::Continue(())
    });
}

fn replacement(e: &Expr) -> Option<Expr> {
    let Expr::Function(f) = e else {
        return None;
    };
    let name = f.name.0.last()?.as_ident()?.value.to_ascii_lowercase();
    match (name.as_str(), &f.args) {
        ("array", FunctionArguments::Subquery(q)) => array_of(q),
        ("obj_description", FunctionArguments::List(l)) => {
            let args = plain(&l.args)?;
            description(args.first()?, "0")
        }
        ("col_description", FunctionArguments::List(l)) => match plain(&l.args)?.as_slice() {
            [object, column] => description(object, &column.to_string()),
            _ => None,
        },
        _ => None,
    }
}

/// `ARRAY(SELECT x FROM …)` → `(SELECT array_agg(x) FROM …)`: the same rows collected,
/// correlated or not (an empty set is NULL rather than `{}`).
fn array_of(q: &Query) -> Option<Expr> {
    if let Some(e) = options_of_unnest(q) {
        return Some(e);
    }
    let mut q = q.clone();
    let SetExpr::Select(select) = q.body.as_mut() else {
        return None;
    };
    let [item] = select.projection.as_mut_slice() else {
        return None;
    };
    let inner = match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e.clone(),
        _ => return None,
    };
    *item = SelectItem::UnnamedExpr(parse(&format!("array_agg({inner})"))?);
    Some(Expr::Subquery(Box::new(q)))
}

/// psql's `\d+` collects a relation's TOAST options with `ARRAY(SELECT 'toast.' || x FROM
/// unnest(tc.reloptions) x)`, an outer column inside a table function, which DataFusion does
/// not decorrelate. meshgate's `pg_class.reloptions` is NULL on every row (see
/// `catalog.rs`), so such an array over it is NULL too.
fn options_of_unnest(q: &Query) -> Option<Expr> {
    use sqlparser::ast::TableFactor;
    let SetExpr::Select(select) = q.body.as_ref() else {
        return None;
    };
    let [from] = select.from.as_slice() else {
        return None;
    };
    let argument = match &from.relation {
        TableFactor::UNNEST { array_exprs, .. } => match array_exprs.as_slice() {
            [e] => e.clone(),
            _ => return None,
        },
        TableFactor::Table {
            name,
            args: Some(args),
            ..
        } if name
            .0
            .last()?
            .as_ident()?
            .value
            .eq_ignore_ascii_case("unnest") =>
        {
            match plain(&args.args)?.as_slice() {
                [e] => (*e).clone(),
                _ => return None,
            }
        }
        _ => return None,
    };
    let column = match &argument {
        Expr::Identifier(i) => i,
        Expr::CompoundIdentifier(parts) => parts.last()?,
        _ => return None,
    };
    column
        .value
        .eq_ignore_ascii_case("reloptions")
        .then(|| parse("CAST(NULL AS VARCHAR[])"))
        .flatten()
}

/// The comment of an object (`objsubid` 0) or of a column, from `pg_description`.
fn description(object: &Expr, column: &str) -> Option<Expr> {
    parse(&format!(
        "(SELECT max(d.description) FROM pg_catalog.pg_description d \
         WHERE d.objoid = {object} AND d.objsubid = {column})"
    ))
}

fn plain(args: &[FunctionArg]) -> Option<Vec<&Expr>> {
    args.iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
            _ => None,
        })
        .collect()
}

fn parse(sql: &str) -> Option<Expr> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .ok()
}

/// `pg_size_pretty`, `pg_table_size`, `pg_function_is_visible`,
/// `pg_get_function_result`, `pg_get_function_arguments`.
pub(crate) fn udfs() -> Vec<ScalarUDF> {
    vec![
        create_udf(
            "pg_size_pretty",
            vec![DataType::Int64],
            DataType::Utf8,
            Volatility::Immutable,
            Arc::new(|args: &[ColumnarValue]| {
                let sizes = ColumnarValue::values_to_arrays(args)?;
                let pretty: StringArray = sizes[0]
                    .as_primitive::<Int64Type>()
                    .iter()
                    .map(|s| s.map(size_pretty))
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(pretty) as ArrayRef))
            }),
        ),
        // No size of a product is shown: it would count rows some callers cannot see.
        constant("pg_table_size", DataType::Int64, ScalarValue::Int64(None)),
        // meshgate defines no SQL functions of its own in a schema.
        constant(
            "pg_function_is_visible",
            DataType::Boolean,
            ScalarValue::Boolean(Some(true)),
        ),
        constant(
            "pg_get_function_result",
            DataType::Utf8,
            ScalarValue::Utf8(None),
        ),
        constant(
            "pg_get_function_arguments",
            DataType::Utf8,
            ScalarValue::Utf8(None),
        ),
    ]
}

/// A function of an oid whose answer does not depend on it.
fn constant(name: &str, ty: DataType, value: ScalarValue) -> ScalarUDF {
    create_udf(
        name,
        vec![DataType::Int32],
        ty,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let rows = ColumnarValue::values_to_arrays(args)?[0].len();
            match &value {
                ScalarValue::Boolean(Some(b)) => {
                    Ok(ColumnarValue::Array(Arc::new(BooleanArray::from(vec![
                        *b;
                        rows
                    ]))))
                }
                v => Ok(ColumnarValue::Array(v.to_array_of_size(rows)?)),
            }
        }),
    )
}

/// PostgreSQL's rendering: bytes up to 10 kB, then the largest unit that keeps the number
/// under 10240, rounded.
fn size_pretty(bytes: i64) -> String {
    const UNITS: [&str; 6] = ["bytes", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value.abs() >= 10240.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{} {}", value.round() as i64, UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let mut s = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        rewrite(&mut s);
        s.to_string()
    }

    #[test]
    fn psqls_idioms_become_plannable_sql() {
        assert_eq!(
            rewritten(
                "SELECT ARRAY(SELECT b.rolname FROM pg_catalog.pg_roles b WHERE b.oid = r.oid) AS m FROM pg_catalog.pg_roles r"
            ),
            "SELECT (SELECT array_agg(b.rolname) FROM pg_catalog.pg_roles b WHERE b.oid = r.oid) \
             AS m FROM pg_catalog.pg_roles r"
        );
        assert_eq!(
            rewritten(
                "SELECT pg_catalog.obj_description(c.oid, 'pg_class') FROM pg_catalog.pg_class c"
            ),
            "SELECT (SELECT max(d.description) FROM pg_catalog.pg_description d WHERE \
             d.objoid = c.oid AND d.objsubid = 0) FROM pg_catalog.pg_class c"
        );
        assert_eq!(
            rewritten(
                "SELECT col_description(a.attrelid, a.attnum) FROM pg_catalog.pg_attribute a"
            ),
            "SELECT (SELECT max(d.description) FROM pg_catalog.pg_description d WHERE \
             d.objoid = a.attrelid AND d.objsubid = a.attnum) FROM pg_catalog.pg_attribute a"
        );
        // psql's `\d+`: the options of a relation, which no relation has here.
        assert_eq!(
            rewritten(
                "SELECT array_to_string(c.reloptions || array(select 'toast.' || x from \
                 pg_catalog.unnest(tc.reloptions) x), ', ') FROM pg_catalog.pg_class c"
            ),
            "SELECT array_to_string(c.reloptions || CAST(NULL AS VARCHAR[]), ', ') \
             FROM pg_catalog.pg_class c"
        );
        // Anything else is left as written.
        let plain = "SELECT array_length(x, 1), make_array(1, 2) FROM t";
        assert_eq!(rewritten(plain), plain);
    }

    #[test]
    fn sizes_read_as_postgres_writes_them() {
        assert_eq!(size_pretty(0), "0 bytes");
        assert_eq!(size_pretty(10239), "10239 bytes");
        assert_eq!(size_pretty(10240), "10 kB");
        assert_eq!(size_pretty(5 * 1024 * 1024 * 1024), "5120 MB");
        assert_eq!(size_pretty(20 * 1024 * 1024 * 1024), "20 GB");
    }
}
