//! The audit trail: one JSON line per request, chained by SHA-256 so that a removed or
//! edited line is detectable (`meshgate audit verify FILE`).
//!
//! A record never holds a password, a token or the hash key; string literals in SQL are
//! redacted, since they are often the very values a policy protects.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};

use regex::Regex;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::{error, info};

/// One request, as audited.
#[derive(Debug, Clone, Serialize, Default)]
pub struct AuditRecord {
    pub time: String,
    pub principal: String,
    pub roles: Vec<String>,
    pub client: String,
    /// The RPC or statement kind: `statement`, `prepared`, `get_tables`, `handshake`…
    pub kind: String,
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
    /// The contracts a query ran under ([`meshgate_catalog::Mesh::epoch`]).
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

static STRING_LITERAL: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"'(?:[^']|'')*'").unwrap());

/// `WHERE email = 'alice@x.com'` → `WHERE email = '?'`.
pub fn redact_sql(sql: &str) -> String {
    STRING_LITERAL.replace_all(sql, "'?'").into_owned()
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
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
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
        source,
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
    fn literals_are_redacted() {
        assert_eq!(
            redact_sql("SELECT * FROM t WHERE e = 'a@b.c' AND n = 'it''s' AND x = 1"),
            "SELECT * FROM t WHERE e = '?' AND n = '?' AND x = 1"
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
