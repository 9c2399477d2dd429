//! Cluster ports are inside the trust boundary: they carry plans and unmasked intermediate
//! rows. Both the gateway (dialing the scheduler) and the processes (binding, dialing) check
//! an address here before using it.

use std::net::IpAddr;

use crate::ClusterError;

/// Whether `host` (an address or a name) is this machine.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// Refuses an address outside this machine unless the port has mutual TLS: cluster
/// ports are inside the trust boundary.
pub fn check_reach(what: &str, host: &str, tls: bool) -> Result<(), ClusterError> {
    if tls || is_loopback_host(host) {
        Ok(())
    } else {
        Err(ClusterError::NotLoopback {
            what: what.to_string(),
            host: host.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_loopback_needs_tls() {
        for host in ["127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"] {
            assert!(check_reach("scheduler", host, false).is_ok(), "{host}");
        }
        for host in ["0.0.0.0", "10.0.0.7", "scheduler.mesh.internal", "::"] {
            let e = check_reach("scheduler", host, false)
                .unwrap_err()
                .to_string();
            assert!(e.contains(host) && e.contains("mutual TLS"), "{e}");
            assert!(check_reach("scheduler", host, true).is_ok());
        }
    }
}
