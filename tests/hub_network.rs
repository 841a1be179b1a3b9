//! The Hub client against hostile and unusual servers, all on 127.0.0.1: a server that accepts
//! and never answers, one that trickles a byte a second, redirects (refused when publishing,
//! followed when downloading: a renamed repository, LFS files on a CDN), a Hub served under a
//! path, a busy Hub refusing repository creation; and secrets (a token with a byte a header
//! cannot carry, from the options, `HF_TOKEN` or the token file; a password in the Hub's
//! address; a token a server echoes back) searched for in every error message, debug form and
//! log line. Time limits are set short; no test asserts a speed, only that each failure ends,
//! and names its step. The cache the downloads fill is checked against the Python tools'.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use common::fixtures;
use span_marker::hub::publish::{upload_folder, whoami, PushOptions};
use span_marker::hub::{self, HubOptions};
use span_marker::train::{Trainer, TrainingArguments};
use span_marker::{LoadOptions, SpanMarkerModel};
use span_marker_hub_standin::StandInHub;

const WRITER: &str = "hf_writer_token";
/// The time limit of the tests against hostile servers.
const SHORT: Duration = Duration::from_secs(1);

/// Tests that set environment variables (and those that could read them) run one at a time.
fn env_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a hostile server does with each request.
#[derive(Clone)]
enum Behaviour {
    /// Accepts, reads the request, never answers.
    Silent,
    /// Sends a status line, then one byte of a header a second.
    TrickleHeaders,
    /// Answers `HEAD` at once with a file's metadata; anything else with headers, then one
    /// byte of the body a second.
    TrickleBody,
    /// Answers `302` to this location.
    Redirect(&'static str),
    /// Answers this status with the request's `Authorization` header in its error message.
    EchoToken(u16),
}

/// A server on 127.0.0.1 that misbehaves as told; stops answering when dropped.
struct Hostile {
    endpoint: String,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Hostile {
    fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        listener.set_nonblocking(true).unwrap();
        {
            let (connections, stop) = (connections.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            connections.fetch_add(1, Ordering::Relaxed);
                            let (behaviour, stop) = (behaviour.clone(), stop.clone());
                            std::thread::spawn(move || serve(stream, &behaviour, &stop));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            });
        }
        Self {
            endpoint,
            connections,
            stop,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One connection: requests read (method and headers) and answered as `behaviour` says.
fn serve(stream: TcpStream, behaviour: &Behaviour, stop: &AtomicBool) {
    stream.set_nonblocking(false).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let method = request_line
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_owned();
        let (mut authorization, mut length) = (String::new(), 0usize);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            match name.to_ascii_lowercase().as_str() {
                "authorization" => authorization = value.trim().to_owned(),
                "content-length" => length = value.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let trickle = |writer: &mut TcpStream, head: &str| {
            if writer.write_all(head.as_bytes()).is_err() {
                return;
            }
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                if writer.write_all(b"a").is_err() {
                    return;
                }
            }
        };
        match behaviour {
            Behaviour::Silent => {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                return;
            }
            Behaviour::TrickleHeaders => {
                return trickle(&mut writer, "HTTP/1.1 200 OK\r\nX-Slow: ")
            }
            Behaviour::TrickleBody if method == "HEAD" => {
                let head = "HTTP/1.1 200 OK\r\nX-Repo-Commit: 0123456789abcdef0123456789abcdef01234567\r\n\
                            ETag: \"e1\"\r\nContent-Length: 100\r\n\r\n";
                if writer.write_all(head.as_bytes()).is_err() {
                    return;
                }
            }
            Behaviour::TrickleBody => return trickle(
                &mut writer,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n",
            ),
            Behaviour::Redirect(location) => {
                let head = format!(
                    "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n"
                );
                if writer.write_all(head.as_bytes()).is_err() {
                    return;
                }
            }
            Behaviour::EchoToken(status) => {
                let message = format!("Invalid credentials: {authorization}");
                let body = serde_json::json!({ "error": message }).to_string();
                let head = format!(
                    "HTTP/1.1 {status} Refused\r\nX-Error-Message: {message}\r\n\
                     Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    if method == "HEAD" { 0 } else { body.len() }
                );
                let mut answer = head.into_bytes();
                if method != "HEAD" {
                    answer.extend_from_slice(body.as_bytes());
                }
                if writer.write_all(&answer).is_err() {
                    return;
                }
            }
        }
    }
}

/// Options for `endpoint` with the writer's token and the short time limit.
fn hub_options(endpoint: &str) -> HubOptions {
    HubOptions {
        endpoint: Some(endpoint.to_owned()),
        token: Some(WRITER.into()),
        timeout: Some(SHORT),
        ..HubOptions::default()
    }
}

fn push_options(endpoint: &str) -> PushOptions {
    PushOptions {
        hub: hub_options(endpoint),
        ..PushOptions::default()
    }
}

fn encoder() -> std::path::PathBuf {
    fixtures().join("encoders/tiny-bert")
}

/// The error of pushing the tiny encoder to `user/model` with `options`.
fn push_error(options: &PushOptions) -> String {
    upload_folder(&encoder(), "user/model", options)
        .unwrap_err()
        .to_string()
}

/// The error of resolving `org/model` through `options` into the empty cache `cache`.
fn download_error(options: &HubOptions, cache: &Path) -> String {
    let options = HubOptions {
        cache_dir: Some(cache.to_owned()),
        ..options.clone()
    };
    hub::resolve("org/model", &options).unwrap_err().to_string()
}

/// Options for the stand-in `hub`, with the default time limit.
fn stand_in_options(hub: &StandInHub) -> HubOptions {
    HubOptions {
        timeout: None,
        ..hub_options(hub.endpoint())
    }
}

fn stand_in() -> StandInHub {
    let hub = StandInHub::start().expect("the stand-in Hub starts");
    hub.add_token(WRITER, "user", true);
    hub
}

#[test]
fn a_server_that_never_answers_fails_each_step_within_its_time_and_names_it() {
    let _env = env_lock();
    let server = Hostile::start(Behaviour::Silent);
    let cache = tempfile::tempdir().unwrap();

    let err = push_error(&push_options(&server.endpoint));
    assert!(err.contains("creating the repository"), "{err}");
    assert!(err.contains("no complete answer within 1 s"), "{err}");
    assert!(err.contains("nothing was committed"), "{err}");
    // A step that ran out of time is not sent again.
    assert_eq!(server.connections(), 1);

    let err = download_error(&hub_options(&server.endpoint), cache.path());
    assert!(err.contains("org/model"), "{err}");
    assert!(
        err.contains("asking the Hub about `config.json`")
            && err.contains("no complete answer within 1 s"),
        "{err}"
    );
    assert_eq!(server.connections(), 2);

    let err = whoami(&hub_options(&server.endpoint))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("asking the Hub whose token this is") && err.contains("within 1 s"),
        "{err}"
    );
}

#[test]
fn a_server_that_trickles_a_byte_a_second_fails_within_the_step_time() {
    let _env = env_lock();
    let cache = tempfile::tempdir().unwrap();

    // Headers that never end.
    let server = Hostile::start(Behaviour::TrickleHeaders);
    let err = push_error(&push_options(&server.endpoint));
    assert!(
        err.contains("creating the repository") && err.contains("within 1 s"),
        "{err}"
    );
    let err = download_error(&hub_options(&server.endpoint), cache.path());
    assert!(
        err.contains("asking the Hub about `config.json`") && err.contains("within 1 s"),
        "{err}"
    );

    // A body that never ends: an API answer, and a file's content after its metadata came
    // back at once.
    let server = Hostile::start(Behaviour::TrickleBody);
    let err = push_error(&push_options(&server.endpoint));
    assert!(
        err.contains("creating the repository") && err.contains("within 1 s"),
        "{err}"
    );
    let err = download_error(&hub_options(&server.endpoint), cache.path());
    assert!(err.contains("downloading `config.json`"), "{err}");
    assert!(
        err.contains("fell below 64 KiB/s after its first 1 s") || err.contains("within"),
        "{err}"
    );
    // Nothing half-downloaded is left where the cache would take it for a file.
    let repo_dir = cache.path().join("models--org--model");
    assert!(!repo_dir.join("snapshots").exists());
    assert!(!repo_dir.join("refs").exists());
    let blobs: Vec<_> = std::fs::read_dir(repo_dir.join("blobs"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(blobs.is_empty(), "{blobs:?}");
}

#[test]
fn redirects_are_refused_when_publishing_and_never_taken_for_an_answer() {
    let _env = env_lock();
    let cache = tempfile::tempdir().unwrap();
    let server = Hostile::start(Behaviour::Redirect("http://127.0.0.1:9/elsewhere"));
    let err = push_error(&push_options(&server.endpoint));
    assert!(
        err.contains("creating the repository")
            && err.contains("redirect (HTTP 302)")
            && err.contains("http://127.0.0.1:9/elsewhere"),
        "{err}"
    );
    // To another host: only the Hub's metadata on the redirect itself could make it a file.
    let err = download_error(&hub_options(&server.endpoint), cache.path());
    assert!(
        err.contains("asking the Hub about `config.json`") && err.contains("X-Repo-Commit"),
        "{err}"
    );
    // Within the Hub, followed, but not forever.
    let server = Hostile::start(Behaviour::Redirect("/org/model/resolve/main/config.json"));
    let err = download_error(&hub_options(&server.endpoint), cache.path());
    assert!(err.contains("more than 5 redirects"), "{err}");
}

#[test]
fn a_renamed_repository_is_downloaded_through_its_redirect_and_not_published_to() {
    let _env = env_lock();
    let hub = stand_in();
    let options = PushOptions {
        hub: stand_in_options(&hub),
        ..PushOptions::default()
    };
    upload_folder(&encoder(), "user/old-name", &options).unwrap();
    hub.move_repo("user/old-name", "user/new-name");

    let cache = tempfile::tempdir().unwrap();
    let load = HubOptions {
        cache_dir: Some(cache.path().to_owned()),
        ..options.hub.clone()
    };
    let dir = hub::resolve("user/old-name", &load).unwrap();
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert_eq!(
            std::fs::read(dir.join(file)).unwrap(),
            std::fs::read(encoder().join(file)).unwrap(),
            "{file}"
        );
    }

    let commits = hub.commits_made();
    let options = PushOptions {
        create_repo: false,
        ..options
    };
    let err = upload_folder(&encoder(), "user/old-name", &options)
        .unwrap_err()
        .to_string();
    assert!(err.contains("redirect (HTTP 307)"), "{err}");
    assert!(err.contains("renamed"), "{err}");
    assert_eq!(hub.commits_made(), commits);
}

#[test]
fn lfs_files_come_from_the_cdn_the_hub_redirects_to_without_the_token() {
    let _env = env_lock();
    let hub = stand_in();
    let options = stand_in_options(&hub);
    upload_folder(
        &encoder(),
        "user/cdn",
        &PushOptions {
            hub: options.clone(),
            ..PushOptions::default()
        },
    )
    .unwrap();
    hub.redirect_lfs_downloads(true);
    let cache = tempfile::tempdir().unwrap();
    let dir = hub::resolve(
        "user/cdn",
        &HubOptions {
            cache_dir: Some(cache.path().to_owned()),
            ..options
        },
    )
    .unwrap();
    assert_eq!(
        std::fs::read(dir.join("model.safetensors")).unwrap(),
        std::fs::read(encoder().join("model.safetensors")).unwrap()
    );
    assert!(!hub.cdn_saw_token(), "the Hub's token went to the CDN");
}

#[test]
fn a_failed_repository_creation_is_tried_again() {
    let _env = env_lock();
    let hub = stand_in();
    let options = PushOptions {
        hub: HubOptions {
            timeout: Some(Duration::from_secs(30)),
            ..hub_options(hub.endpoint())
        },
        ..PushOptions::default()
    };
    hub.fail_next_repo_creations(2);
    upload_folder(&encoder(), "user/busy", &options).unwrap();
    assert_eq!(hub.repo_creations_asked(), 3);
    assert!(hub
        .files("user/busy", "main")
        .unwrap()
        .contains_key("config.json"));

    hub.fail_next_repo_creations(4);
    let err = upload_folder(&encoder(), "user/busier", &options)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("creating the repository: HTTP 503 the Hub is busy"),
        "{err}"
    );
    assert_eq!(hub.repo_creations_asked(), 3 + 4);
    assert!(hub.is_private("user/busier").is_none());
}

#[test]
fn a_hub_under_a_path_is_used_there_and_an_address_with_a_query_is_refused() {
    let _env = env_lock();
    let hub = StandInHub::start_under("/mirror/hf").unwrap();
    hub.add_token(WRITER, "user", true);
    assert!(hub.endpoint().ends_with("/mirror/hf"));
    let options = HubOptions {
        timeout: None,
        ..hub_options(&format!("{}/", hub.endpoint()))
    };
    let push = PushOptions {
        hub: options.clone(),
        ..PushOptions::default()
    };
    let commit = upload_folder(&encoder(), "user/proxied", &push).unwrap();
    assert_eq!(commit.repo_url, format!("{}/user/proxied", hub.endpoint()));
    assert_eq!(hub.lfs_files("user/proxied", "main"), ["model.safetensors"]);
    let cache = tempfile::tempdir().unwrap();
    let dir = hub::resolve(
        "user/proxied",
        &HubOptions {
            cache_dir: Some(cache.path().to_owned()),
            ..options.clone()
        },
    )
    .unwrap();
    assert_eq!(
        std::fs::read(dir.join("config.json")).unwrap(),
        std::fs::read(encoder().join("config.json")).unwrap()
    );

    let query = hub_options(&format!("{}?mirror=1", hub.endpoint()));
    let err = push_error(&PushOptions {
        hub: query.clone(),
        ..PushOptions::default()
    });
    assert!(err.contains("query"), "{err}");
    let err = download_error(&query, cache.path());
    assert!(err.contains("query"), "{err}");
}

#[test]
fn the_timeout_comes_from_the_options_the_environment_or_the_default() {
    let _env = env_lock();
    std::env::remove_var("HF_HUB_DOWNLOAD_TIMEOUT");
    assert_eq!(
        HubOptions::default().timeout().unwrap(),
        hub::DEFAULT_TIMEOUT
    );
    assert!(hub::DEFAULT_TIMEOUT <= Duration::from_secs(120));
    std::env::set_var("HF_HUB_DOWNLOAD_TIMEOUT", "2.5");
    assert_eq!(
        HubOptions::default().timeout().unwrap(),
        Duration::from_millis(2500)
    );
    assert_eq!(hub_options("http://x").timeout().unwrap(), SHORT);
    std::env::set_var("HF_HUB_DOWNLOAD_TIMEOUT", "soon");
    let err = HubOptions::default().timeout().unwrap_err().to_string();
    assert!(err.contains("HF_HUB_DOWNLOAD_TIMEOUT"), "{err}");
    // The variable's fault is the push's error, before anything is sent.
    let err = push_error(&PushOptions {
        hub: HubOptions {
            timeout: None,
            ..hub_options("http://127.0.0.1:9")
        },
        ..PushOptions::default()
    });
    assert!(err.contains("HF_HUB_DOWNLOAD_TIMEOUT"), "{err}");
    std::env::remove_var("HF_HUB_DOWNLOAD_TIMEOUT");
    let zero = HubOptions {
        timeout: Some(Duration::ZERO),
        ..HubOptions::default()
    };
    assert!(zero.timeout().is_err());
}

/// A log sink for one test's thread.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Asserts that none of `secrets` is in `text`.
#[track_caller]
fn assert_clean(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "{what} shows a secret: {text}");
    }
}

#[test]
fn planted_secrets_never_appear_in_errors_debug_forms_or_logs() {
    let _env = env_lock();
    // A token with a line break, and a password, each with a part found nowhere else.
    const TOKEN: &str = "hf_PLANTED\nTOKENzq81";
    const PASSWORD: &str = "PASSWORDzq81";
    const ECHOED: &str = "hf_ECHOEDzq81";
    let secrets = ["TOKENzq81", "hf_PLANTED", PASSWORD, ECHOED];

    let hub = stand_in();
    let logs = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .finish();
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");

    tracing::subscriber::with_default(subscriber, || {
        // Every failure: its message and debug form are searched, and says what it refuses.
        let check = |what: &str, result: Result<(), span_marker::Error>, says: &str| {
            let err = result.expect_err(what);
            let (shown, debug) = (err.to_string(), format!("{err:?}"));
            assert_clean(what, &shown, &secrets);
            assert_clean(what, &debug, &secrets);
            assert!(shown.contains(says), "{what}: {shown}");
        };
        let push = |options: &HubOptions| {
            upload_folder(
                &encoder(),
                "user/model",
                &PushOptions {
                    hub: options.clone(),
                    ..PushOptions::default()
                },
            )
            .map(drop)
        };
        let download = |options: &HubOptions| {
            hub::resolve(
                "user/model",
                &HubOptions {
                    cache_dir: Some(cache.clone()),
                    ..options.clone()
                },
            )
            .map(drop)
        };
        let train = |options: &HubOptions| {
            let mut model = SpanMarkerModel::from_pretrained(
                fixtures().join("training/init").to_str().unwrap(),
            )
            .unwrap();
            let args = TrainingArguments {
                output_dir: work.path().join("run"),
                device: "cpu".into(),
                push_to_hub: true,
                hub_model_id: Some("user/trained".into()),
                hub_token: options.token.clone(),
                hub_endpoint: options.endpoint.clone(),
                ..TrainingArguments::default()
            };
            Trainer::new(&mut model, args).map(drop)
        };
        let header = "an HTTP header cannot carry";

        // The token: given, in HF_TOKEN, in the token file.
        let given = HubOptions {
            token: Some(TOKEN.into()),
            ..hub_options(hub.endpoint())
        };
        check("push, token given", push(&given), header);
        check("download, token given", download(&given), header);
        check("training, token given", train(&given), header);
        check(
            "token()",
            given.token().map(drop),
            "the token given (`--token`",
        );
        let from_env = HubOptions {
            token: None,
            ..given.clone()
        };
        std::env::set_var("HF_TOKEN", TOKEN);
        check(
            "push, HF_TOKEN",
            push(&from_env),
            "HF_TOKEN has a line break",
        );
        check("download, HF_TOKEN", download(&from_env), "HF_TOKEN");
        check("whoami, HF_TOKEN", whoami(&from_env).map(drop), "HF_TOKEN");
        std::env::remove_var("HF_TOKEN");
        let token_file = work.path().join("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        std::env::set_var("HF_TOKEN_PATH", &token_file);
        check(
            "push, token file",
            push(&from_env),
            &format!("the token in {}", token_file.display()),
        );
        check(
            "download, token file",
            download(&from_env),
            &format!("the token in {}", token_file.display()),
        );
        std::env::remove_var("HF_TOKEN_PATH");
        let empty = HubOptions {
            token: Some("".into()),
            ..given.clone()
        };
        check("push, empty token", push(&empty), "is empty");
        check("training, empty token", train(&empty), "is empty");

        // A password in the Hub's address: given, and in HF_ENDPOINT.
        let address = hub
            .endpoint()
            .replace("http://", &format!("http://user:{PASSWORD}@"));
        let with_password = HubOptions {
            endpoint: Some(address.clone()),
            ..hub_options(hub.endpoint())
        };
        check("push, password", push(&with_password), "user:<redacted>@");
        check(
            "download, password",
            download(&with_password),
            "credentials",
        );
        check("training, password", train(&with_password), "credentials");
        std::env::set_var("HF_ENDPOINT", &address);
        let from_env = HubOptions {
            endpoint: None,
            ..with_password.clone()
        };
        check("push, HF_ENDPOINT", push(&from_env), "credentials");
        check("download, HF_ENDPOINT", download(&from_env), "credentials");
        std::env::remove_var("HF_ENDPOINT");
        for (what, debug) in [
            ("HubOptions", format!("{with_password:?} {given:?}")),
            (
                "PushOptions",
                format!(
                    "{:?}",
                    PushOptions {
                        hub: with_password.clone(),
                        ..PushOptions::default()
                    }
                ),
            ),
            (
                "LoadOptions",
                format!(
                    "{:?}",
                    LoadOptions {
                        hub: with_password.clone(),
                        ..LoadOptions::default()
                    }
                ),
            ),
        ] {
            assert_clean(what, &debug, &secrets);
            assert!(debug.contains("<redacted>"), "{debug}");
        }

        // A server that echoes the token back, refusing it (401) or failing (503, sent again,
        // with a warning each time).
        for status in [401, 503] {
            let echo = Hostile::start(Behaviour::EchoToken(status));
            let options = HubOptions {
                token: Some(ECHOED.into()),
                timeout: Some(Duration::from_secs(20)),
                ..hub_options(&echo.endpoint)
            };
            check("push, echoed", push(&options), &format!("HTTP {status}"));
            check("download, echoed", download(&options), "asking the Hub");
            check(
                "training, echoed",
                train(&options),
                &format!("HTTP {status}"),
            );
        }
    });
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("trying again"), "no retry was logged: {logs}");
    assert_clean("the logs", &logs, &secrets);
}

/// Runs Python with the Hugging Face cache at `cache`; its standard output.
fn python(script: &str, cache: &Path, envs: &[(&str, &str)]) -> String {
    let python = common::reference_python();
    let output = Command::new(python)
        .arg("-c")
        .arg(script)
        .env("HF_HUB_CACHE", cache)
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .envs(envs.iter().copied())
        .output()
        .expect("Python runs");
    assert!(
        output.status.success(),
        "Python failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_download_cache_is_the_python_tools_cache() {
    let _env = env_lock();
    let hub = stand_in();
    let options = stand_in_options(&hub);
    let commit = upload_folder(
        &encoder(),
        "user/shared",
        &PushOptions {
            hub: options.clone(),
            ..PushOptions::default()
        },
    )
    .unwrap();
    let files = ["config.json", "model.safetensors", "tokenizer.json"];
    let script = format!(
        "from huggingface_hub import hf_hub_download\n\
         for f in {files:?}:\n    print(hf_hub_download('user/shared', f))\n"
    );

    // What this crate downloaded, Python finds offline.
    let ours = tempfile::tempdir().unwrap();
    hub::resolve(
        "user/shared",
        &HubOptions {
            cache_dir: Some(ours.path().to_owned()),
            ..options.clone()
        },
    )
    .unwrap();
    let found = python(&script, ours.path(), &[("HF_HUB_OFFLINE", "1")]);
    let found: Vec<&str> = found.lines().collect();
    assert_eq!(found.len(), files.len(), "{found:?}");
    for (path, file) in found.iter().zip(files) {
        assert_eq!(
            std::fs::read(path).unwrap(),
            std::fs::read(encoder().join(file)).unwrap(),
            "{file}"
        );
        // A shared cache stays readable by others, as the Python tools leave it (0644 under
        // the usual umask 022), not a temporary file's 0600.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            assert_ne!(mode & 0o777, 0o600, "{file}: {mode:o}");
        }
    }

    // A commit id as the revision: found again in the cache, offline.
    let pinned = tempfile::tempdir().unwrap();
    for offline in [false, true] {
        let dir = hub::resolve(
            "user/shared",
            &HubOptions {
                cache_dir: Some(pinned.path().to_owned()),
                revision: Some(commit.commit_oid.clone()),
                offline,
                ..options.clone()
            },
        )
        .unwrap();
        assert!(dir.ends_with(&commit.commit_oid), "{}", dir.display());
    }

    // What Python downloaded, this crate finds offline.
    let theirs = tempfile::tempdir().unwrap();
    python(
        &script,
        theirs.path(),
        &[("HF_ENDPOINT", hub.endpoint()), ("HF_TOKEN", WRITER)],
    );
    let dir = hub::resolve(
        "user/shared",
        &HubOptions {
            cache_dir: Some(theirs.path().to_owned()),
            offline: true,
            ..options
        },
    )
    .unwrap();
    for file in files {
        assert_eq!(
            std::fs::read(dir.join(file)).unwrap(),
            std::fs::read(encoder().join(file)).unwrap(),
            "{file}"
        );
    }
}
