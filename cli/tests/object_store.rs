//! `span-marker sql` against a real S3-compatible server (moto's, started here with its own
//! credentials; see `udfs/tests/stores/mod.rs`), the AWS environment set on the child process
//! only: `COPY ... TO 's3://...'` writes an object, queries over it print what the same queries
//! over a local copy print (the SpanMarker functions included), a second `COPY` to the same
//! key is refused without `--overwrite`, and a wrong secret is an error naming the URL, never
//! the secret.
//!
//!
//! `annotate` over `s3://` prefixes, and over `az://` prefixes of Azure Blob Storage (Azurite),
//! in this process (on a cluster in `cluster.rs`) writes what local annotation writes, row for
//! row, publishes each object whole, skips finished objects on a rerun and completes a job whose
//! client was killed, refuses a changed input or other settings, never replaces an object it did
//! not write, and names a missing bucket or container or a wrong secret without showing the
//! secret.
//!
//! Where a server is not installed its tests print why and pass; `scripts/setup.sh` installs
//! them.

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/common/corpus.rs"]
mod corpus;
#[path = "../../udfs/tests/stores/mod.rs"]
mod stores;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use corpus::{assert_same_rows, ids, read_all, write_corpus};
use datafusion::arrow::array::RecordBatch;
use stores::TestStore;

/// The binary with the store environment of `env` and nothing else of AWS's or Azure's (no
/// profile files).
fn span_marker(env: &[(&'static str, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_span-marker"));
    command.current_dir(stores::repo());
    for (name, _) in std::env::vars() {
        if name.starts_with("AWS_") || name.starts_with("AZURE_") {
            command.env_remove(name);
        }
    }
    command
        .env("AWS_CONFIG_FILE", "/nonexistent/aws/config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws/credentials",
        )
        .envs(env.iter().map(|(k, v)| (k, v)));
    command
}

fn sql(env: &[(&'static str, String)], args: &[&str]) -> Output {
    span_marker(env).arg("sql").args(args).output().unwrap()
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn sql_reads_and_writes_s3_objects() {
    let Some(server) = stores::s3() else { return };
    let env = server.env();
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("texts.parquet").display().to_string();
    let remote = "s3://corpus/cli/texts.parquet";
    let rows = "SELECT * FROM (VALUES (1, 'Angela Merkel visited Paris .'), \
                (2, 'The United Nations opened an office in Porto .')) AS t(id, text)";
    for to in [local.as_str(), remote] {
        ok(sql(&env, &[&format!("COPY ({rows}) TO '{to}'")]));
    }
    let query = |from: &str| {
        format!(
            "SELECT id, text, span_marker_predict_text(text) AS entities FROM '{from}' ORDER BY id"
        )
    };
    let from_s3 = ok(sql(&env, &["--model", "bundled", &query(remote)]));
    assert!(from_s3.contains("Merkel"), "{from_s3}");
    assert_eq!(
        from_s3,
        ok(sql(&env, &["--model", "bundled", &query(&local)]))
    );

    // The object exists now: replaced only with --overwrite.
    let copy = format!("COPY (SELECT 3 AS id, 'x' AS text) TO '{remote}'");
    let refused = sql(&env, &[&copy]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(remote) && stderr.contains("--overwrite"),
        "{stderr}"
    );
    ok(sql(&env, &["--overwrite", &copy]));
    let count = ok(sql(
        &env,
        &[&format!("SELECT count(*) AS n FROM '{remote}'")],
    ));
    assert!(count.contains("| 1 "), "{count}");

    // Wrong credentials: the URL named, the secrets not shown.
    let wrong = "wrong-secret-Qz81Lk";
    let bad_env: Vec<_> = env
        .iter()
        .map(|(k, v)| match *k {
            "AWS_SECRET_ACCESS_KEY" => (*k, wrong.to_owned()),
            _ => (*k, v.clone()),
        })
        .collect();
    let failed = sql(&bad_env, &[&format!("SELECT * FROM '{remote}'")]);
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains(remote) && stderr.contains("403"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(wrong) && !stderr.contains(&server.secret_access_key),
        "{stderr}"
    );
}

/// `annotate` over object-store URLs with the tiny model, in this process: `extra` after.
fn annotate(env: &[(&'static str, String)], input: &str, output: &str, extra: &[&str]) -> Output {
    span_marker(env)
        .args(["annotate", "--input", input, "--output", output])
        .args(["--model", &model(), "--show", "0"])
        .args(extra)
        .output()
        .unwrap()
}

fn model() -> String {
    common::conll_tiny().to_string_lossy().into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The local annotation of the file `input` (one file in, one file out: no object store).
fn local_annotation(input: &Path) -> Vec<RecordBatch> {
    let dir = input.parent().unwrap().with_file_name("local");
    std::fs::create_dir_all(&dir).unwrap();
    let output = dir.join(input.file_name().unwrap());
    let out = span_marker(&[])
        .args(["annotate", "--input"])
        .arg(input)
        .arg("--output")
        .arg(&output)
        .args(["--model", &model(), "--show", "0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    read_all(&output)
}

/// Asserts that the objects `{prefix}{name}` hold the rows and entities of `want`'s files.
fn assert_same_objects(server: &dyn TestStore, prefix: &str, want: &[(String, Vec<RecordBatch>)]) {
    for (name, local) in want {
        assert_same_rows(name, &server.batches(&format!("{prefix}{name}")), local);
    }
}

/// Two corpus files, row 5 of the second unannotatable, in `dir/in/` and uploaded under
/// `{prefix}in/`; with their local annotations.
fn corpus(
    server: &dyn TestStore,
    dir: &Path,
    prefix: &str,
    rows: &[usize],
) -> Vec<(String, Vec<RecordBatch>)> {
    let local = dir.join("in");
    std::fs::create_dir_all(&local).unwrap();
    rows.iter()
        .enumerate()
        .map(|(i, &rows)| {
            let name = format!("part-{i}.parquet");
            let path = local.join(&name);
            write_corpus(&path, rows, if i == 1 { &[5] } else { &[] });
            server.upload(&path, &format!("{prefix}in/{name}"));
            let annotated = local_annotation(&path);
            (name, annotated)
        })
        .collect()
}

/// `annotate` over `server`'s objects, as the module says.
fn annotation_round_trip(server: &dyn TestStore) {
    let env = server.env();
    let url = |key: &str| server.url(key);
    let dir = tempfile::tempdir().unwrap();
    let want = corpus(server, dir.path(), "job/", &[150, 90]);

    let out = annotate(&env, &url("job/in/"), &url("job/out/"), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(text.contains("annotated 2 files (240 rows)"), "{text}");
    assert!(text.contains("1 rows could not be annotated"), "{text}");
    assert_same_objects(server, "job/out/", &want);
    // The outputs and the manifest, nothing staged left behind.
    assert_eq!(
        server.keys("job/out"),
        [
            "job/out/.span-marker-annotate.json",
            "job/out/part-0.parquet",
            "job/out/part-1.parquet"
        ]
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&server.read("job/out/.span-marker-annotate.json").unwrap())
            .unwrap();
    for name in ["part-0.parquet", "part-1.parquet"] {
        let record = &manifest["files"][name];
        assert!(record["input"]["e_tag"].is_string(), "{manifest}");
        assert!(record["output"]["e_tag"].is_string(), "{manifest}");
    }

    // A rerun skips what is done and rewrites nothing.
    let before = server.read("job/out/part-1.parquet").unwrap();
    let out = annotate(&env, &url("job/in/*.parquet"), &url("job/out"), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(text.contains("annotated 0 files (0 rows)"), "{text}");
    assert!(text.contains("2 files done by an earlier run"), "{text}");
    assert_eq!(server.read("job/out/part-1.parquet").unwrap(), before);

    // Other settings on the same output: refused, naming the difference.
    let out = annotate(
        &env,
        &url("job/in/"),
        &url("job/out/"),
        &["--threshold", "0.7"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("`threshold` was null, is now 0.7"),
        "{}",
        stderr(&out)
    );

    // A changed input: refused, naming it.
    let changed = dir.path().join("changed.parquet");
    write_corpus(&changed, 40, &[]);
    server.upload(&changed, "job/in/part-0.parquet");
    let out = annotate(&env, &url("job/in/"), &url("job/out/"), &[]);
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(
        text.contains(&url("job/in/part-0.parquet")) && text.contains("changed since"),
        "{text}"
    );

    // An object the job did not write is never replaced.
    server.upload(&changed, "job/in/part-0.parquet");
    let foreign = dir.path().join("foreign");
    std::fs::write(&foreign, b"someone else's").unwrap();
    server.upload(&foreign, "foreign/part-1.parquet");
    let out = annotate(&env, &url("job/in/"), &url("foreign/"), &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&url("foreign/part-1.parquet"))
            && stderr(&out).contains("was not written by this annotation job"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        server.read("foreign/part-1.parquet").unwrap(),
        b"someone else's"
    );

    // Objects in, a local directory out, and back: the same rows.
    let local_out = dir.path().join("local-out");
    let out = annotate(
        &env,
        &url("job/out/part-1.parquet"),
        &local_out.to_string_lossy(),
        &["--output-column", "again"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        ids(&read_all(&local_out.join("part-1.parquet"))),
        ids(&want[1].1)
    );
    let out = annotate(
        &env,
        &dir.path().join("in").to_string_lossy(),
        &url("from-local/"),
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_same_objects(server, "from-local/", &want);
}

#[test]
fn annotation_reads_and_writes_s3_objects_as_local_annotation_writes_files() {
    let Some(server) = stores::s3() else { return };
    annotation_round_trip(server);
}

#[test]
fn annotation_reads_and_writes_azure_blobs_as_local_annotation_writes_files() {
    let Some(server) = stores::azure() else {
        return;
    };
    annotation_round_trip(server);
}

#[test]
fn annotation_into_a_missing_bucket_or_with_a_wrong_secret_names_the_url_not_the_secret() {
    let Some(server) = stores::s3() else { return };
    let env = server.env();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.parquet");
    write_corpus(&input, 10, &[]);
    let input = input.to_string_lossy().into_owned();

    let out = annotate(&env, &input, "s3://no-such-bucket/out/", &[]);
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(
        text.contains("s3://no-such-bucket") && text.contains("NoSuchBucket"),
        "{text}"
    );

    let wrong = "wrong-secret-Zk31Pq";
    let bad_env: Vec<_> = env
        .iter()
        .map(|(k, v)| match *k {
            "AWS_SECRET_ACCESS_KEY" => (*k, wrong.to_owned()),
            _ => (*k, v.clone()),
        })
        .collect();
    let out = annotate(&bad_env, &input, "s3://corpus/wrong-secret/", &[]);
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(
        text.contains("s3://corpus/wrong-secret") && text.contains("403"),
        "{text}"
    );
    assert!(
        !text.contains(wrong) && !text.contains(&server.secret_access_key),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
}

#[test]
fn annotation_into_a_missing_container_or_with_a_wrong_key_names_the_url_not_the_key() {
    let Some(server) = stores::azure() else {
        return;
    };
    let env = server.env();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.parquet");
    write_corpus(&input, 10, &[]);
    let input = input.to_string_lossy().into_owned();

    let out = annotate(&env, &input, "az://no-such-container/out/", &[]);
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(
        text.contains("az://no-such-container") && text.contains("ContainerNotFound"),
        "{text}"
    );

    let wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXkh";
    let bad_env: Vec<_> = env
        .iter()
        .map(|(k, v)| match *k {
            "AZURE_STORAGE_ACCOUNT_KEY" => (*k, wrong.to_owned()),
            _ => (*k, v.clone()),
        })
        .collect();
    let out = annotate(&bad_env, &input, &server.url("wrong-key/"), &[]);
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(
        text.contains(&server.url("wrong-key")) && text.contains("403"),
        "{text}"
    );
    assert!(
        !text.contains(wrong) && !text.contains(&server.key),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
}

#[test]
fn a_client_killed_during_an_annotation_into_s3_leaves_no_half_object_and_a_rerun_completes_it() {
    let Some(server) = stores::s3() else { return };
    let env = server.env();
    let dir = tempfile::tempdir().unwrap();
    let want = corpus(server, dir.path(), "killed/", &[1500; 5]);

    let mut job = span_marker(&env)
        .args(["annotate", "--input", "s3://corpus/killed/in/"])
        .args(["--output", "s3://corpus/killed/out/"])
        .args(["--model", &model(), "--show", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let published = |keys: &[String]| {
        keys.iter()
            .filter(|k| k.ends_with(".parquet") && !k.contains(".span-marker-staging"))
            .count()
    };
    while published(&server.keys("killed/out")) == 0 {
        assert!(Instant::now() < deadline, "no file was published");
        assert!(job.try_wait().unwrap().is_none(), "the job ended first");
        std::thread::sleep(Duration::from_millis(20));
    }
    job.kill().unwrap(); // SIGKILL
    job.wait().unwrap();
    let keys = server.keys("killed/out");
    let done = published(&keys);
    assert!(done < want.len(), "the kill came too late: {keys:?}");
    // Every published object is complete.
    for key in keys.iter().filter(|k| k.ends_with(".parquet")) {
        if !key.contains(".span-marker-staging") {
            server.batches(key);
        }
    }

    let out = annotate(
        &env,
        "s3://corpus/killed/in/",
        "s3://corpus/killed/out/",
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(text.contains("files done by an earlier run"), "{text}");
    assert_same_objects(server, "killed/out/", &want);
    assert!(
        !server
            .keys("killed/out")
            .iter()
            .any(|k| k.contains(".span-marker-staging")),
        "{:?}",
        server.keys("killed/out")
    );
}
