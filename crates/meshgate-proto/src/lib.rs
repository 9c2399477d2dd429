//! Wire types compiled from `proto/` at build time. Hand-written code lives elsewhere; this
//! crate only gives the generated modules a stable path.

/// Flight's session messages (`SetSessionOptions`, `GetSessionOptions`, `CloseSession`).
pub mod flight_session {
    #![allow(unreachable_pub, clippy::all, clippy::clone_on_ref_ptr)]
    tonic::include_proto!("arrow.flight.protocol");

    /// `DoAction` types of the messages above, as clients spell them.
    pub const SET_SESSION_OPTIONS: &str = "SetSessionOptions";
    pub const GET_SESSION_OPTIONS: &str = "GetSessionOptions";
    pub const CLOSE_SESSION: &str = "CloseSession";
}

/// meshgate's catalog API (`proto/meshgate/catalog/v1/catalog.proto`).
pub mod catalog {
    #![allow(unreachable_pub, clippy::all, clippy::clone_on_ref_ptr)]
    tonic::include_proto!("meshgate.catalog.v1");
}
