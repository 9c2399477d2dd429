//! `?` parameters, as JDBC tools and many ADBC users write them. DataFusion reads only
//! `$1`, `$2`…, so each `?` is numbered in order of appearance before the statement is
//! planned. The SQL tokenizer finds them: a `?` inside a string literal, a quoted name or a
//! comment is left as it is.

use std::borrow::Cow;

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Tokenizer};

use super::QueryError;

/// `sql` with its `?` (and SQLite's `?N`) written as `$n`; unchanged when it has none.
/// Numbering some parameters and leaving others to their order is ambiguous, so `?`
/// mixed with `$n` or `?N` is refused.
pub(crate) fn number(sql: &str) -> Result<Cow<'_, str>, QueryError> {
    if !sql.contains('?') {
        return Ok(Cow::Borrowed(sql));
    }
    // A statement the tokenizer cannot read is left to the planner, which says why.
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location() else {
        return Ok(Cow::Borrowed(sql));
    };
    let mut edits: Vec<(Location, usize, String)> = Vec::new();
    let (mut ordered, mut numbered) = (0usize, false);
    for t in &tokens {
        let Token::Placeholder(p) = &t.token else {
            continue;
        };
        if p == "?" {
            ordered += 1;
            edits.push((t.span.start, 1, format!("${ordered}")));
        } else if let Some(n) = p.strip_prefix('?') {
            numbered = true;
            edits.push((t.span.start, p.len(), format!("${n}")));
        } else {
            numbered = true;
        }
    }
    if edits.is_empty() {
        return Ok(Cow::Borrowed(sql));
    }
    if ordered > 0 && numbered {
        return Err(QueryError::invalid(
            "a statement numbers its parameters either with ? (in order) or with $1, $2…, \
             not both",
        ));
    }
    let text = meshgate_contract::SqlText::new(sql);
    let mut out = String::with_capacity(sql.len() + edits.len() * 2);
    let mut copied = 0;
    for (at, len, with) in edits {
        let Some(i) = text
            .offset(at)
            .filter(|&i| sql[i..].starts_with('?') && i >= copied)
        else {
            return Err(QueryError::internal(&format!(
                "cannot place the parameter at {at} of the statement"
            )));
        };
        out.push_str(&sql[copied..i]);
        out.push_str(&with);
        copied = i + len;
    }
    out.push_str(&sql[copied..]);
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::number;

    #[test]
    fn question_marks_are_numbered_in_order_outside_literals_and_comments() {
        let cases = [
            (
                "SELECT * FROM t WHERE a = ? AND b IN (?, ?)",
                "SELECT * FROM t WHERE a = $1 AND b IN ($2, $3)",
            ),
            (
                "SELECT '?', \"odd?name\" FROM t -- why?\nWHERE a = ? /* ? */ AND b=?",
                "SELECT '?', \"odd?name\" FROM t -- why?\nWHERE a = $1 /* ? */ AND b=$2",
            ),
            // Characters before a parameter that take more than one byte.
            (
                "SELECT 'é€' AS x\n  , ? AS y",
                "SELECT 'é€' AS x\n  , $1 AS y",
            ),
            ("SELECT ?2, ?1", "SELECT $2, $1"),
            ("SELECT $1, '?'", "SELECT $1, '?'"),
            ("SELECT 'no parameter?'", "SELECT 'no parameter?'"),
        ];
        for (sql, expected) in cases {
            assert_eq!(number(sql).unwrap(), expected, "{sql}");
        }
    }

    #[test]
    fn mixing_styles_is_refused_and_unreadable_sql_is_left_to_the_planner() {
        for sql in ["SELECT ?, $2", "SELECT ?1, ?"] {
            let e = number(sql).unwrap_err();
            assert!(e.message.contains("not both"), "{sql}: {}", e.message);
        }
        assert_eq!(number("SELECT 'open ?").unwrap(), "SELECT 'open ?");
    }
}
