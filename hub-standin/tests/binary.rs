//! The `span-marker-hub-standin` binary, as a Python test runs it: seeded from folders, its
//! endpoint read from the first line, stopped by closing its standard input.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_span-marker-hub-standin");

/// Waits up to 20 s for `child` to exit.
fn wait(child: &mut Child) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the stand-in Hub did not stop when its standard input closed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn status_and_code(url: &str, token: Option<&str>) -> (u16, Option<String>) {
    let mut request = ureq::get(url);
    if let Some(token) = token {
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    match request.call() {
        Ok(response) => (response.status(), None),
        Err(ureq::Error::Status(status, response)) => {
            (status, response.header("X-Error-Code").map(str::to_owned))
        }
        Err(e) => panic!("{url}: {e}"),
    }
}

#[test]
fn the_binary_serves_seeded_datasets_until_its_input_closes() {
    let work = tempfile::tempdir().unwrap();
    let converted = work.path().join("converted");
    std::fs::create_dir_all(converted.join("default/train")).unwrap();
    std::fs::write(
        converted.join("default/train/0000.parquet"),
        b"PAR1 rows PAR1",
    )
    .unwrap();
    let main = work.path().join("main");
    std::fs::create_dir_all(&main).unwrap();
    std::fs::write(main.join("README.md"), b"# corpus\n").unwrap();

    let mut child = Command::new(BINARY)
        .arg("--token")
        .arg("hf_org:org")
        .arg("--token=hf_writer:writer:write")
        .arg("--dataset")
        .arg(format!(
            "org/corpus@refs/convert/parquet={}",
            converted.display()
        ))
        .arg(format!("--dataset=org/corpus={}", main.display()))
        .arg("--private")
        .arg("org/corpus")
        .arg("--tree-page-size")
        .arg("1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let endpoint = line.trim_end().to_owned();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{line:?}");

    let tree =
        format!("{endpoint}/api/datasets/org/corpus/tree/refs%2Fconvert%2Fparquet?recursive=true");
    let page = ureq::get(&tree)
        .set("Authorization", "Bearer hf_org")
        .call()
        .unwrap();
    assert!(
        page.header("Link").is_some(),
        "a page of one entry names the next"
    );
    let items: serde_json::Value = page.into_json().unwrap();
    assert_eq!(items[0]["path"], "default");
    assert_eq!(
        status_and_code(&tree, None),
        (401, Some("RepoNotFound".into()))
    );
    assert_eq!(
        status_and_code(&tree, Some("hf_writer")),
        (404, Some("RepoNotFound".into()))
    );
    let file = ureq::get(&format!(
        "{endpoint}/datasets/org/corpus/resolve/refs%2Fconvert%2Fparquet/default/train/0000.parquet"
    ))
    .set("Authorization", "Bearer hf_org")
    .call()
    .unwrap();
    assert!(file.header("X-Linked-Etag").is_some(), "Parquet is LFS");
    assert_eq!(file.into_string().unwrap(), "PAR1 rows PAR1");
    let readme = format!("{endpoint}/datasets/org/corpus/resolve/main/README.md");
    assert_eq!(status_and_code(&readme, Some("hf_org")), (200, None));

    drop(child.stdin.take());
    let status = wait(&mut child);
    assert!(status.success(), "{status:?}");
}

#[test]
fn bad_flags_are_refused_with_exit_code_2() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().display().to_string();
    let cases: [(&[&str], &str); 8] = [
        (&["--bogus"], "unknown argument"),
        (&["--token"], "--token needs a value"),
        (&["--token", "only-a-token"], "TOKEN:USER"),
        (&["--token", "t:u:admin"], "TOKEN:USER"),
        (&["--dataset", "org/corpus"], "ID[@BRANCH]=DIR"),
        (&["--dataset", "corpus=/"], "namespace/name"),
        (
            &["--dataset", "org/corpus=/no/such/folder"],
            "not a directory",
        ),
        (
            &["--private", "org/corpus"],
            "no --dataset seeds org/corpus",
        ),
    ];
    for (args, message) in cases {
        let output = Command::new(BINARY)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(
            stderr.contains("usage: span-marker-hub-standin"),
            "{stderr}"
        );
        assert!(output.stdout.is_empty(), "{args:?}");
    }
    let page = Command::new(BINARY)
        .args([
            "--dataset",
            &format!("org/corpus={dir}"),
            "--tree-page-size",
            "0",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(page.status.code(), Some(2));

    let help = Command::new(BINARY).arg("--help").output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).starts_with("usage: span-marker-hub-standin"));
}
