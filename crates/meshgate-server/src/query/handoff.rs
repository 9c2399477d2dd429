//! Plans handed from one call of a statement to the next on this replica.
//!
//! A client that prepares, asks for the FlightInfo and fetches (ADBC, JDBC) would have the
//! same statement planned three times, as the same principal on the same mesh, within
//! milliseconds. The plan made for one call is kept for the next, under the handle or
//! ticket the first call returned (signed, so unguessable), the principal and the engine
//! choice; the next call takes it (once: a physical plan is executed at most once) or,
//! on another replica or after the entry expired, plans again. Nothing is shared between
//! principals, and a new mesh snapshot empties it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use meshgate_policy::Principal;
use sha2::{Digest, Sha256};

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
    entries: Mutex<VecDeque<([u8; 32], Instant, Kept)>>,
}

/// What a kept plan is for: the handle or ticket, who asked, and for `Planned`, the
/// engine choice it was routed with.
pub(crate) fn key(
    stage: &str,
    handle: &[u8],
    principal: &Principal,
    execution: Option<Execution>,
) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [stage.as_bytes(), handle, principal.name.as_bytes()] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    for role in &principal.roles {
        h.update((role.len() as u64).to_le_bytes());
        h.update(role.as_bytes());
    }
    h.update(execution.map(|e| e.to_string()).unwrap_or_default());
    h.finalize().into()
}

impl HandOff {
    pub(crate) fn keep(&self, key: [u8; 32], kept: Kept) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        entries.retain(|(_, at, _)| now.duration_since(*at) < TTL);
        while entries.len() >= MAX {
            entries.pop_front();
        }
        entries.push_back((key, now, kept));
    }

    pub(crate) fn take(&self, key: &[u8; 32]) -> Option<Kept> {
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
    use super::*;

    #[test]
    fn a_key_names_the_stage_handle_caller_roles_and_choice() {
        let lead = Principal::new("lead", ["data_analyst", "marketing"]);
        let narrowed = lead.narrowed_to("marketing").unwrap();
        let base = key("planned", b"t", &lead, None);
        for other in [
            key("prepared", b"t", &lead, None),
            key("planned", b"u", &lead, None),
            key("planned", b"t", &narrowed, None),
            key(
                "planned",
                b"t",
                &Principal::new("leader", ["data_analyst"]),
                None,
            ),
            key("planned", b"t", &lead, Some(Execution::Local)),
        ] {
            assert_ne!(base, other);
        }
        // Lengths are part of the key: no two splits of the same bytes collide.
        assert_ne!(
            key(
                "planned",
                b"ab",
                &Principal::new("c", Vec::<String>::new()),
                None
            ),
            key(
                "planned",
                b"a",
                &Principal::new("bc", Vec::<String>::new()),
                None
            )
        );
    }
}
