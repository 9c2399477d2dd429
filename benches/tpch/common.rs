//! The tests' local S3 server and local Ballista cluster, shared with the suite.

/// The gateways' key (`server.rs`): the cluster must mask with the same one.
pub const TEST_KEY: &[u8] = crate::server::HASH_KEY.as_bytes();

#[path = "../../tests/common/cluster.rs"]
pub mod cluster;
#[path = "../../tests/common/pki.rs"]
pub mod pki;
#[path = "../../tests/common/s3.rs"]
pub mod s3;
