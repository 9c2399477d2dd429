//! Flight session options (`SetSessionOptions`, `GetSessionOptions`, `CloseSession`).
//!
//! The JDBC driver turns a `catalog` connection property into `SetSessionOptions` and
//! treats UNIMPLEMENTED as fatal, so the call must succeed. meshgate's sessions are
//! stateless (the token is the session, any replica serves it), so it takes two options:
//! - `catalog = mesh`, the value that is already true;
//! - `x-meshgate-execution = local|distributed|auto`, answered with a `Set-Cookie` that
//!   cookie-aware clients (JDBC, ADBC with `adbc.flight.sql.rpc.with_cookie_middleware`)
//!   send back on every call; it then counts as the header would, on any replica.
//!
//! Anything else is refused per option, never silently ignored.

use std::collections::HashMap;

use meshgate_mesh::CATALOG;
use tonic::metadata::MetadataMap;

use crate::query::Execution;
use meshgate_proto::flight_session::session_option_value::OptionValue;
use meshgate_proto::flight_session::set_session_options_result::{Error, ErrorValue};
use meshgate_proto::flight_session::{
    CLOSE_SESSION, CloseSessionRequest, CloseSessionResult, GET_SESSION_OPTIONS,
    GetSessionOptionsRequest, GetSessionOptionsResult, SET_SESSION_OPTIONS, SessionOptionValue,
    SetSessionOptionsRequest, SetSessionOptionsResult, close_session_result,
};
use prost::Message;
use tonic::Status;

/// The header and session option a Flight caller chooses the engine with.
pub const EXECUTION_HEADER: &str = "x-meshgate-execution";

/// The caller's engine choice for a call: the header on this call, the session option (the
/// cookie `SetSessionOptions` set, which cookie-aware clients send back on every call, so
/// any replica sees it), and the choice sealed into the ticket, ranked by
/// [`Execution::chosen`]. `None` when nobody chose.
pub(crate) fn execution(
    metadata: &MetadataMap,
    sealed: Option<&str>,
) -> Result<Option<Execution>, Status> {
    let parse = |v: &str| Execution::parse(v).map_err(|e| Status::invalid_argument(e.message));
    let header = match metadata.get(EXECUTION_HEADER) {
        Some(v) => Some(parse(v.to_str().map_err(|_| {
            Status::invalid_argument(format!("{EXECUTION_HEADER} is not text"))
        })?)?),
        None => None,
    };
    let session = session_cookie(metadata).as_deref().map(parse).transpose()?;
    let sealed = sealed.map(parse).transpose()?;
    Ok(Execution::chosen(header, session, sealed))
}

/// The session option's value, from the request's `cookie` headers (HTTP/2 may split
/// them into several); an empty one, a cleared cookie a client still sends, is none.
fn session_cookie(metadata: &MetadataMap) -> Option<String> {
    metadata
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .filter(|c| c.name() == EXECUTION_HEADER)
        .last()
        .map(|c| c.value().to_owned())
        .filter(|v| !v.is_empty())
}

/// The `Set-Cookie` value that makes a client send this choice back.
fn cookie(e: Execution) -> String {
    format!("{EXECUTION_HEADER}={e}")
}

/// The `Set-Cookie` value that makes a client forget its choice.
fn clear_cookie() -> String {
    format!("{EXECUTION_HEADER}=; Max-Age=0")
}

/// The `DoAction` types this module answers, with their descriptions for `ListActions`.
pub(crate) const ACTIONS: [(&str, &str); 3] = [
    (
        SET_SESSION_OPTIONS,
        "Set session options; meshgate accepts catalog=mesh and \
         x-meshgate-execution=local|distributed|auto",
    ),
    (GET_SESSION_OPTIONS, "The session's options"),
    (
        CLOSE_SESSION,
        "Close the session (tokens expire on their own)",
    ),
];

/// What a session action answers: the result body, and a `Set-Cookie` value when the
/// session's options changed.
pub(crate) struct Answer {
    pub(crate) body: Vec<u8>,
    pub(crate) set_cookie: Option<String>,
}

/// Answers one session action for a request carrying `metadata`; `None` when `kind` is
/// not a session action.
pub(crate) fn answer(
    kind: &str,
    body: &[u8],
    metadata: &MetadataMap,
) -> Option<Result<Answer, Status>> {
    let malformed =
        |e: prost::DecodeError| Status::invalid_argument(format!("malformed {kind}: {e}"));
    Some(match kind {
        SET_SESSION_OPTIONS => SetSessionOptionsRequest::decode(body)
            .map_err(malformed)
            .map(|r| set(&r)),
        GET_SESSION_OPTIONS => GetSessionOptionsRequest::decode(body)
            .map_err(malformed)
            .and_then(|_| current(metadata))
            .map(|r| Answer {
                body: r.encode_to_vec(),
                set_cookie: None,
            }),
        CLOSE_SESSION => CloseSessionRequest::decode(body)
            .map_err(malformed)
            .map(|_| Answer {
                body: CloseSessionResult {
                    status: close_session_result::Status::Closed as i32,
                }
                .encode_to_vec(),
                set_cookie: session_cookie(metadata).map(|_| clear_cookie()),
            }),
        _ => return None,
    })
}

fn set(request: &SetSessionOptionsRequest) -> Answer {
    let mut set_cookie = None;
    let errors = request
        .session_options
        .iter()
        .filter_map(|(name, value)| {
            let verdict = match (name.as_str(), &value.option_value) {
                ("catalog", Some(OptionValue::StringValue(v))) if v == CATALOG => return None,
                ("catalog", _) => ErrorValue::InvalidValue,
                (EXECUTION_HEADER, Some(OptionValue::StringValue(v))) => {
                    match Execution::parse(v) {
                        Ok(e) => {
                            set_cookie = Some(cookie(e));
                            return None;
                        }
                        Err(_) => ErrorValue::InvalidValue,
                    }
                }
                // No value: the client erases the option.
                (EXECUTION_HEADER, None) => {
                    set_cookie = Some(clear_cookie());
                    return None;
                }
                (EXECUTION_HEADER, _) => ErrorValue::InvalidValue,
                _ => ErrorValue::InvalidName,
            };
            Some((
                name.clone(),
                Error {
                    value: verdict as i32,
                },
            ))
        })
        .collect();
    Answer {
        body: SetSessionOptionsResult { errors }.encode_to_vec(),
        set_cookie,
    }
}

fn current(metadata: &MetadataMap) -> Result<GetSessionOptionsResult, Status> {
    let string = |v: String| SessionOptionValue {
        option_value: Some(OptionValue::StringValue(v)),
    };
    let mut session_options = HashMap::from([("catalog".to_string(), string(CATALOG.into()))]);
    if let Some(e) = execution(metadata, None)? {
        session_options.insert(EXECUTION_HEADER.to_string(), string(e.to_string()));
    }
    Ok(GetSessionOptionsResult { session_options })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(v: &str) -> SessionOptionValue {
        SessionOptionValue {
            option_value: Some(OptionValue::StringValue(v.into())),
        }
    }

    fn errors(options: &[(&str, SessionOptionValue)]) -> HashMap<String, i32> {
        let request = SetSessionOptionsRequest {
            session_options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        };
        let answer = answer(
            SET_SESSION_OPTIONS,
            &request.encode_to_vec(),
            &MetadataMap::new(),
        )
        .unwrap()
        .unwrap();
        SetSessionOptionsResult::decode(answer.body.as_slice())
            .unwrap()
            .errors
            .into_iter()
            .map(|(k, e)| (k, e.value))
            .collect()
    }

    #[test]
    fn catalog_mesh_is_accepted_and_everything_else_refused_by_name() {
        assert!(errors(&[("catalog", string("mesh"))]).is_empty());
        let e = errors(&[
            ("catalog", string("hive")),
            ("schema", string("checkout")),
            (
                "catalog_typo",
                SessionOptionValue {
                    option_value: Some(OptionValue::BoolValue(true)),
                },
            ),
        ]);
        assert_eq!(e["catalog"], ErrorValue::InvalidValue as i32);
        assert_eq!(e["schema"], ErrorValue::InvalidName as i32);
        assert_eq!(e["catalog_typo"], ErrorValue::InvalidName as i32);
    }

    #[test]
    fn malformed_bodies_are_invalid_arguments_and_other_actions_are_not_ours() {
        let none = MetadataMap::new();
        let err = answer(SET_SESSION_OPTIONS, b"\xff\xff\xff", &none)
            .unwrap()
            .err()
            .unwrap();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(answer("CreatePreparedStatement", b"", &none).is_none());
    }

    fn set_execution(value: Option<OptionValue>) -> Answer {
        let request = SetSessionOptionsRequest {
            session_options: HashMap::from([(
                EXECUTION_HEADER.to_string(),
                SessionOptionValue {
                    option_value: value,
                },
            )]),
        };
        answer(
            SET_SESSION_OPTIONS,
            &request.encode_to_vec(),
            &MetadataMap::new(),
        )
        .unwrap()
        .unwrap()
    }

    fn with_cookie(cookie: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("cookie", cookie.parse().unwrap());
        m
    }

    fn options(metadata: &MetadataMap) -> HashMap<String, SessionOptionValue> {
        let answer = answer(GET_SESSION_OPTIONS, &[], metadata).unwrap().unwrap();
        GetSessionOptionsResult::decode(answer.body.as_slice())
            .unwrap()
            .session_options
    }

    #[test]
    fn execution_is_set_as_a_cookie_that_counts_as_the_header() {
        let set = set_execution(Some(OptionValue::StringValue("Distributed".into())));
        let result = SetSessionOptionsResult::decode(set.body.as_slice()).unwrap();
        assert!(result.errors.is_empty());
        let cookie = set.set_cookie.expect("a Set-Cookie");
        assert_eq!(cookie, "x-meshgate-execution=distributed");

        // The client sends it back, among its other cookies.
        let back = with_cookie(&format!("other=1; {cookie}"));
        assert_eq!(
            execution(&back, None).unwrap(),
            Some(Execution::Distributed)
        );
        assert_eq!(
            options(&back)[EXECUTION_HEADER],
            string("distributed"),
            "GetSessionOptions reports it"
        );
        // The header, when both are sent, is the caller's latest word.
        let mut both = back.clone();
        both.insert(EXECUTION_HEADER, "local".parse().unwrap());
        assert_eq!(execution(&both, None).unwrap(), Some(Execution::Local));
        // A ticket's sealed choice counts only when this call makes none.
        assert_eq!(
            execution(&back, Some("local")).unwrap(),
            Some(Execution::Distributed)
        );
        assert_eq!(
            execution(&MetadataMap::new(), Some("local")).unwrap(),
            Some(Execution::Local)
        );
        assert_eq!(execution(&MetadataMap::new(), None).unwrap(), None);
        assert!(!options(&MetadataMap::new()).contains_key(EXECUTION_HEADER));
    }

    #[test]
    fn bad_execution_values_are_refused_and_a_bad_cookie_is_invalid_argument() {
        for bad in [
            Some(OptionValue::StringValue("fast".into())),
            Some(OptionValue::BoolValue(true)),
        ] {
            let set = set_execution(bad);
            let result = SetSessionOptionsResult::decode(set.body.as_slice()).unwrap();
            assert_eq!(
                result.errors[EXECUTION_HEADER].value,
                ErrorValue::InvalidValue as i32
            );
            assert!(set.set_cookie.is_none(), "nothing changes");
        }
        let err = execution(&with_cookie("x-meshgate-execution=fast"), None).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn erasing_and_closing_clear_the_cookie() {
        let erased = set_execution(None);
        assert_eq!(
            erased.set_cookie.as_deref(),
            Some("x-meshgate-execution=; Max-Age=0")
        );
        let closed = answer(
            CLOSE_SESSION,
            &[],
            &with_cookie("x-meshgate-execution=local"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(closed.set_cookie, erased.set_cookie);
        let closed = answer(CLOSE_SESSION, &[], &MetadataMap::new())
            .unwrap()
            .unwrap();
        assert!(closed.set_cookie.is_none());
    }
}
