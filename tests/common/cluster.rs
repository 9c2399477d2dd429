//! A Ballista cluster of real processes for the tests: `meshgate cluster scheduler` and
//! executors on 127.0.0.1, ports chosen at run time, each process stopping when the test
//! that started it is gone (its stdin closes).

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::s3::LocalS3;

/// How to start one.
pub struct ClusterSpec<'a> {
    pub executors: usize,
    /// Task slots per executor: with one, a stage's partitions go to several tasks.
    pub concurrent_tasks: usize,
    pub hash_key: &'a [u8],
    /// Products on this S3 server: executors get its endpoint and credentials.
    pub s3: Option<&'a LocalS3>,
    /// `--scheduling`; none for the default (push, or pull with TLS).
    pub scheduling: Option<&'a str>,
    /// The executors' key, when it is not `hash_key` (a misconfigured executor).
    pub executor_key: Option<&'a [u8]>,
    /// Executors register here instead of with the scheduler (a proxy in front of it).
    pub executors_via: Option<SocketAddr>,
    /// The scheduler's port, when the test must know it in advance.
    pub scheduler_port: Option<u16>,
    /// Mutual TLS: every process binds all interfaces (0.0.0.0, allowed only with TLS)
    /// and is dialled as 127.0.0.1.
    pub tls: Option<&'a meshgate_cluster::TlsFiles>,
    /// The executors' TLS files, when not `tls` (an executor from another CA).
    pub executor_tls: Option<&'a meshgate_cluster::TlsFiles>,
}

impl Default for ClusterSpec<'_> {
    fn default() -> Self {
        ClusterSpec {
            executors: 2,
            concurrent_tasks: 2,
            hash_key: super::TEST_KEY,
            s3: None,
            scheduling: None,
            executor_key: None,
            executors_via: None,
            scheduler_port: None,
            tls: None,
            executor_tls: None,
        }
    }
}

pub struct LocalCluster {
    scheduler_child: Child,
    executors: Vec<Child>,
    pub scheduler_addr: SocketAddr,
    /// `http://127.0.0.1:PORT` (`https://` with TLS), as the gateway's `distributed.scheduler`.
    pub scheduler: String,
    /// Each executor's Flight port, where results and shuffle data are fetched.
    pub flight_ports: Vec<u16>,
    tls: Option<meshgate_cluster::TlsFiles>,
    dir: tempfile::TempDir,
}

/// A port free right now on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn meshgate() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meshgate"))
}

fn spawn(args: &[&str], env: &[(&str, String)], log: &Path) -> Child {
    let mut cmd = Command::new(meshgate());
    cmd.args(args)
        .arg("--until-stdin-closes")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

impl LocalCluster {
    /// A scheduler and `spec.executors` executors, once all have registered.
    pub fn start(spec: &ClusterSpec) -> LocalCluster {
        let dir = tempfile::tempdir().unwrap();
        let port = spec.scheduler_port.unwrap_or_else(free_port);
        let scheduler_addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let key = String::from_utf8(spec.hash_key.to_vec()).unwrap();
        let (config, env) = process_config(spec, dir.path(), "scheduler");
        let mut env = env;
        env.push(("MESHGATE_HASH_KEY", key));
        let bind = match spec.tls {
            Some(_) => format!("0.0.0.0:{port}"),
            None => scheduler_addr.to_string(),
        };
        let mut args = vec![
            "cluster",
            "scheduler",
            "--config",
            config.to_str().unwrap(),
            "--bind",
            &bind,
        ];
        args.extend(options(spec.scheduling, spec.tls));
        let scheduler_child = spawn(&args, &env, &dir.path().join("scheduler.log"));
        let scheme = if spec.tls.is_some() { "https" } else { "http" };
        let mut cluster = LocalCluster {
            scheduler_child,
            executors: vec![],
            scheduler: format!("{scheme}://{scheduler_addr}"),
            scheduler_addr,
            flight_ports: vec![],
            tls: spec.tls.cloned(),
            dir,
        };
        // The scheduler first: executors give up on one that is not there yet.
        let deadline = Instant::now() + Duration::from_secs(30);
        while cluster.readiness().is_none() {
            assert!(
                Instant::now() < deadline,
                "no scheduler:\n{}",
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        for _ in 0..spec.executors {
            cluster.add_executor(spec, spec.executors_via.unwrap_or(scheduler_addr));
        }
        cluster.wait_ready(spec.executors);
        cluster
    }

    /// One more executor registering with `scheduler` (the scheduler, or a proxy to it).
    pub fn add_executor(&mut self, spec: &ClusterSpec, scheduler: SocketAddr) {
        let n = self.executors.len();
        let (config, mut env) = process_config(spec, self.dir.path(), &format!("executor-{n}"));
        env.push((
            "MESHGATE_HASH_KEY",
            String::from_utf8(spec.executor_key.unwrap_or(spec.hash_key).to_vec()).unwrap(),
        ));
        let (flight, grpc) = (free_port(), free_port());
        let concurrent_tasks = spec.concurrent_tasks.to_string();
        let work = self.dir.path().join(format!("work-{n}"));
        let (flight_port, grpc_port, scheduler) =
            (flight.to_string(), grpc.to_string(), scheduler.to_string());
        let mut args = vec![
            "cluster",
            "executor",
            "--config",
            config.to_str().unwrap(),
            "--scheduler",
            &scheduler,
            "--flight-port",
            &flight_port,
            "--grpc-port",
            &grpc_port,
            "--concurrent-tasks",
            &concurrent_tasks,
            "--work-dir",
            work.to_str().unwrap(),
        ];
        let tls = spec.executor_tls.or(spec.tls);
        if tls.is_some() {
            args.extend(["--bind", "0.0.0.0", "--external-host", "127.0.0.1"]);
        }
        args.extend(options(spec.scheduling, tls));
        let child = spawn(
            &args,
            &env,
            &self.dir.path().join(format!("executor-{n}.log")),
        );
        self.executors.push(child);
        self.flight_ports.push(flight);
    }

    /// Waits until `/readyz` counts `n` executors.
    pub fn wait_ready(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        // With none, the scheduler says "not ready: 0/1", and that is what is wanted.
        let want = match n {
            0 => "0/1 executors".to_string(),
            n => format!("ready: {n} executors"),
        };
        loop {
            let body = self.readiness().unwrap_or_default();
            if body.contains(&want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not get {n} executors within 60 s: {body:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills executor `i` at once (SIGKILL: no goodbye to the scheduler).
    pub fn kill_executor(&mut self, i: usize) {
        let _ = self.executors[i].kill();
        let _ = self.executors[i].wait();
    }

    /// What the processes wrote, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                out.push_str(&format!("--- {}\n", p.display()));
                for l in tail.into_iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// A meshgate.yaml with the S3 settings of `spec`, and the credentials as `AWS_*`.
fn process_config(
    spec: &ClusterSpec,
    dir: &Path,
    name: &str,
) -> (PathBuf, Vec<(&'static str, String)>) {
    let config = dir.join(format!("{name}.yaml"));
    let mut env = vec![];
    let mut yaml = String::from("mesh:\n  contracts: contracts\n");
    if let Some(s3) = spec.s3 {
        yaml.push_str(&format!(
            "  s3:\n    endpoint: {}\n    region: us-east-1\n    allow_http: true\n    path_style: true\n",
            s3.endpoint
        ));
        env.push(("AWS_ACCESS_KEY_ID", s3.access_key_id.clone()));
        env.push(("AWS_SECRET_ACCESS_KEY", s3.secret_access_key.clone()));
    }
    std::fs::File::create(&config)
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    (config, env)
}

/// `--scheduling` and `--tls-*` arguments.
fn options<'a>(
    scheduling: Option<&'a str>,
    tls: Option<&'a meshgate_cluster::TlsFiles>,
) -> Vec<&'a str> {
    let mut args = vec![];
    if let Some(s) = scheduling {
        args.extend(["--scheduling", s]);
    }
    if let Some(t) = tls {
        for (flag, path) in [
            ("--tls-ca", &t.ca),
            ("--tls-cert", &t.cert),
            ("--tls-key", &t.key),
        ] {
            args.extend([flag, path.to_str().unwrap()]);
        }
    }
    args
}

impl LocalCluster {
    /// The TLS files of its processes, when it has TLS (a gateway may present them too).
    pub fn tls(&self) -> Option<&meshgate_cluster::TlsFiles> {
        self.tls.as_ref()
    }

    /// The scheduler's `/readyz` text: a plain HTTP/1 GET, or with TLS the gateway's own
    /// probe (HTTP/2 over mutual TLS).
    pub fn readiness(&self) -> Option<String> {
        let Some(tls) = &self.tls else {
            return readyz(self.scheduler_addr);
        };
        let cluster = meshgate_cluster::Cluster::new(
            &self.scheduler,
            // The probe plans nothing: any key will do.
            meshgate_cluster::ClusterCodec::new(std::sync::Arc::new(
                meshgate_policy::HashKey::new(super::TEST_KEY).unwrap(),
            )),
            Some(meshgate_cluster::ClusterTls::load(tls).unwrap()),
        );
        // On a thread of its own: callers may be inside a runtime (the benchmark is).
        let health = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap()
                        .block_on(cluster.health())
                })
                .join()
                .unwrap()
        });
        match health {
            meshgate_cluster::Health::Ready(body) => Some(body),
            // Reachable but not ready answers with its text; unreachable is none.
            meshgate_cluster::Health::Unavailable(why) => {
                why.contains("executors registered").then_some(why)
            }
        }
    }
}

/// The scheduler's readiness text, by a plain HTTP/1 GET.
pub fn readyz(addr: SocketAddr) -> Option<String> {
    use std::io::Read;
    let mut sock = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    sock.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    sock.read_to_string(&mut out).ok()?;
    Some(out)
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for c in self.executors.iter_mut().chain([&mut self.scheduler_child]) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
