//! Object-store servers for the object-store tests, each started by a script of
//! `tests/fixtures/` through the project's venv (`.venv-python`, made by `scripts/setup.sh`,
//! which installs them), with credentials of its own where the server checks them:
//!
//! - S3: moto's server (`s3_server.py`), IAM credentials and authentication on;
//! - Azure Blob Storage: Microsoft's Azurite (`azure_server.py`), an account and key of its own.
//!
//! Shared by `udfs/tests/object_store.rs` and the command line's `object_store.rs` and
//! `cluster.rs`. One server of each kind per test binary, started on first use; it stops when
//! the test process ends (its standard input, a pipe from this process, closes).

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
use span_marker_udfs::store::{AzureSettings, S3Settings, StoreRegistry};

/// Runs `future` on a runtime of its own (the S3 client needs Tokio).
fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// The bucket (container) every server has.
pub const BUCKET: &str = "corpus";

/// A running fixture server: it stops when its standard input closes.
struct Fixture {
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate is in the repository")
        .to_path_buf()
}

/// Starts `tests/fixtures/<script>` with bucket `corpus` and reads the JSON line it prints;
/// `None`, after a message saying why, where `check` (Python imports) fails in the venv.
fn start(script: &str, check: &str, what: &str) -> Option<(Fixture, serde_json::Value)> {
    let python = repo().join(".venv-python");
    let installed = python.exists()
        && Command::new(&python)
            .args(["-c", check])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !installed {
        eprintln!(
            "SKIPPED: the {what} test server cannot start: it is not installed in {} (run \
             `bash scripts/setup.sh`)",
            python.display()
        );
        return None;
    }
    let mut child = Command::new(&python)
        .arg(repo().join("tests/fixtures").join(script))
        .arg(BUCKET)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("the {what} test server starts: {e}"));
    let stdin = child.stdin.take().expect("piped");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("the {what} test server prints its address: {e}"));
    let info: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| {
        let _ = child.kill();
        panic!("the {what} test server did not start ({e}): printed {line:?}")
    });
    if let Some(error) = info["error"].as_str() {
        panic!("the {what} test server did not start: {error}");
    }
    let fixture = Fixture {
        _stdin: Mutex::new(stdin),
        _child: Mutex::new(child),
    };
    Some((fixture, info))
}

fn field(info: &serde_json::Value, name: &str) -> String {
    info[name].as_str().expect("a string field").to_owned()
}

/// What the tests do with any of the servers: bucket `corpus` through a registry of its own.
pub trait TestStore: Sync {
    /// `s3://corpus`, `az://corpus`.
    fn root(&self) -> String;

    /// A registry that reaches this server.
    fn registry(&self) -> StoreRegistry;

    /// The environment of a child process that reaches this server (set it on the child,
    /// never on the test process, whose threads share one environment).
    fn env(&self) -> Vec<(&'static str, String)>;

    /// `<root>/<key>`.
    fn url(&self, key: &str) -> String {
        format!("{}/{key}", self.root())
    }

    /// The store of bucket `corpus` on this server.
    fn bucket(&self) -> Arc<dyn ObjectStore> {
        let root = self.root();
        self.registry().get_store(&root.parse().unwrap()).unwrap()
    }

    /// Copies the local file `from` to `key` in bucket `corpus`.
    fn upload(&self, from: &Path, key: &str) {
        let bytes = std::fs::read(from).unwrap();
        block_on(self.bucket().put(&ObjectPath::from(key), bytes.into())).unwrap();
    }

    /// The rows of the Parquet object `key` of bucket `corpus` (a panic if it is not one).
    fn batches(&self, key: &str) -> Vec<RecordBatch> {
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
    fn read(&self, key: &str) -> Option<Vec<u8>> {
        let bucket = self.bucket();
        block_on(async {
            let found = bucket.get(&ObjectPath::from(key)).await.ok()?;
            Some(found.bytes().await.unwrap().to_vec())
        })
    }

    /// The keys under `prefix` in bucket `corpus`, sorted.
    fn keys(&self, prefix: &str) -> Vec<String> {
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
}

/// A running S3 server and the credentials it accepts.
pub struct S3Server {
    pub endpoint: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    _fixture: Fixture,
}

/// The process's S3 server; `None`, after a message saying why, where moto is not installed.
pub fn s3() -> Option<&'static S3Server> {
    static SERVER: OnceLock<Option<S3Server>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let (fixture, info) = start("s3_server.py", "import moto.server, boto3", "S3")?;
            Some(S3Server {
                endpoint: field(&info, "endpoint"),
                access_key_id: field(&info, "access_key_id"),
                secret_access_key: field(&info, "secret_access_key"),
                _fixture: fixture,
            })
        })
        .as_ref()
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
}

impl TestStore for S3Server {
    fn root(&self) -> String {
        format!("s3://{BUCKET}")
    }

    fn registry(&self) -> StoreRegistry {
        StoreRegistry::new().with_s3(self.settings())
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.access_key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key.clone()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
        ]
    }
}

/// A running Azurite and the account and key it accepts.
pub struct AzureServer {
    /// The account's blob endpoint, path style (`http://127.0.0.1:PORT/ACCOUNT`).
    pub endpoint: String,
    pub account: String,
    pub key: String,
    _fixture: Fixture,
}

/// The process's Azurite; `None`, after a message saying why, where it is not installed.
pub fn azure() -> Option<&'static AzureServer> {
    static SERVER: OnceLock<Option<AzureServer>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let check = "import azure.storage.blob, os, sys; \
                         assert os.path.exists(os.path.join(sys.prefix, 'azurite'))";
            let (fixture, info) = start("azure_server.py", check, "Azure (Azurite)")?;
            Some(AzureServer {
                endpoint: field(&info, "endpoint"),
                account: field(&info, "account"),
                key: field(&info, "key"),
                _fixture: fixture,
            })
        })
        .as_ref()
}

impl AzureServer {
    /// Settings that reach this server with the given account key.
    pub fn settings_with(&self, key: &str) -> AzureSettings {
        AzureSettings::new()
            .with_account(&self.account, key)
            .with_endpoint(&self.endpoint)
    }
}

impl TestStore for AzureServer {
    fn root(&self) -> String {
        format!("az://{BUCKET}")
    }

    fn registry(&self) -> StoreRegistry {
        StoreRegistry::new().with_azure(self.settings_with(&self.key))
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AZURE_STORAGE_ACCOUNT_NAME", self.account.clone()),
            ("AZURE_STORAGE_ACCOUNT_KEY", self.key.clone()),
            ("AZURE_STORAGE_ENDPOINT", self.endpoint.clone()),
        ]
    }
}
