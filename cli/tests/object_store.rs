//! `span-marker sql` against a real S3-compatible server (moto's, started here with its own
//! credentials; see `udfs/tests/s3/mod.rs`), the AWS environment set on the child process
//! only: `COPY ... TO 's3://...'` writes an object, queries over it print what the same queries
//! over a local copy print (the SpanMarker functions included), a second `COPY` to the same
//! key is refused without `--overwrite`, and a wrong secret is an error naming the URL, never
//! the secret.
//!
//! Where moto is not installed the test prints why and passes; `scripts/setup.sh` installs it.

#[path = "../../udfs/tests/s3/mod.rs"]
mod s3;

use std::process::{Command, Output};

/// The binary with the AWS environment of `env` and nothing else of AWS's (no profile files).
fn span_marker(env: &[(&'static str, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_span-marker"));
    command.current_dir(s3::repo());
    for (name, _) in std::env::vars() {
        if name.starts_with("AWS_") {
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
    let Some(server) = s3::server() else { return };
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
