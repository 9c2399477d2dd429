//! Plans handed from one call of a statement to the next on this replica.
//!
//! A client that prepares, asks for the FlightInfo and fetches (ADBC, JDBC) would have the
//! same statement planned three times, as the same principal on the same mesh, within
//! milliseconds. The plan made for one call is kept for the next, under the handle or
//! ticket the first call returned (sealed, so unguessable), the principal and the engine
//! choice; the next call takes it (once: a physical plan is executed at most once) or,
//! on another replica or after the entry expired, plans again. Nothing is shared between
//! principals, and a new mesh snapshot empties it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use meshgate_policy::Principal;

use super::{Execution, Planned, Prepared};

/// How long a plan waits for the next call of its statement.
const TTL: Duration = Duration::from_secs(30);
/// Plans kept at most; the oldest goes first.
const MAX: usize = 256;

pub(crate) enum Kept {
    /// Optimized and physically planned, not yet routed (after describing a prepared
    /// statement).
    Prepared(Box<Prepared>),
    /// Routed, ready to execute (after GetFlightInfo).
    Planned(Planned),
}

#[derive(Default)]
pub(crate) struct HandOff {
    entries: Mutex<VecDeque<(Key, Instant, Kept)>>,
}

/// Which call's plan is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// A prepared statement's description, for its handle.
    Prepared,
    /// A FlightInfo's plan, for its ticket.
    Planned,
}

/// What a kept plan is for: the handle or ticket, who asked (the whole principal: name,
/// roles in effect, attributes, issuer), and for `Planned`, the engine choice it was
/// routed with. Compared whole: no digest, no collision to reason about.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Key {
    stage: Stage,
    handle: Vec<u8>,
    principal: Principal,
    execution: Option<Execution>,
}

pub(crate) fn key(
    stage: Stage,
    handle: &[u8],
    principal: &Principal,
    execution: Option<Execution>,
) -> Key {
    Key {
        stage,
        handle: handle.to_vec(),
        principal: principal.clone(),
        execution,
    }
}

impl HandOff {
    pub(crate) fn keep(&self, key: Key, kept: Kept) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        entries.retain(|(_, at, _)| now.duration_since(*at) < TTL);
        while entries.len() >= MAX {
            entries.pop_front();
        }
        entries.push_back((key, now, kept));
    }

    pub(crate) fn take(&self, key: &Key) -> Option<Kept> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let i = entries.iter().position(|(k, _, _)| k == key)?;
        let (_, at, kept) = entries.remove(i)?;
        (at.elapsed() < TTL).then_some(kept)
    }

    pub(crate) fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_key_names_the_stage_handle_caller_roles_and_choice() {
        let lead = Principal::new("lead", ["data_analyst", "marketing"]);
        let narrowed = lead.narrowed_to("marketing").unwrap();
        let mut elsewhere = lead.clone();
        elsewhere.issuer = Some("https://idp.example".into());
        let base = key(Stage::Planned, b"t", &lead, None);
        assert_eq!(base, key(Stage::Planned, b"t", &lead, None));
        for other in [
            key(Stage::Prepared, b"t", &lead, None),
            key(Stage::Planned, b"u", &lead, None),
            key(Stage::Planned, b"t", &narrowed, None),
            key(Stage::Planned, b"t", &elsewhere, None),
            key(
                Stage::Planned,
                b"t",
                &Principal::new("leader", ["data_analyst"]),
                None,
            ),
            key(Stage::Planned, b"t", &lead, Some(Execution::Local)),
        ] {
            assert_ne!(base, other);
        }
    }

    #[test]
    fn a_plan_is_taken_once_and_only_with_its_key() {
        let analyst = Principal::new("analyst", ["data_analyst"]);
        let marketer = Principal::new("marketer", ["marketing"]);
        let handoff = HandOff::default();
        let kept = || {
            let state = datafusion::prelude::SessionContext::new().state();
            let empty = datafusion::logical_expr::LogicalPlanBuilder::empty(false)
                .build()
                .unwrap();
            let physical = Arc::new(datafusion::physical_plan::empty::EmptyExec::new(Arc::new(
                arrow::datatypes::Schema::empty(),
            )));
            Kept::Prepared(Box::new(Prepared {
                state,
                optimized: empty,
                physical,
                applied: vec![],
            }))
        };
        handoff.keep(key(Stage::Prepared, b"h", &analyst, None), kept());
        assert!(
            handoff
                .take(&key(Stage::Prepared, b"h", &marketer, None))
                .is_none()
        );
        assert!(
            handoff
                .take(&key(Stage::Planned, b"h", &analyst, None))
                .is_none()
        );
        assert!(
            handoff
                .take(&key(Stage::Prepared, b"h", &analyst, None))
                .is_some()
        );
        assert!(
            handoff
                .take(&key(Stage::Prepared, b"h", &analyst, None))
                .is_none(),
            "taken once"
        );
    }
}
