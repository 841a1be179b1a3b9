//! SQL and bulk annotation on a Ballista cluster of real processes: a scheduler and two
//! executors (`span-marker cluster ...`) started on 127.0.0.1 with free ports, compared with
//! the local engine row for row.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/common/corpus.rs"]
mod corpus;
#[path = "../../udfs/tests/stores/mod.rs"]
mod stores;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use corpus::{assert_same_rows, read_all, write_corpus};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;
use span_marker_udfs::cluster::Cluster;
use stores::TestStore;

const BIN: &str = env!("CARGO_BIN_EXE_span-marker");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A scheduler and executors, killed when dropped. Their logs go to `dir`.
struct TestCluster {
    scheduler: Child,
    executors: Vec<(Child, u16)>,
    port: u16,
    dir: tempfile::TempDir,
}

impl TestCluster {
    /// A scheduler and one executor per entry of `cwds` (its working directory), all up.
    fn start(cwds: &[&Path]) -> Self {
        Self::start_with(cwds, 2)
    }

    /// [`start`](Self::start) with executors that run `slots` tasks at once.
    fn start_with(cwds: &[&Path], slots: usize) -> Self {
        Self::start_with_env(cwds, slots, &[])
    }

    /// [`start_with`](Self::start_with), the scheduler and the executors with `env` set.
    fn start_with_env(cwds: &[&Path], slots: usize, env: &[(&'static str, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let logs = dir.path().to_owned();
        let log = |name: &str| Stdio::from(std::fs::File::create(logs.join(name)).unwrap());
        let scheduler = Command::new(BIN)
            .args(["cluster", "scheduler", "--bind-host", "127.0.0.1"])
            .args(["--external-host", "127.0.0.1", "--port", &port.to_string()])
            // A lost executor is noticed within seconds.
            .args(["--executor-timeout-seconds", "5"])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stderr(log("scheduler.log"))
            .spawn()
            .unwrap();
        let mut cluster = Self {
            scheduler,
            executors: Vec::new(),
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Cluster::connect(&cluster.url()).is_err() {
            assert!(Instant::now() < deadline, "the scheduler did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        for (i, cwd) in cwds.iter().enumerate() {
            let (flight, grpc) = (free_port(), free_port());
            let work = cluster.dir.path().join(format!("work-{i}"));
            std::fs::create_dir_all(&work).unwrap();
            let child = Command::new(BIN)
                .current_dir(cwd)
                .args(["cluster", "executor", "--bind-host", "127.0.0.1"])
                .args([
                    "--port",
                    &flight.to_string(),
                    "--grpc-port",
                    &grpc.to_string(),
                ])
                .args(["--scheduler-host", "127.0.0.1"])
                .args(["--scheduler-port", &port.to_string()])
                .args(["--heartbeat-interval-seconds", "1"])
                .args(["--concurrent-tasks", &slots.to_string()])
                .arg("--work-dir")
                .arg(&work)
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stderr(log(&format!("executor-{i}.log")))
                .spawn()
                .unwrap();
            cluster.executors.push((child, flight));
        }
        Cluster::connect(&cluster.url())
            .unwrap()
            .wait_for_executors(cwds.len(), Duration::from_secs(30))
            .unwrap();
        cluster
    }

    fn url(&self) -> String {
        format!("df://127.0.0.1:{}", self.port)
    }

    /// SIGKILLs the first executor while `job` (an annotation on this cluster, its standard
    /// error piped) runs, waits for the job to end (a hang guard: `deadline`) and for the
    /// scheduler to drop the lost executor; returns the job's standard error. The job may fail,
    /// with a clear error naming a file.
    fn kill_an_executor_under(&mut self, job: Child, deadline: Instant) -> String {
        let (executor, _) = &mut self.executors[0];
        executor.kill().unwrap(); // SIGKILL
        executor.wait().unwrap();
        let mut job = job;
        while job.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "the job hung after the kill\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = job.wait_with_output().unwrap();
        let error = stderr(&out);
        eprintln!("the run with the kill ended with {}: {error}", out.status);
        if !out.status.success() {
            // Failing is allowed, with a clear error naming the file.
            assert!(error.contains("part-"), "{error}");
            assert!(!error.contains("panicked"), "{error}");
        }
        let client = Cluster::connect(&self.url()).unwrap();
        while client.executors().unwrap().len() > 1 {
            assert!(
                Instant::now() < deadline,
                "the lost executor stayed registered"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        error
    }

    /// The logs, for a failing test's message.
    fn logs(&self) -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "log") {
                let log = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                text += &format!("--- {}\n", entry.path().display());
                for line in tail.into_iter().rev() {
                    text += line;
                    text += "\n";
                }
            }
        }
        text
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for (child, _) in &mut self.executors {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.scheduler.kill();
        let _ = self.scheduler.wait();
    }
}

/// Runs `command`, killed if it takes longer than `limit` (a hang guard, not a speed check).
fn run_with_limit(command: &mut Command, limit: Duration) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{command:?} still ran after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Three corpus files of different sizes, row 5 of the second one unannotatable.
fn corpus_dir(dir: &Path) -> PathBuf {
    let corpus = dir.join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    write_corpus(&corpus.join("a.parquet"), 150, &[]);
    write_corpus(&corpus.join("b.parquet"), 90, &[5]);
    write_corpus(&corpus.join("c.parquet"), 120, &[]);
    corpus
}

fn model() -> String {
    common::conll_tiny().to_string_lossy().into_owned()
}

/// `statements` in order on `ctx`; the batches of the last, as a table.
async fn run_sql(ctx: &SessionContext, statements: &[String]) -> datafusion::error::Result<String> {
    let mut last: Vec<RecordBatch> = Vec::new();
    for statement in statements {
        last = ctx.sql(statement).await?.collect().await?;
    }
    Ok(pretty_format_batches(&last)?.to_string())
}

/// The same statements locally and on the cluster.
async fn both(cluster: &Cluster, statements: &[String]) -> (String, String) {
    let local = SessionContext::new();
    span_marker_udfs::sql::register_all(&local);
    let local = run_sql(&local.enable_url_table(), statements)
        .await
        .unwrap();
    let remote = cluster.context().await.unwrap().enable_url_table();
    cluster_check(cluster, &remote, statements).await;
    let remote = run_sql(&remote, statements).await.unwrap();
    (local, remote)
}

/// Applies the SET statements and has every executor load the model.
async fn cluster_check(cluster: &Cluster, ctx: &SessionContext, statements: &[String]) {
    for statement in statements.iter().filter(|s| s.starts_with("SET")) {
        ctx.sql(statement).await.unwrap();
    }
    let models = cluster.check_model(ctx).await.unwrap();
    assert_eq!(
        models.len(),
        2,
        "both executors loaded the model: {models:?}"
    );
}

#[test]
fn sql_on_the_cluster_equals_the_local_engine_and_every_setting_reaches_the_executors() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus_dir(dir.path());
    let repo = common::repo();
    let test_cluster = TestCluster::start(&[repo, repo]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let cluster = Cluster::connect(&test_cluster.url()).unwrap();
        let query = |file: &str| {
            format!(
                "SELECT id, span_marker_predict(tokens) AS entities FROM '{}' ORDER BY id",
                corpus.join(file).display()
            )
        };
        let with = |settings: &[&str], file: &str| -> Vec<String> {
            let mut statements = vec![format!("SET span_marker.model = '{}'", model())];
            statements.extend(settings.iter().map(|s| format!("SET span_marker.{s}")));
            statements.push(query(file));
            statements
        };
        let mut results = Vec::new();
        for settings in [
            &[][..],
            &["threshold = 0.6"],
            &["allow_overlapping = true"],
            &["precision = 'int8'"],
        ] {
            let (local, remote) = both(&cluster, &with(settings, "a.parquet")).await;
            assert_eq!(
                local,
                remote,
                "settings {settings:?}\n{}",
                test_cluster.logs()
            );
            results.push(remote);
        }
        // A setting dropped on the way would give the default's result.
        for (i, result) in results.iter().enumerate().skip(1) {
            assert_ne!(result, &results[0], "setting {i} changed nothing");
        }
        // Another model.
        let tiny = common::fixtures().join("span-marker/tiny-bert");
        let other = vec![
            format!("SET span_marker.model = '{}'", tiny.display()),
            query("a.parquet"),
        ];
        let (local, remote) = both(&cluster, &other).await;
        assert_eq!(local, remote);
        assert_ne!(remote, results[0], "the model setting changed nothing");

        // Settings checked only where the function runs: their errors come back.
        let ctx = cluster.context().await.unwrap().enable_url_table();
        let strict = with(&["strict = true"], "b.parquet");
        let error = run_sql(&ctx, &strict).await.unwrap_err().to_string();
        assert!(error.contains("row 5"), "strict mode: {error}");
        let lenient = run_sql(&ctx, &with(&["strict = false"], "b.parquet"))
            .await
            .unwrap();
        assert!(lenient.contains("| 5  |"), "{lenient}");
        let error = run_sql(&ctx, &with(&["batch_size = 0"], "c.parquet"))
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("batch_size"), "batch size: {error}");
    });
}

fn annotate(cluster: &str, input: &Path, output: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(["annotate", "--cluster", cluster, "--input"])
        .arg(input)
        .arg("--output")
        .arg(output)
        .args(["--model", &model(), "--show", "0"])
        .args(extra);
    command
}

/// The local engine's annotation of each file of `corpus`, by file name.
fn local_annotations(corpus: &Path, dir: &Path) -> Vec<(String, Vec<RecordBatch>)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|input| {
            let name = input.file_name().unwrap().to_string_lossy().into_owned();
            let output = dir.join(format!("local-{name}"));
            let status = Command::new(BIN)
                .args(["annotate", "--input"])
                .arg(input)
                .arg("--output")
                .arg(&output)
                .args(["--model", &model(), "--show", "0"])
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
            (name, read_all(&output))
        })
        .collect()
}

fn assert_same_outputs(want: &[(String, Vec<RecordBatch>)], output_dir: &Path) {
    for (name, local) in want {
        assert_same_rows(name, &read_all(&output_dir.join(name)), local);
    }
}

#[test]
fn annotation_on_the_cluster_equals_the_local_one_and_a_rerun_redoes_only_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus_dir(dir.path());
    let want = local_annotations(&corpus, dir.path());
    let repo = common::repo();
    let cluster = TestCluster::start(&[repo, repo]);
    let url = cluster.url();
    let output = dir.path().join("annotated");

    let out = run_with_limit(
        &mut annotate(&url, &corpus, &output, &[]),
        Duration::from_secs(300),
    );
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
    assert!(
        stderr(&out).contains("annotated 3 files (360 rows)"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("1 rows could not be annotated"),
        "{}",
        stderr(&out)
    );
    assert_same_outputs(&want, &output);

    // Everything done: nothing redone, nothing rewritten.
    let before = std::fs::read(output.join("b.parquet")).unwrap();
    let out = run_with_limit(
        &mut annotate(&url, &corpus, &output, &[]),
        Duration::from_secs(300),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("annotated 0 files (0 rows)"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("3 files done by an earlier run"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(output.join("b.parquet")).unwrap(), before);

    // A lost output is redone alone; a glob names the inputs as well as the directory.
    std::fs::remove_file(output.join("c.parquet")).unwrap();
    let glob = corpus.join("*.parquet");
    let out = run_with_limit(
        &mut annotate(&url, &glob, &output, &[]),
        Duration::from_secs(300),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("annotated 1 files (120 rows)"),
        "{}",
        stderr(&out)
    );
    assert_same_outputs(&want, &output);

    // Another job's settings in the same directory: refused, naming the difference.
    let out = run_with_limit(
        &mut annotate(&url, &corpus, &output, &["--threshold", "0.7"]),
        Duration::from_secs(300),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("`threshold` was null, is now 0.7"),
        "{}",
        stderr(&out)
    );

    // A file the job did not write is never replaced.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("a.parquet"), b"someone else's").unwrap();
    let out = run_with_limit(
        &mut annotate(&url, &corpus, &foreign, &[]),
        Duration::from_secs(300),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("was not written by this annotation job"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(foreign.join("a.parquet")).unwrap(),
        b"someone else's"
    );
}

#[test]
fn an_executor_killed_during_an_annotation_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    for i in 0..6 {
        write_corpus(&corpus.join(format!("part-{i}.parquet")), 1500, &[]);
    }
    let want = local_annotations(&corpus, dir.path());
    let repo = common::repo();
    let mut cluster = TestCluster::start(&[repo, repo]);
    let url = cluster.url();
    let output = dir.path().join("annotated");

    let mut job = annotate(&url, &corpus, &output, &["--files-at-once", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill an executor once the first file is written: work is in flight on both.
    let deadline = Instant::now() + Duration::from_secs(300);
    while !output.join("part-0.parquet").exists() && !output.join("part-1.parquet").exists() {
        assert!(
            Instant::now() < deadline,
            "no file finished\n{}",
            cluster.logs()
        );
        if job.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let first_error = cluster.kill_an_executor_under(job, deadline);
    // A rerun (on the one executor left) completes the job exactly.
    let out = run_with_limit(
        &mut annotate(&url, &corpus, &output, &[]),
        Duration::from_secs(300),
    );
    assert!(
        out.status.success(),
        "first run: {first_error}\nrerun: {}\n{}",
        stderr(&out),
        cluster.logs()
    );
    assert_same_outputs(&want, &output);
}

#[test]
fn an_executor_that_cannot_load_the_model_is_named_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus_dir(dir.path());
    let elsewhere = tempfile::tempdir().unwrap();
    // A relative model path that the client does not have is sent as it is, and resolves on
    // the first executor only.
    let cluster = TestCluster::start(&[common::repo(), elsewhere.path()]);
    let (_, lost_port) = cluster.executors[1];
    let relative = "tests/fixtures/span-marker/conll-tiny";
    let output = dir.path().join("annotated");
    let out = run_with_limit(
        Command::new(BIN)
            .current_dir(elsewhere.path())
            .args([
                "annotate",
                "--cluster",
                &cluster.url(),
                "--model",
                relative,
                "--input",
            ])
            .arg(&corpus)
            .arg("--output")
            .arg(&output),
        Duration::from_secs(120),
    );
    assert!(!out.status.success());
    let error = stderr(&out);
    assert!(
        error.contains("cannot be loaded on every executor"),
        "{error}"
    );
    assert!(
        error.contains(&format!("127.0.0.1:{lost_port}/")),
        "names the executor: {error}"
    );
    assert!(error.contains("not a directory"), "says why: {error}");
    assert!(!error.contains("DataFusionError("), "readable: {error}");
    assert!(!output.exists(), "nothing written before the check");

    let sql = |cwd: &Path| {
        run_with_limit(
            Command::new(BIN)
                .current_dir(cwd)
                .args(["sql", "--cluster", &cluster.url(), "--model", relative])
                .arg("SELECT span_marker_predict(['Paris'])"),
            Duration::from_secs(120),
        )
    };
    let out = sql(elsewhere.path());
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("127.0.0.1:{lost_port}/")),
        "{}",
        stderr(&out)
    );
    // Where the client has it, the path is made absolute before it is sent: every executor
    // loads the client's model, whatever its own working directory.
    let out = sql(common::repo());
    assert!(out.status.success(), "{}", stderr(&out));
}

/// The array functions (planned by the client and the scheduler, decoded by the executors)
/// run on the cluster as locally; executors with three task slots run the model check's union
/// of one-row selects (tasks with several partitions of it wedged Ballista 55's scheduler);
/// and two clients at once both finish, twice.
#[test]
fn array_functions_odd_slot_counts_and_two_clients_leave_the_cluster_serving() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus_dir(dir.path());
    let repo = common::repo();
    let test_cluster = TestCluster::start_with(&[repo, repo], 3);
    let url = test_cluster.url();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let cluster = Cluster::connect(&url).unwrap();
        let statements = vec![
            format!("SET span_marker.model = '{}'", model()),
            format!(
                "SELECT id, array_length(tokens) AS n, cardinality(tokens) AS c, tokens[1] AS first, \
                 array_to_string(tokens, ' ') AS text FROM '{}' ORDER BY id",
                corpus.join("b.parquet").display()
            ),
        ];
        let (local, remote) = both(&cluster, &statements).await;
        assert_eq!(local, remote, "{}", test_cluster.logs());
        assert!(local.contains("| first"), "{local}");
    });
    for round in 0..2 {
        let clients: Vec<_> = (0..2)
            .map(|client| {
                let url = url.clone();
                std::thread::spawn(move || {
                    let query = format!(
                        "SELECT {client} AS client, span_marker_model_info() IS NOT NULL AS ok"
                    );
                    run_with_limit(
                        Command::new(BIN).args([
                            "sql",
                            "--cluster",
                            &url,
                            "--model",
                            &model(),
                            &query,
                        ]),
                        Duration::from_secs(120),
                    )
                })
            })
            .collect();
        for client in clients {
            let out = client.join().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}\n{}",
                stderr(&out),
                test_cluster.logs()
            );
        }
    }
}

/// A second annotation into an output directory another run holds is refused at once, not
/// queued on the cluster; a job that shows no progress for the stall timeout is cancelled,
/// naming its stage, and the cluster goes on serving.
#[test]
fn locked_outputs_are_refused_and_stalled_jobs_are_cancelled_not_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus_dir(dir.path());
    let cluster = TestCluster::start(&[common::repo()]);
    let url = cluster.url();
    let output = dir.path().join("annotated");
    std::fs::create_dir_all(&output).unwrap();
    let held = span_marker::lock::DirLock::acquire(&output, "test").unwrap();
    let out = run_with_limit(
        &mut annotate(&url, &corpus, &output, &[]),
        Duration::from_secs(60),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("another annotation run is writing here"),
        "{}",
        stderr(&out)
    );
    drop(held);

    // One task over many rows: no task ends for far longer than the 1 s stall timeout (the
    // watch sees the job appear and start, then nothing; the task would take minutes).
    let big = dir.path().join("big.parquet");
    write_corpus(&big, 200_000, &[]);
    let sql = |extra: &[&str], query: &str| {
        run_with_limit(
            Command::new(BIN)
                .args(["sql", "--cluster", &url, "--model", &model()])
                .args(extra)
                .arg(query),
            Duration::from_secs(300),
        )
    };
    // The model is loaded first, so that the model check itself is quick.
    let out = sql(&[], "SELECT span_marker_model_info() IS NOT NULL AS ok");
    assert!(out.status.success(), "{}", stderr(&out));
    let out = sql(
        &["--stall-timeout", "1"],
        &format!(
            "SELECT count(span_marker_predict(tokens)) AS n FROM '{}'",
            big.display()
        ),
    );
    let error = stderr(&out);
    assert!(!out.status.success(), "{error}");
    assert!(
        error.contains("made no progress in 1s")
            && error.contains("cancelled: job ")
            && error.contains("stage ")
            && error.contains("executors: 127.0.0.1:"),
        "{error}"
    );
    let out = sql(&[], "SELECT span_marker_model_info() IS NOT NULL AS ok");
    assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
}

/// Executors and schedulers refuse settings that cannot work, and ports they cannot listen
/// on, with the reason and a failure code, instead of serving half their services.
#[test]
fn cluster_programs_refuse_bad_settings_and_taken_ports() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().port().to_string();
    let (a, b) = (free_port().to_string(), free_port().to_string());
    let executor = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["cluster", "executor", "--bind-host", "127.0.0.1"];
        all.extend_from_slice(args);
        all.iter().map(|s| s.to_string()).collect()
    };
    let scheduler = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["cluster", "scheduler", "--bind-host", "127.0.0.1"];
        all.extend_from_slice(args);
        all.iter().map(|s| s.to_string()).collect()
    };
    let cases = [
        (
            executor(&["--port", &a, "--grpc-port", &a]),
            "equals --port",
        ),
        (
            executor(&["--port", &taken, "--grpc-port", &b]),
            &format!("cannot listen on 127.0.0.1:{taken}") as &str,
        ),
        (
            executor(&["--port", &a, "--grpc-port", &taken]),
            &format!("cannot listen on 127.0.0.1:{taken}"),
        ),
        (
            executor(&[
                "--port",
                &a,
                "--grpc-port",
                &b,
                "--heartbeat-interval-seconds",
                "0",
            ]),
            "heartbeat-interval-seconds",
        ),
        (
            executor(&["--port", &a, "--grpc-port", &b, "--concurrent-tasks", "0"]),
            "concurrent-tasks",
        ),
        (
            executor(&[
                "--port",
                &a,
                "--grpc-port",
                &b,
                "--work-dir",
                "/no/such/dir",
            ]),
            "/no/such/dir",
        ),
        (
            scheduler(&["--port", &a, "--executor-timeout-seconds", "0"]),
            "executor-timeout-seconds",
        ),
        (
            scheduler(&["--port", &a, "--task-max-failures", "0"]),
            "task-max-failures",
        ),
        (
            scheduler(&["--port", &taken]),
            &format!("cannot listen on 127.0.0.1:{taken}"),
        ),
    ];
    for (args, expected) in cases {
        let out = run_with_limit(Command::new(BIN).args(&args), Duration::from_secs(30));
        let error = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {error}");
        assert!(error.contains(expected), "{args:?}: {error}");
    }
}

#[test]
fn bad_or_unreachable_cluster_addresses_fail_within_seconds() {
    let closed = free_port();
    // Something that accepts connections but is no scheduler.
    let impostor = TcpListener::bind("127.0.0.1:0").unwrap();
    let impostor_port = impostor.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in impostor.incoming() {
            drop(stream);
        }
    });
    for (url, expected) in [
        ("127.0.0.1:50050".to_owned(), "expected df://HOST:PORT"),
        ("df://127.0.0.1:notaport".to_owned(), "is not a port number"),
        (
            format!("df://127.0.0.1:{closed}"),
            "cannot reach the scheduler",
        ),
        (
            format!("df://127.0.0.1:{impostor_port}"),
            "no Ballista scheduler answers",
        ),
    ] {
        for command in ["sql", "annotate"] {
            let mut cmd = Command::new(BIN);
            cmd.args([command, "--cluster", &url]);
            match command {
                "sql" => cmd.arg("SELECT 1"),
                _ => cmd.args(["--input", ".", "--output", "/nonexistent-out"]),
            };
            // Each check has a 5 s timeout: a longer run is a hang.
            let out = run_with_limit(&mut cmd, Duration::from_secs(20));
            assert!(!out.status.success(), "{command} {url}");
            let error = stderr(&out);
            assert!(error.contains(expected), "{command} {url}: {error}");
            assert!(error.starts_with("error: "), "{command} {url}: {error}");
        }
    }
}

/// `annotate --cluster` from `s3://` to `s3://`: the executors read and write the objects (the
/// client gets no rows), the outputs equal local annotation row for row, and a SIGKILL of the
/// client and then of an executor mid-job, each followed by a rerun, end in exactly the local
/// result with nothing staged left.
#[test]
fn annotation_on_the_cluster_reads_and_writes_s3_and_survives_kills_of_client_and_executor() {
    let Some(server) = stores::s3() else { return };
    let env = server.env();
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    for i in 0..6 {
        let path = corpus.join(format!("part-{i}.parquet"));
        write_corpus(&path, 1500, &[]);
        server.upload(&path, &format!("cluster/in/part-{i}.parquet"));
    }
    let want = local_annotations(&corpus, dir.path());
    let repo = common::repo();
    let mut cluster = TestCluster::start_with_env(&[repo, repo], 2, &env);
    let url = cluster.url();
    let (input, output) = ("s3://corpus/cluster/in/", "s3://corpus/cluster/out/");
    let job = |extra: &[&str]| {
        let mut command = Command::new(BIN);
        command
            .args([
                "annotate",
                "--cluster",
                &url,
                "--input",
                input,
                "--output",
                output,
            ])
            .args(["--model", &model(), "--show", "0"])
            .args(extra)
            .envs(env.iter().map(|(k, v)| (k, v)));
        command
    };
    let published = || {
        server
            .keys("cluster/out")
            .iter()
            .filter(|k| k.ends_with(".parquet") && !k.contains(".span-marker-staging"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(400);
    let wait_for = |count: usize, job: &mut Child| {
        while published() < count {
            assert!(
                Instant::now() < deadline,
                "no file was published\n{}",
                cluster.logs()
            );
            if job.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    // The client killed once a file is published.
    let mut first = job(&["--files-at-once", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(1, &mut first);
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let after_client = published();
    assert!(after_client < 6, "the kill came too late");

    // A rerun, an executor killed once it has published another file.
    let mut second = job(&["--files-at-once", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(after_client + 1, &mut second);
    let second_error = cluster.kill_an_executor_under(second, deadline);

    // The last rerun, on the executor left, completes the job exactly.
    let out = run_with_limit(&mut job(&[]), Duration::from_secs(300));
    assert!(
        out.status.success(),
        "second run: {second_error}\nlast: {}\n{}",
        stderr(&out),
        cluster.logs()
    );
    for (name, local) in &want {
        assert_same_rows(name, &server.batches(&format!("cluster/out/{name}")), local);
    }
    let mut names: Vec<String> = server.keys("cluster/out");
    names.retain(|k| !k.ends_with(".span-marker-annotate.json"));
    assert_eq!(
        names,
        (0..6)
            .map(|i| format!("cluster/out/part-{i}.parquet"))
            .collect::<Vec<_>>(),
        "the outputs, nothing staged"
    );
}

/// `annotate --cluster` from `az://` to `az://` (Azure Blob Storage, Azurite): the executors
/// read and write the blobs with the Azure environment, and the outputs equal local annotation
/// row for row, with only the outputs and the manifest left in the prefix.
#[test]
fn annotation_on_the_cluster_reads_and_writes_azure_blobs() {
    let Some(server) = stores::azure() else {
        return;
    };
    let env = server.env();
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    for i in 0..3 {
        let path = corpus.join(format!("part-{i}.parquet"));
        write_corpus(&path, 200, if i == 1 { &[5] } else { &[] });
        server.upload(&path, &format!("cluster/in/part-{i}.parquet"));
    }
    let want = local_annotations(&corpus, dir.path());
    let repo = common::repo();
    let cluster = TestCluster::start_with_env(&[repo, repo], 2, &env);
    let out = run_with_limit(
        Command::new(BIN)
            .args(["annotate", "--cluster", &cluster.url()])
            .args(["--input", &server.url("cluster/in/")])
            .args(["--output", &server.url("cluster/out/")])
            .args(["--model", &model(), "--show", "0"])
            .envs(env.iter().map(|(k, v)| (k, v))),
        Duration::from_secs(300),
    );
    assert!(
        out.status.success(),
        "{}
{}",
        stderr(&out),
        cluster.logs()
    );
    assert!(
        stderr(&out).contains("annotated 3 files (600 rows)"),
        "{}",
        stderr(&out)
    );
    for (name, local) in &want {
        assert_same_rows(name, &server.batches(&format!("cluster/out/{name}")), local);
    }
    assert_eq!(
        server.keys("cluster/out"),
        [
            "cluster/out/.span-marker-annotate.json",
            "cluster/out/part-0.parquet",
            "cluster/out/part-1.parquet",
            "cluster/out/part-2.parquet",
        ]
    );
}
