//! Flight session options (`SetSessionOptions`, `GetSessionOptions`, `CloseSession`).
//!
//! The JDBC driver turns a `catalog` connection property into `SetSessionOptions` and
//! treats UNIMPLEMENTED as fatal (FLIGHT-SQL.md). meshgate's sessions are stateless (the
//! token is the session), so the only option it takes is the one whose value is already
//! true: `catalog = mesh`. Anything else is refused per option, never silently ignored.

use std::collections::HashMap;

use meshgate_catalog::CATALOG;
use meshgate_proto::flight_session::session_option_value::OptionValue;
use meshgate_proto::flight_session::set_session_options_result::{Error, ErrorValue};
use meshgate_proto::flight_session::{
    CLOSE_SESSION, CloseSessionRequest, CloseSessionResult, GET_SESSION_OPTIONS,
    GetSessionOptionsRequest, GetSessionOptionsResult, SET_SESSION_OPTIONS, SessionOptionValue,
    SetSessionOptionsRequest, SetSessionOptionsResult, close_session_result,
};
use prost::Message;
use tonic::Status;

/// The `DoAction` types this module answers, with their descriptions for `ListActions`.
pub(crate) const ACTIONS: [(&str, &str); 3] = [
    (
        SET_SESSION_OPTIONS,
        "Set session options; meshgate accepts catalog=mesh",
    ),
    (GET_SESSION_OPTIONS, "The session's options"),
    (
        CLOSE_SESSION,
        "Close the session (tokens expire on their own)",
    ),
];

/// Answers one session action; `None` when `kind` is not a session action.
pub(crate) fn answer(kind: &str, body: &[u8]) -> Option<Result<Vec<u8>, Status>> {
    let malformed =
        |e: prost::DecodeError| Status::invalid_argument(format!("malformed {kind}: {e}"));
    Some(match kind {
        SET_SESSION_OPTIONS => SetSessionOptionsRequest::decode(body)
            .map_err(malformed)
            .map(|r| set(&r).encode_to_vec()),
        GET_SESSION_OPTIONS => GetSessionOptionsRequest::decode(body)
            .map_err(malformed)
            .map(|_| current().encode_to_vec()),
        CLOSE_SESSION => CloseSessionRequest::decode(body)
            .map_err(malformed)
            .map(|_| {
                CloseSessionResult {
                    status: close_session_result::Status::Closed as i32,
                }
                .encode_to_vec()
            }),
        _ => return None,
    })
}

fn set(request: &SetSessionOptionsRequest) -> SetSessionOptionsResult {
    let errors = request
        .session_options
        .iter()
        .filter_map(|(name, value)| {
            let verdict = match (name.as_str(), &value.option_value) {
                ("catalog", Some(OptionValue::StringValue(v))) if v == CATALOG => return None,
                ("catalog", _) => ErrorValue::InvalidValue,
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
    SetSessionOptionsResult { errors }
}

fn current() -> GetSessionOptionsResult {
    let catalog = SessionOptionValue {
        option_value: Some(OptionValue::StringValue(CATALOG.to_string())),
    };
    GetSessionOptionsResult {
        session_options: HashMap::from([("catalog".to_string(), catalog)]),
    }
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
        let bytes = answer(SET_SESSION_OPTIONS, &request.encode_to_vec())
            .unwrap()
            .unwrap();
        SetSessionOptionsResult::decode(bytes.as_slice())
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
        let err = answer(SET_SESSION_OPTIONS, b"\xff\xff\xff")
            .unwrap()
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(answer("CreatePreparedStatement", b"").is_none());
    }
}
