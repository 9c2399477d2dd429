//! The audit trail: one JSON line per request, chained by SHA-256 so that a removed or
//! edited line is detectable (`meshgate audit verify FILE`).
//!
//! A record never holds a password, a token or the hash key, nor a value a policy may
//! protect: every literal of the SQL (strings in every quoting, numbers) and of an error's
//! text is redacted by SQL's own tokenizer, not by a pattern.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use std::borrow::Cow;

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Whitespace};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::{error, info};

/// One request, as audited.
#[derive(Debug, Clone, Serialize, Default)]
pub struct AuditRecord {
    pub time: String,
    pub principal: String,
    /// The identity provider that vouched for the principal; absent for configured users.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    pub roles: Vec<String>,
    pub client: String,
    /// The RPC or statement kind: `statement`, `prepared`, `get_tables`, `handshake`…
    pub kind: String,
    /// `flight` or `postgres`: the door the request came in by.
    pub protocol: String,
    /// SQL with string literals redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// `domain.dataset vN permission`, for every product read.
    pub datasets: Vec<String>,
    /// `domain.dataset vN:column:mask`.
    pub masked_columns: Vec<String>,
    pub rows: u64,
    pub bytes: u64,
    pub duration_ms: u64,
    /// `ok`, or the gRPC code of the failure.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The contracts a query ran under ([`meshgate_mesh::Mesh::epoch`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalog_epoch: Option<String>,
    /// The epoch its ticket was planned under, when that was another one (contracts
    /// changed in between, or replicas not yet reloaded alike).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ticket_epoch: Option<String>,
    /// `local` or `distributed`, for queries that ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// Why the routing rule chose that engine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The Ballista job of a distributed query.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
}

impl AuditRecord {
    /// A request's line as it starts: who, from where, what kind, by which protocol.
    pub fn new(
        principal: &meshgate_policy::Principal,
        client: &str,
        kind: &str,
        protocol: &str,
    ) -> AuditRecord {
        AuditRecord {
            time: chrono::Utc::now().to_rfc3339(),
            principal: principal.name.clone(),
            issuer: principal.issuer.clone(),
            roles: principal.roles.iter().cloned().collect(),
            client: client.to_string(),
            kind: kind.to_string(),
            protocol: protocol.to_string(),
            ..Default::default()
        }
    }
}

/// What is stored instead of a statement the tokenizer cannot read.
const UNREADABLE: &str = "[statement not tokenizable: redacted]";

/// `WHERE email = 'alice@x.com' AND n > 42` → `WHERE email = '?' AND n > ?`: every
/// literal the SQL tokenizer finds (single, double, dollar, escaped, national, hex and
/// byte strings, numbers) and every comment.
pub fn redact_sql(sql: &str) -> String {
    match Tokenizer::new(&GenericDialect {}, sql).tokenize() {
        Ok(tokens) => tokens.iter().map(|t| redacted(t, false)).collect(),
        Err(_) => UNREADABLE.to_string(),
    }
}

/// An error's text without the values it quotes (a failed cast quotes the value, a parse
/// error the token it stopped at); quoted names go too, since one may be a mistyped value.
/// Text the tokenizer cannot read (an apostrophe in prose) is cut where a value may start.
pub fn redact_text(text: &str) -> String {
    match Tokenizer::new(&GenericDialect {}, text).tokenize() {
        Ok(tokens) => tokens.iter().map(|t| redacted(t, true)).collect(),
        Err(_) => {
            let cut = text
                .find(|c: char| c == '\'' || c == '"' || c == '`' || c.is_ascii_digit())
                .unwrap_or(text.len());
            format!("{}[…]", &text[..cut])
        }
    }
}

fn redacted(token: &Token, quoted_words: bool) -> Cow<'static, str> {
    match token {
        Token::Number(..) => Cow::Borrowed("?"),
        Token::SingleQuotedString(_)
        | Token::DoubleQuotedString(_)
        | Token::TripleSingleQuotedString(_)
        | Token::TripleDoubleQuotedString(_)
        | Token::DollarQuotedString(_)
        | Token::SingleQuotedByteStringLiteral(_)
        | Token::DoubleQuotedByteStringLiteral(_)
        | Token::TripleSingleQuotedByteStringLiteral(_)
        | Token::TripleDoubleQuotedByteStringLiteral(_)
        | Token::SingleQuotedRawStringLiteral(_)
        | Token::DoubleQuotedRawStringLiteral(_)
        | Token::TripleSingleQuotedRawStringLiteral(_)
        | Token::TripleDoubleQuotedRawStringLiteral(_)
        | Token::NationalStringLiteral(_)
        | Token::QuoteDelimitedStringLiteral(_)
        | Token::NationalQuoteDelimitedStringLiteral(_)
        | Token::EscapedStringLiteral(_)
        | Token::UnicodeStringLiteral(_)
        | Token::HexStringLiteral(_) => Cow::Borrowed("'?'"),
        Token::Whitespace(
            Whitespace::SingleLineComment { .. } | Whitespace::MultiLineComment(_),
        ) => Cow::Borrowed(" "),
        // A quoted "identifier" that is no identifier is a mistyped value.
        Token::Word(w) if w.quote_style.is_some() && (quoted_words || !is_identifier(&w.value)) => {
            Cow::Borrowed("\"?\"")
        }
        other => Cow::Owned(other.to_string()),
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub struct AuditLog {
    file: Option<Mutex<(File, String)>>,
}

impl AuditLog {
    /// Appends to `path`, continuing the chain of what is already there.
    pub fn open(path: Option<&Path>) -> std::io::Result<AuditLog> {
        let Some(path) = path else {
            return Ok(AuditLog { file: None });
        };
        let prev = match File::open(path) {
            Ok(f) => BufReader::new(f)
                .lines()
                .map_while(Result::ok)
                .last()
                .map(|l| line_hash(&l))
                .unwrap_or_else(|| GENESIS.to_string()),
            Err(_) => GENESIS.to_string(),
        };
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(AuditLog {
            file: Some(Mutex::new((file, prev))),
        })
    }

    pub fn record(&self, record: &AuditRecord) {
        let json = serde_json::to_value(record).expect("serializable");
        info!(target: "meshgate::audit", "{json}");
        let Some(file) = &self.file else { return };
        let mut guard = file.lock().unwrap_or_else(|e| e.into_inner());
        let (f, prev) = &mut *guard;
        let mut obj = json;
        obj["prev"] = serde_json::Value::String(prev.clone());
        let line = obj.to_string();
        if let Err(e) = writeln!(f, "{line}").and_then(|_| f.flush()) {
            error!("cannot append to the audit file: {e}");
            return;
        }
        *prev = line_hash(&line);
    }
}

fn line_hash(line: &str) -> String {
    hex::encode(Sha256::digest(line.as_bytes()))
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}:{line}: {problem}", path.display())]
    Broken {
        path: PathBuf,
        line: usize,
        problem: String,
    },
}

/// Checks the chain of an audit file; returns the number of lines.
pub fn verify(path: &Path) -> Result<usize, AuditError> {
    let read = |source| AuditError::Read {
        path: path.to_path_buf(),
        error: source,
    };
    let reader = BufReader::new(File::open(path).map_err(read)?);
    let mut prev = GENESIS.to_string();
    let mut n = 0;
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(read)?;
        let broken = |problem: String| AuditError::Broken {
            path: path.to_path_buf(),
            line: i + 1,
            problem,
        };
        let value: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| broken(format!("not JSON: {e}")))?;
        let claimed = value["prev"].as_str().unwrap_or("");
        if claimed != prev {
            return Err(broken(
                "the chain is broken here: the line before it was removed or edited".into(),
            ));
        }
        prev = line_hash(&line);
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_literal_is_redacted() {
        assert_eq!(
            redact_sql("SELECT * FROM t WHERE e = 'a@b.c' AND n = 'it''s' AND x = 1"),
            "SELECT * FROM t WHERE e = '?' AND n = '?' AND x = ?"
        );
        for (sql, secret) in [
            ("SELECT $$alice@example.com$$", "alice@example.com"),
            ("SELECT $tag$alice@example.com$tag$", "alice@example.com"),
            ("SELECT E'alice\\'s@example.com'", "alice"),
            ("SELECT N'Alice Dubois'", "Alice"),
            ("SELECT X'616C696365'", "616C"),
            ("SELECT * FROM t WHERE phone = 33612345678", "33612345678"),
            ("SELECT * FROM t WHERE amount = 1234.5e3", "1234"),
            ("SELECT 1 -- alice@example.com\n", "alice"),
            ("SELECT /* alice@example.com */ 1", "alice"),
            (
                "SELECT * FROM t WHERE email = \"alice@example.com\"",
                "alice",
            ),
            ("SELECT 'unterminated alice@example.com", "alice"),
        ] {
            let stored = redact_sql(sql);
            assert!(!stored.contains(secret), "{sql} → {stored}");
        }
        // Names stay: the audit still says what was read.
        assert_eq!(
            redact_sql(r#"SELECT "order_id", email FROM checkout.orders"#),
            r#"SELECT "order_id", email FROM checkout.orders"#
        );
    }

    #[test]
    fn error_texts_keep_no_values() {
        for (text, secret) in [
            (
                "Arrow error: Cast error: Cannot cast string 'alice@example.com' to value of Int32 type",
                "alice",
            ),
            ("Overflow happened on: 3000000000 * 12", "3000000000"),
            ("Invalid timezone \"Mars/Olympus\"", "Olympus"),
            ("can't parse alice's date 1985-03-02", "1985"),
        ] {
            let stored = redact_text(text);
            assert!(!stored.contains(secret), "{text} → {stored}");
        }
        assert!(
            redact_text("Cast error: Cannot cast string 'x' to Int32")
                .starts_with("Cast error: Cannot cast string")
        );
    }

    #[test]
    fn chain_detects_removed_and_edited_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(Some(&path)).unwrap();
        for i in 0..4 {
            log.record(&AuditRecord {
                principal: format!("p{i}"),
                ..Default::default()
            });
        }
        drop(log);
        // Reopening continues the chain.
        AuditLog::open(Some(&path))
            .unwrap()
            .record(&AuditRecord::default());
        assert_eq!(verify(&path).unwrap(), 5);

        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let removed = [&lines[..2], &lines[3..]].concat().join("\n") + "\n";
        std::fs::write(&path, removed).unwrap();
        assert!(matches!(
            verify(&path),
            Err(AuditError::Broken { line: 3, .. })
        ));

        let edited = text.replace("\"p1\"", "\"px\"");
        std::fs::write(&path, edited).unwrap();
        assert!(matches!(
            verify(&path),
            Err(AuditError::Broken { line: 3, .. })
        ));
    }
}
