//! An S3-compatible server for the object-store tests: moto's, started by
//! `tests/fixtures/s3_server.py` through the project's venv (`.venv-python`, made by
//! `scripts/setup.sh`, which installs `moto[server]`), with its own IAM credentials and
//! authentication on. Shared by `udfs/tests/object_store.rs` and `cli/tests/object_store.rs`.
//!
//! One server per test binary, started on first use; it stops when the test process ends
//! (its standard input, a pipe from this process, closes).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use datafusion::arrow::array::RecordBatch;
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::object_store::path::Path as ObjectPath;
use datafusion::object_store::{ObjectStore, ObjectStoreExt};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use futures::TryStreamExt;
use span_marker_udfs::store::{S3Settings, StoreRegistry};

/// Runs `future` on a runtime of its own (the S3 client needs Tokio).
fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// The buckets every server has.
pub const BUCKETS: [&str; 1] = ["corpus"];

/// A running server and the credentials it accepts.
pub struct S3Server {
    pub endpoint: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Held open: the server stops when it closes.
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate is in the repository")
        .to_path_buf()
}

/// The process's server; `None`, after a message saying why, where moto is not installed.
pub fn server() -> Option<&'static S3Server> {
    static SERVER: OnceLock<Option<S3Server>> = OnceLock::new();
    SERVER.get_or_init(start).as_ref()
}

fn start() -> Option<S3Server> {
    let python = repo().join(".venv-python");
    let installed = python.exists()
        && Command::new(&python)
            .args(["-c", "import moto.server, boto3"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !installed {
        eprintln!(
            "SKIPPED: the S3-compatible test server cannot start: moto[server] is not installed \
             in {} (run `bash scripts/setup.sh`)",
            python.display()
        );
        return None;
    }
    let mut child = Command::new(&python)
        .arg(repo().join("tests/fixtures/s3_server.py"))
        .args(BUCKETS)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the S3 test server starts");
    let stdin = child.stdin.take().expect("piped");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut line)
        .expect("the S3 test server prints its address");
    let info: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| {
        let _ = child.kill();
        panic!("the S3 test server did not start ({e}): printed {line:?}")
    });
    let field = |name: &str| info[name].as_str().expect("a string field").to_owned();
    Some(S3Server {
        endpoint: field("endpoint"),
        access_key_id: field("access_key_id"),
        secret_access_key: field("secret_access_key"),
        _stdin: Mutex::new(stdin),
        _child: Mutex::new(child),
    })
}

impl S3Server {
    /// Settings that reach this server with its credentials.
    pub fn settings(&self) -> S3Settings {
        self.settings_with(&self.access_key_id, &self.secret_access_key)
    }

    /// Settings that reach this server with the given credentials.
    pub fn settings_with(&self, key_id: &str, secret: &str) -> S3Settings {
        S3Settings::new()
            .with_credentials(key_id, secret)
            .with_region("us-east-1")
            .with_endpoint(&self.endpoint)
    }

    /// The store of bucket `corpus` on this server.
    pub fn bucket(&self) -> Arc<dyn ObjectStore> {
        StoreRegistry::with_s3(self.settings())
            .get_store(&"s3://corpus".parse().unwrap())
            .unwrap()
    }

    /// Copies the local file `from` to `key` in bucket `corpus`.
    pub fn upload(&self, from: &Path, key: &str) {
        let bytes = std::fs::read(from).unwrap();
        block_on(self.bucket().put(&ObjectPath::from(key), bytes.into())).unwrap();
    }

    /// The rows of the Parquet object `key` of bucket `corpus` (a panic if it is not one).
    pub fn batches(&self, key: &str) -> Vec<RecordBatch> {
        let bucket = self.bucket();
        let bytes = block_on(async {
            let found = bucket.get(&ObjectPath::from(key)).await;
            found.unwrap_or_else(|e| panic!("{key}: {e}")).bytes().await
        })
        .unwrap();
        ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// The object `key` of bucket `corpus`, or `None`.
    pub fn read(&self, key: &str) -> Option<Vec<u8>> {
        let bucket = self.bucket();
        block_on(async {
            let found = bucket.get(&ObjectPath::from(key)).await.ok()?;
            Some(found.bytes().await.unwrap().to_vec())
        })
    }

    /// The keys under `prefix` in bucket `corpus`, sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let bucket = self.bucket();
        let mut keys: Vec<String> = block_on(async {
            bucket
                .list(Some(&ObjectPath::from(prefix)))
                .map_ok(|meta| meta.location.to_string())
                .try_collect::<Vec<_>>()
                .await
        })
        .unwrap();
        keys.sort();
        keys
    }

    /// The AWS environment of a child process that reaches this server (set it on the child,
    /// never on the test process, whose threads share one environment).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
        ]
    }
}
