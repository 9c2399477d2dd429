//! A Postgres connection's session: who it runs as, what it has set, and the statements
//! that change only the session (`SET`, `SHOW`, `BEGIN`, `DISCARD ALL`…), answered here as
//! PostgreSQL would. Everything else is a query and goes through the query path.
//!
//! Client settings (`application_name`, `DateStyle`, `search_path`…) are kept for the
//! session and shown back; DataFusion's own settings are refused, as on Flight: the
//! deployment sets them. `meshgate.role` narrows the session to one of the user's roles
//! (as `x-meshgate-role` does), `meshgate.execution` chooses where queries run.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use meshgate_policy::Principal;
use sqlparser::ast::{
    ContextModifier, DiscardObject, Expr, Set, Statement, TransactionAccessMode, TransactionMode,
    Value,
};
use tokio_util::sync::CancellationToken;

use crate::query::{ErrorKind, Execution, QueryError};

/// The session of one connection, shared by its handlers and its cancel key.
pub(crate) struct Session {
    state: Mutex<State>,
}

struct State {
    /// The user as logged in, with every role it holds.
    login: Principal,
    /// The role the startup asked for, which `RESET ROLE` and `DISCARD ALL` go back to.
    startup_role: Option<String>,
    role: Option<String>,
    execution: Option<Execution>,
    /// Client settings by lower-case name, as set.
    settings: BTreeMap<String, String>,
    /// The statement running now, for CancelRequest.
    running: CancellationToken,
    /// When a login an identity provider vouched for ends (its token's expiry).
    end: Option<u64>,
}

/// Client settings a session may set, lower-case, and the value each starts with.
const CLIENT_SETTINGS: &[(&str, &str)] = &[
    ("application_name", ""),
    ("bytea_output", "hex"),
    ("client_encoding", "UTF8"),
    ("client_min_messages", "notice"),
    ("datestyle", "ISO, MDY"),
    ("default_transaction_isolation", "read committed"),
    ("default_transaction_read_only", "on"),
    ("extra_float_digits", "1"),
    ("idle_in_transaction_session_timeout", "0"),
    ("intervalstyle", "postgres"),
    ("lc_messages", "C"),
    ("lc_monetary", "C"),
    ("lc_numeric", "C"),
    ("lc_time", "C"),
    ("lock_timeout", "0"),
    ("search_path", "public"),
    ("standard_conforming_strings", "on"),
    ("statement_timeout", "0"),
    ("timezone", "UTC"),
    ("transaction_isolation", "read committed"),
];

/// What the server reports and a session cannot change.
const FIXED: &[(&str, &str)] = &[
    ("integer_datetimes", "on"),
    ("is_superuser", "off"),
    ("max_identifier_length", "63"),
    ("server_encoding", "UTF8"),
    ("server_version", super::SERVER_VERSION),
    ("server_version_num", super::SERVER_VERSION_NUM),
    ("transaction_read_only", "on"),
];

/// The settings that must keep a value the gateway depends on.
const PINNED: &[(&str, &[&str])] = &[
    ("client_encoding", &["utf8", "utf-8", "unicode"]),
    ("standard_conforming_strings", &["on", "true"]),
    ("default_transaction_read_only", &["on", "true"]),
];

impl Session {
    /// The session a login starts: `meshgate.role` from the startup parameters (or
    /// `options=-c meshgate.role=…`) narrows it; `meshgate.execution` likewise.
    pub(crate) fn start(
        login: Principal,
        startup: &HashMap<String, String>,
    ) -> Result<Session, QueryError> {
        let mut options = startup_options(startup.get("options").map(String::as_str));
        for key in ["meshgate.role", "meshgate.execution", "application_name"] {
            if let Some(v) = startup.get(key) {
                options.insert(key.to_string(), v.clone());
            }
        }
        let mut state = State {
            login,
            startup_role: None,
            role: None,
            execution: None,
            settings: BTreeMap::new(),
            running: CancellationToken::new(),
            end: None,
        };
        for (name, value) in options {
            state.set(&name, Some(&value))?;
        }
        state.startup_role = state.role.clone();
        Ok(Session {
            state: Mutex::new(state),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Who statements run as now, under the users as configured now: a removed user is
    /// refused, a revoked role is gone.
    pub(crate) fn current(&self, users: &crate::auth::Users) -> Result<Principal, QueryError> {
        let state = self.lock();
        // A login an identity provider vouched for lasts until its token expires.
        if state.login.issuer.is_some() && state.end.is_none_or(|end| end <= crate::auth::now()) {
            return Err(QueryError::new(
                ErrorKind::Unauthenticated,
                "the identity provider's token has expired: connect again with a new one",
            ));
        }
        let principal = users.current(&state.login).ok_or_else(|| {
            QueryError::new(
                ErrorKind::Unauthenticated,
                format!("user {} no longer exists", state.login.name),
            )
        })?;
        match &state.role {
            None => Ok(principal),
            Some(role) => principal
                .narrowed_to(role)
                .ok_or_else(|| not_held(&principal.name, role)),
        }
    }

    /// Ends the session when an identity provider's token expires.
    pub(crate) fn end_at(&self, end: u64) {
        self.lock().end = Some(end);
    }

    /// The principal as logged in and narrowed (for the login's audit line).
    pub(crate) fn principal(&self) -> Principal {
        let state = self.lock();
        match &state.role {
            Some(role) => state
                .login
                .narrowed_to(role)
                .unwrap_or_else(|| state.login.clone()),
            None => state.login.clone(),
        }
    }

    /// How values are written as text (DateStyle, extra_float_digits…), as set.
    pub(crate) fn format_options(&self) -> pgwire::types::format::FormatOptions {
        let settings: HashMap<String, String> = self
            .lock()
            .settings
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        pgwire::types::format::FormatOptions::from_client_metadata(&settings)
    }

    /// Whether dates are written ISO (`DateStyle` ISO, the default).
    pub(crate) fn iso_dates(&self) -> bool {
        self.lock()
            .settings
            .get("datestyle")
            .is_none_or(|s| s.trim_start().to_ascii_lowercase().starts_with("iso"))
    }

    pub(crate) fn execution(&self) -> Option<Execution> {
        self.lock().execution
    }

    /// A fresh cancel token for the statement that starts now.
    pub(crate) fn start_statement(&self) -> CancellationToken {
        let token = CancellationToken::new();
        self.lock().running = token.clone();
        token
    }

    /// CancelRequest: stops the statement running now, if any.
    pub(crate) fn cancel(&self) {
        self.lock().running.cancel();
    }

    /// Runs a session statement; `None` when `statement` is a query.
    pub(crate) fn command(&self, statement: &Statement) -> Option<Result<Outcome, QueryError>> {
        let mut state = self.lock();
        Some(match statement {
            Statement::Set(set) => match set {
                Set::SingleAssignment {
                    variable, values, ..
                } => {
                    let name = variable.to_string();
                    match values.as_slice() {
                        [value] => setting_value(value)
                            .and_then(|v| state.set(&name, v.as_deref()))
                            .map(|()| Outcome::Tag("SET")),
                        _ => state
                            .set(
                                &name,
                                Some(
                                    &values
                                        .iter()
                                        .map(ToString::to_string)
                                        .collect::<Vec<_>>()
                                        .join(", "),
                                ),
                            )
                            .map(|()| Outcome::Tag("SET")),
                    }
                }
                Set::SetTimeZone { value, .. } => setting_value(value)
                    .and_then(|v| state.set("timezone", v.as_deref()))
                    .map(|()| Outcome::Tag("SET")),
                Set::SetRole {
                    role_name,
                    context_modifier,
                } => {
                    if matches!(context_modifier, Some(ContextModifier::Local)) {
                        return Some(Err(QueryError::invalid(
                            "SET LOCAL ROLE is not supported: meshgate transactions are read-only \
                             snapshots per statement; use SET ROLE",
                        )));
                    }
                    let role = role_name.as_ref().map(|r| r.value.clone());
                    state
                        .set("meshgate.role", role.as_deref())
                        .map(|()| Outcome::Tag("SET"))
                }
                Set::SetTransaction { modes, .. } => read_only(modes).map(|()| Outcome::Tag("SET")),
                Set::SetNames { charset_name, .. } => state
                    .set("client_encoding", Some(&charset_name.value))
                    .map(|()| Outcome::Tag("SET")),
                other => Err(QueryError::new(
                    ErrorKind::PermissionDenied,
                    format!("meshgate does not support {other}"),
                )),
            },
            Statement::ShowVariable { variable } => {
                let name = variable
                    .iter()
                    .map(|i| i.value.clone())
                    .collect::<Vec<_>>()
                    .join(" ");
                state.show(&name).map(|v| Outcome::Show(name, v))
            }
            Statement::StartTransaction { modes, .. } => read_only(modes).map(|()| Outcome::Begin),
            Statement::Commit { .. } => Ok(Outcome::End("COMMIT")),
            Statement::Rollback {
                savepoint: None, ..
            } => Ok(Outcome::End("ROLLBACK")),
            Statement::Discard { object_type } => {
                if matches!(object_type, DiscardObject::ALL) {
                    state.settings.clear();
                    state.role = state.startup_role.clone();
                    state.execution = None;
                    Ok(Outcome::Tag("DISCARD ALL"))
                } else {
                    Ok(Outcome::Tag("DISCARD"))
                }
            }
            Statement::Deallocate { .. } => Ok(Outcome::Tag("DEALLOCATE")),
            _ => return None,
        })
    }
}

/// What a session statement answers.
pub(crate) enum Outcome {
    /// A command tag alone.
    Tag(&'static str),
    /// `SHOW name`: one row, one column.
    Show(String, String),
    Begin,
    End(&'static str),
}

impl State {
    fn set(&mut self, name: &str, value: Option<&str>) -> Result<(), QueryError> {
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            "meshgate.role" | "role" => {
                if let Some(role) = value.filter(|r| !r.eq_ignore_ascii_case("none")) {
                    if self.login.narrowed_to(role).is_none() {
                        return Err(not_held(&self.login.name, role));
                    }
                    self.role = Some(role.to_string());
                } else {
                    self.role = self.startup_role.clone();
                }
                return Ok(());
            }
            "meshgate.execution" => {
                self.execution = value.map(Execution::parse).transpose()?;
                return Ok(());
            }
            _ => {}
        }
        if lower.starts_with("datafusion.") || lower.starts_with("ballista.") {
            return Err(QueryError::new(
                ErrorKind::PermissionDenied,
                // Worded as Flight refuses it: the same statement, the same answer.
                format!(
                    "only queries are allowed: {name} is an engine setting, which the \
                     deployment sets in meshgate.yaml"
                ),
            ));
        }
        if FIXED.iter().any(|(n, _)| *n == lower) {
            return Err(QueryError::new(
                ErrorKind::PermissionDenied,
                format!("parameter \"{name}\" cannot be changed"),
            ));
        }
        if !CLIENT_SETTINGS.iter().any(|(n, _)| *n == lower) {
            return Err(unrecognized(name));
        }
        match value {
            None => {
                self.settings.remove(&lower);
            }
            Some(value) => {
                if let Some((_, allowed)) = PINNED.iter().find(|(n, _)| *n == lower)
                    && !allowed.contains(&value.to_ascii_lowercase().as_str())
                {
                    return Err(QueryError::new(
                        ErrorKind::PermissionDenied,
                        format!("{name} can only be {}", allowed[0]),
                    ));
                }
                self.settings.insert(lower, value.to_string());
            }
        }
        Ok(())
    }

    fn show(&self, name: &str) -> Result<String, QueryError> {
        // `SHOW meshgate.role` arrives as words.
        let lower =
            name.to_ascii_lowercase()
                .replace(" . ", ".")
                .replacen("meshgate ", "meshgate.", 1);
        Ok(match lower.as_str() {
            "meshgate.role" | "role" => self.role.clone().unwrap_or_else(|| "none".into()),
            "meshgate.execution" => self
                .execution
                .map_or_else(|| "auto".into(), |e| e.to_string()),
            "transaction isolation level" => self.show("transaction_isolation")?,
            "time zone" => self.show("timezone")?,
            _ => {
                if let Some(v) = self.settings.get(&lower) {
                    v.clone()
                } else if let Some((_, v)) = CLIENT_SETTINGS
                    .iter()
                    .chain(FIXED)
                    .find(|(n, _)| *n == lower)
                {
                    v.to_string()
                } else {
                    return Err(unrecognized(name));
                }
            }
        })
    }
}

/// `-c name=value` and `--name=value` pairs of the `options` startup parameter.
fn startup_options(options: Option<&str>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut words = options.unwrap_or_default().split_whitespace();
    while let Some(word) = words.next() {
        let pair = if word == "-c" {
            words.next()
        } else if let Some(rest) = word.strip_prefix("--") {
            Some(rest)
        } else {
            word.strip_prefix("-c")
        };
        if let Some((k, v)) = pair.and_then(|p| p.split_once('=')) {
            out.insert(
                k.replace('-', "_").replace("meshgate_", "meshgate."),
                v.to_string(),
            );
        }
    }
    out
}

/// A SET value as text; `DEFAULT` is `None`.
fn setting_value(value: &Expr) -> Result<Option<String>, QueryError> {
    Ok(Some(match value {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            Value::Number(n, _) => n.to_string(),
            Value::Boolean(b) => if *b { "on" } else { "off" }.to_string(),
            other => other.to_string(),
        },
        Expr::Identifier(i) if i.value.eq_ignore_ascii_case("default") => return Ok(None),
        Expr::Identifier(i) => i.value.clone(),
        other => other.to_string(),
    }))
}

/// Transactions are read-only: asking for a writable one is refused.
fn read_only(modes: &[TransactionMode]) -> Result<(), QueryError> {
    if modes.iter().any(|m| {
        matches!(
            m,
            TransactionMode::AccessMode(TransactionAccessMode::ReadWrite)
        )
    }) {
        return Err(QueryError::new(
            ErrorKind::PermissionDenied,
            "meshgate serves read-only transactions",
        ));
    }
    Ok(())
}

fn not_held(user: &str, role: &str) -> QueryError {
    QueryError::new(
        ErrorKind::PermissionDenied,
        format!("{user} does not hold role {role}; a role can only narrow a session"),
    )
}

fn unrecognized(name: &str) -> QueryError {
    QueryError::new(
        ErrorKind::InvalidArgument,
        format!("unrecognized configuration parameter \"{name}\""),
    )
}

/// A connection's cancel key: its process id and secret.
type CancelKey = (i32, Vec<u8>);

/// CancelRequest keys → sessions. A key is dropped with its connection.
#[derive(Default)]
pub(crate) struct Cancels {
    sessions: Mutex<HashMap<CancelKey, std::sync::Weak<Session>>>,
}

impl Cancels {
    pub(crate) fn register(
        &self,
        pid: i32,
        secret: &pgwire::messages::startup::SecretKey,
        session: &Arc<Session>,
    ) {
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| s.strong_count() > 0);
        map.insert((pid, secret.to_bytes().to_vec()), Arc::downgrade(session));
    }

    pub(crate) fn cancel(&self, pid: i32, secret: &pgwire::messages::startup::SecretKey) {
        let map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(session) = map
            .get(&(pid, secret.to_bytes().to_vec()))
            .and_then(std::sync::Weak::upgrade)
        {
            session.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(startup: &[(&str, &str)]) -> Result<Session, QueryError> {
        let startup = startup
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Session::start(
            Principal::new("lead", ["data_analyst", "marketing"]),
            &startup,
        )
    }

    fn run(s: &Session, sql: &str) -> Result<Outcome, QueryError> {
        let statement =
            sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, sql)
                .unwrap()
                .remove(0);
        s.command(&statement).expect("a session statement")
    }

    #[test]
    fn roles_narrow_from_the_startup_and_set_role_never_widens() {
        let s = session(&[("options", "-c meshgate.role=marketing")]).unwrap();
        assert_eq!(
            s.principal().roles.iter().collect::<Vec<_>>(),
            ["marketing"]
        );
        assert!(session(&[("options", "-c meshgate.role=admin")]).is_err());
        let s = session(&[]).unwrap();
        assert!(run(&s, "SET ROLE data_analyst").is_ok());
        assert_eq!(
            s.principal().roles.iter().collect::<Vec<_>>(),
            ["data_analyst"]
        );
        let e = run(&s, "SET ROLE admin").err().unwrap();
        assert_eq!(e.kind, ErrorKind::PermissionDenied);
        assert!(run(&s, "SET ROLE NONE").is_ok());
        assert_eq!(s.principal().roles.len(), 2);
    }

    #[test]
    fn client_settings_are_kept_and_engine_settings_refused() {
        let s = session(&[]).unwrap();
        for sql in [
            "SET application_name = 'superset'",
            "SET DateStyle TO 'ISO, DMY'",
            "SET extra_float_digits = 3",
            "SET search_path TO checkout",
            "SET TIME ZONE 'Europe/Paris'",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            "SET meshgate.execution = local",
        ] {
            assert!(run(&s, sql).is_ok(), "{sql}");
        }
        let show = |name: &str| match run(&s, &format!("SHOW {name}")) {
            Ok(Outcome::Show(_, v)) => v,
            _ => panic!("SHOW {name}"),
        };
        assert_eq!(show("application_name"), "superset");
        assert_eq!(show("DateStyle"), "ISO, DMY");
        assert_eq!(show("timezone"), "Europe/Paris");
        assert_eq!(show("meshgate.execution"), "local");
        assert_eq!(show("server_version"), super::super::SERVER_VERSION);
        for sql in [
            "SET datafusion.execution.target_partitions = 1",
            "SET datafusion.optimizer.skip_failed_rules = true",
            "SET server_version = '1'",
            "SET client_encoding = 'LATIN1'",
            "SET no_such_thing = 1",
            "BEGIN READ WRITE",
        ] {
            assert!(run(&s, sql).is_err(), "{sql}");
        }
        assert!(matches!(
            run(&s, "DISCARD ALL"),
            Ok(Outcome::Tag("DISCARD ALL"))
        ));
        assert_eq!(show("application_name"), "");
        assert_eq!(show("meshgate.execution"), "auto");
    }
}
