//! `:user.<name>` in row filters: one predicate per role that reads the caller's own
//! attributes (`region IN (:user.regions)`), so "each support agent sees their regions"
//! needs one role, not one per region.
//!
//! The reference never becomes SQL text: it is turned into a parameter here, the gateway
//! plans the filter once with the parameter typed by the column it is compared with, and
//! binds each caller's values as literals of that type.

use sqlparser::dialect::GenericDialect;
use sqlparser::tokenizer::{Location, Token, Tokenizer};

/// How a row filter refers to an attribute; the parameter a planner sees is named so too.
pub const ATTRIBUTE_PREFIX: &str = ":user.";

/// A row filter with its `:user.<name>` references written as parameters `$1`, `$2`… (the
/// same attribute always the same number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowFilterSql {
    pub sql: String,
    /// `attributes[i]` is parameter `$i+1`.
    pub attributes: Vec<String>,
}

impl RowFilterSql {
    /// The attribute parameter `$n` stands for, if it is one.
    pub fn attribute_of(&self, parameter: &str) -> Option<&str> {
        let n: usize = parameter.strip_prefix('$')?.parse().ok()?;
        self.attributes.get(n.checked_sub(1)?).map(String::as_str)
    }
}

/// Reads `:user.<name>` references out of a row filter. A parameter written by hand (`$1`,
/// `?`) is refused: nothing would bind it.
pub fn row_filter_sql(sql: &str) -> Result<RowFilterSql, String> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| format!("row_filter {sql:?} does not parse: {e}"))?;
    let mut attributes: Vec<String> = Vec::new();
    let mut edits: Vec<(Location, Location, String)> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i].token {
            Token::Placeholder(p) => {
                return Err(format!(
                    "row_filter holds the parameter {p}: refer to the caller's attributes \
                     as {ATTRIBUTE_PREFIX}<name>"
                ));
            }
            Token::Colon => {
                let name = match (tokens.get(i + 1), tokens.get(i + 2), tokens.get(i + 3)) {
                    (Some(u), Some(dot), Some(n))
                        if matches!(&u.token, Token::Word(w) if w.value == "user" && w.quote_style.is_none())
                            && dot.token == Token::Period =>
                    {
                        match &n.token {
                            Token::Word(w) if w.quote_style.is_none() && is_name(&w.value) => {
                                Some((w.value.clone(), n.span.end))
                            }
                            _ => None,
                        }
                    }
                    _ => None,
                };
                let Some((name, end)) = name else {
                    return Err(format!(
                        "row_filter {sql:?}: a ':' starts a reference to an attribute of the \
                         caller, {ATTRIBUTE_PREFIX}<name> (letters, digits, _)"
                    ));
                };
                let n = match attributes.iter().position(|a| *a == name) {
                    Some(p) => p + 1,
                    None => {
                        attributes.push(name);
                        attributes.len()
                    }
                };
                edits.push((tokens[i].span.start, end, format!("${n}")));
                i += 4;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    if edits.is_empty() {
        return Ok(RowFilterSql {
            sql: sql.to_string(),
            attributes,
        });
    }
    let text = crate::SqlText::new(sql);
    let mut out = String::with_capacity(sql.len());
    let mut copied = 0;
    for (start, end, with) in edits {
        let (Some(s), Some(e)) = (text.offset(start), text.offset(end)) else {
            return Err(format!(
                "row_filter {sql:?}: cannot place an attribute reference"
            ));
        };
        out.push_str(&sql[copied..s]);
        out.push_str(&with);
        copied = e;
    }
    out.push_str(&sql[copied..]);
    Ok(RowFilterSql {
        sql: out,
        attributes,
    })
}

fn is_name(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_become_numbered_parameters_outside_literals() {
        let f = row_filter_sql(
            "region IN (:user.regions) AND note <> ':user.regions' \
             AND tier = :user.tier OR region IN (:user.regions)",
        )
        .unwrap();
        assert_eq!(
            f.sql,
            "region IN ($1) AND note <> ':user.regions' AND tier = $2 OR region IN ($1)"
        );
        assert_eq!(f.attributes, ["regions", "tier"]);
        assert_eq!(f.attribute_of("$2"), Some("tier"));
        assert_eq!(f.attribute_of("$3"), None);
        // Casts keep their `::`; a filter without references is unchanged.
        let plain = row_filter_sql("CAST(x AS int)::bigint > 1 -- :user.x").unwrap();
        assert_eq!(plain.sql, "CAST(x AS int)::bigint > 1 -- :user.x");
        assert!(plain.attributes.is_empty());
        // Multi-line text keeps its place.
        let f = row_filter_sql("a = 'it''s'\n  AND b = :user.b").unwrap();
        assert_eq!(f.sql, "a = 'it''s'\n  AND b = $1");
    }

    #[test]
    fn hand_written_parameters_and_malformed_references_are_refused() {
        for (sql, says) in [
            ("region = $1", "parameter $1"),
            ("region = ?", "parameter ?"),
            ("region = :region", "starts a reference"),
            ("region = :user", "starts a reference"),
            ("region = :user.\"x y\"", "starts a reference"),
            ("region = :user.", "starts a reference"),
        ] {
            let e = row_filter_sql(sql).unwrap_err();
            assert!(e.contains(says), "{sql}: {e}");
        }
    }
}
