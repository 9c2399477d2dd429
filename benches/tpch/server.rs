//! The gateway under test: the real `meshgate serve` binary in its own process, so its
//! memory can be measured apart from the clients and the embedded baseline.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::cluster::LocalCluster;
use tokio::process::{Child, Command};

/// The gateways' keys: replicas share them, and the cluster masks with the same hash key.
pub(crate) const HASH_KEY: &str = "benchmark-hash-key-0123456789";
const TOKEN_KEY: &str = "benchmark-token-key-0123456789";

pub(crate) struct GatewayProcess {
    child: Child,
    pub(crate) pid: u32,
    pub(crate) flight_addr: SocketAddr,
    pub(crate) pg_addr: SocketAddr,
    pub(crate) max_concurrent_queries: usize,
    /// The gateway's log (stderr), kept for a failed run.
    pub(crate) log: PathBuf,
}

impl GatewayProcess {
    /// Starts `meshgate serve` on ports chosen by the OS, serving `contracts` over `data`,
    /// with users `analyst` (data_analyst) and `marketer` (marketing), passwords = names.
    /// With `cluster`, the gateway has that Ballista cluster configured (with its TLS files
    /// when it has TLS), with a threshold no query reaches: queries run on it only when the
    /// caller asks.
    pub(crate) async fn start(
        contracts: &Path,
        data: &Path,
        dir: &Path,
        memory_limit_mb: usize,
        cluster: Option<&LocalCluster>,
    ) -> GatewayProcess {
        std::fs::create_dir_all(dir).unwrap();
        let max_concurrent_queries = 8;
        let user = |name: &str, role: &str| {
            format!(
                "  - name: {name}\n    roles: [{role}]\n    password_hash: '{}'\n",
                meshgate_server::auth::hash_password(name)
            )
        };
        // Checks and reloading are off: they would scan in the background of the
        // measurements. The audit trail stays on, as in production.
        let config = format!(
            "flight_addr: 127.0.0.1:0\n\
             pg_addr: 127.0.0.1:0\n\
             http_addr: 127.0.0.1:0\n\
             mesh:\n  contracts: {contracts}\n  data: {data}\n\
             audit_file: {audit}\n\
             reload_interval_secs: 0\n\
             limits:\n  memory_limit_mb: {memory_limit_mb}\n  \
             max_concurrent_queries: {max_concurrent_queries}\n  \
             queue_timeout_secs: 60\n  sla_check_interval_secs: 0\n\
             users:\n{analyst}{marketer}{distributed}",
            contracts = contracts.display(),
            data = data.display(),
            audit = dir.join("audit.log").display(),
            analyst = user("analyst", "data_analyst"),
            marketer = user("marketer", "marketing"),
            distributed = cluster.map_or(String::new(), |c| format!(
                "distributed:\n  scheduler: {}\n  min_scan_bytes: {}\n  allow_override: true\n{}",
                c.scheduler,
                u64::MAX,
                c.tls().map_or(String::new(), |t| format!(
                    "  tls: {{ ca: {}, cert: {}, key: {} }}\n",
                    t.ca.display(),
                    t.cert.display(),
                    t.key.display()
                ))
            )),
        );
        let config_path = dir.join("meshgate.yaml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.join("gateway.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_meshgate"))
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("MESHGATE_HASH_KEY", HASH_KEY)
            .env("MESHGATE_TOKEN_KEY", TOKEN_KEY)
            .env("MESHGATE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("meshgate serve");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let banner = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
            .await
            .expect("meshgate serve did not start within 2 minutes")
            .unwrap()
            .unwrap_or_else(|| {
                panic!(
                    "meshgate serve exited: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        // "meshgate: Flight SQL on grpc://127.0.0.1:PORT, HTTP on http://…"
        let flight_addr = banner
            .split("grpc://")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("unexpected banner: {banner}"));
        let pg_addr = banner
            .split("postgres://")
            .nth(1)
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| panic!("no Postgres port in the banner: {banner}"));
        GatewayProcess {
            pid: child.id().unwrap(),
            child,
            flight_addr,
            pg_addr,
            max_concurrent_queries,
            log,
        }
    }

    fn status_kb(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Resident memory now, in MiB.
    pub(crate) fn rss_mb(&self) -> f64 {
        self.status_kb("VmRSS:").unwrap_or(0) as f64 / 1024.0
    }

    /// The kernel's peak resident memory since start or the last [`Self::reset_peak`], in MiB.
    pub(crate) fn peak_rss_mb(&self) -> f64 {
        self.status_kb("VmHWM:").unwrap_or(0) as f64 / 1024.0
    }

    /// Restarts the peak at the current RSS (Linux `clear_refs` 5), so each load level
    /// has its own; false where the kernel does not allow it.
    pub(crate) fn reset_peak(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5").is_ok()
    }

    pub(crate) async fn stop(mut self) {
        self.child.kill().await.unwrap();
    }
}
