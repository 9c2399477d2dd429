//! A local S3 server (moto, `tests/s3/moto_server.py`) holding the sample mesh, for the
//! tests that serve products from `s3://`. The Python comes from `MESHGATE_TEST_PYTHON`
//! (tests/run-all.sh points it at its virtualenv, which has moto), else `.venv/bin/python`.
//! The TPC-H bench includes this file too, to serve its own data.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use meshgate_mesh::stores::S3Config;

pub const BUCKET: &str = "meshgate-sample";

pub struct LocalS3 {
    child: Child,
    pub endpoint: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python with moto.
pub fn python() -> PathBuf {
    std::env::var_os("MESHGATE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python"))
}

impl LocalS3 {
    /// Starts moto on a free port and uploads `sample-data/` into [`BUCKET`].
    pub fn start() -> LocalS3 {
        LocalS3::serving(&python(), BUCKET, &repo().join("sample-data"))
    }

    /// Starts moto with `python` and uploads every Parquet file under `data` into `bucket`.
    pub fn serving(python: &Path, bucket: &str, data: &Path) -> LocalS3 {
        let mut child = Command::new(python)
            .arg(repo().join("tests/s3/moto_server.py"))
            .arg(bucket)
            .arg(data)
            // The server lives until this pipe closes, also if the test process dies.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e}; set MESHGATE_TEST_PYTHON to a Python with moto \
                     (tests/run-all.sh makes one)",
                    python.display()
                )
            });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let parts: Vec<&str> = line.split_whitespace().collect();
        let ["ready", endpoint, id, secret] = parts.as_slice() else {
            panic!(
                "moto did not start with {} (is moto installed? tests/run-all.sh installs it): {line:?}",
                python.display()
            );
        };
        LocalS3 {
            endpoint: endpoint.to_string(),
            access_key_id: id.to_string(),
            secret_access_key: secret.to_string(),
            child,
        }
    }

    /// How meshgate reaches it, credentials included (given in code, as tests may).
    pub fn config(&self) -> S3Config {
        S3Config {
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
            allow_http: Some(true),
            path_style: Some(true),
            connect_timeout_secs: Some(2),
            credentials: Some((self.access_key_id.clone(), self.secret_access_key.clone())),
            ..S3Config::default()
        }
    }
}

impl Drop for LocalS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
