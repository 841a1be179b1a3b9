//! A stand-in for the Hugging Face Hub's HTTP API, served on `127.0.0.1` for tests: the real
//! Hub cannot be reached from the test machines, and a publishing client is only proven by a
//! server that speaks the same protocol as the real one. What it serves:
//!
//! - `GET /api/whoami-v2`: the user behind a bearer token;
//! - `POST /api/validate-yaml`: a README's metadata, always accepted;
//! - `POST /api/repos/create`: a model repository (private or not), its first commit holding
//!   the Hub's default `.gitattributes`; `409` when it exists;
//! - `POST /api/models/{repo}/branch/{branch}`: a branch from `main`;
//! - `GET /api/models/{repo}[/revision/{rev}]`: the repository's information and files;
//! - `GET /api/models/{repo}/tree/{rev}[/{path}]`: the files of a revision;
//! - `POST /api/models/{repo}/preupload/{rev}`: which files go through LFS (`*.safetensors`,
//!   `*.bin` and the other patterns of the default `.gitattributes`, binary samples, 10 MB and
//!   more) and which inline;
//! - `POST /{repo}.git/info/lfs/objects/batch`, `PUT` of each object (its SHA-256 and size
//!   checked) and `POST .../verify`: the Git LFS basic transfer;
//! - `POST /api/models/{repo}/commit/{rev}`: an NDJSON commit of inline files, LFS pointers and
//!   deletions, applied all at once (a commit naming an LFS object never uploaded is refused,
//!   so the revision never points at half a model);
//! - `GET`/`HEAD /{repo}/resolve/{rev}/{path}`: downloads with the headers clients read
//!   (`X-Repo-Commit`, `ETag`, `X-Linked-Etag`, `X-Linked-Size`, ranges), and the error codes
//!   (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`) they map to exceptions; what it does
//!   not serve answers `404 EntryNotFound`, which clients take as "absent".
//!
//! Dataset repositories are seeded by the test ([`StandInHub::add_dataset`], onto any branch,
//! `refs/convert/parquet` where the Hub puts its Parquet conversions, included), apart from the
//! models (a model and a dataset may share an id), and read as on the Hub:
//!
//! - `GET /api/datasets/{repo}[/revision/{rev}]`: the information (`id`, `sha`, `private`,
//!   `siblings`; with `blobs=true` each file's size, blob id and LFS object);
//! - `GET /api/datasets/{repo}/tree/{rev}[/{path}]`: the entries of a folder (`file`s with
//!   their `lfs` object, `directory`s), every level below it with `recursive=true`,
//!   `lastCommit` with `expand=true`; a page at a time, the next named by a
//!   `Link: <url>; rel="next"` header ([`StandInHub::set_tree_page_size`]);
//! - `POST /api/datasets/{repo}/paths-info/{rev}`: the entries of the paths a form names;
//! - `GET /api/datasets/{repo}/refs`: branches, and the conversions as `converts`;
//! - `GET`/`HEAD /datasets/{repo}/resolve/{rev}/{path}`: downloads as for models.
//!
//! A revision is one path segment (`refs%2Fconvert%2Fparquet`). A dataset that is missing or
//! private to another user answers `RepoNotFound`, `401` without a token and `404` with one, as
//! the Hub does (a model answers `401` either way).
//!
//! Tokens are registered by the test ([`StandInHub::add_token`]), each for a user with or
//! without write access; private repositories are visible to their owner only (a dataset's
//! owner is the user of its namespace, [`StandInHub::set_dataset_private`]). Every request is
//! recorded ([`StandInHub::requests`]), so a test can prove that a client asked nothing.
//! Faults can be injected ([`StandInHub::fail_next_lfs_upload`],
//! [`StandInHub::fail_next_repo_creations`]),
//! and what the real Hub does with redirects can be switched on: a renamed repository
//! ([`StandInHub::move_repo`]: its old name answers `307` with the new path) and LFS files
//! served from another host ([`StandInHub::redirect_lfs_downloads`]: `302` to a CDN-like
//! `/cdn/{oid}` on `localhost`, the metadata headers on the redirect itself). The Hub can be
//! served under a path ([`StandInHub::start_under`]), as behind a proxy. Everything lives in
//! memory and the server stops when the [`StandInHub`] is dropped.
//!
//! The binary `span-marker-hub-standin` serves the same for tests in other languages:
//! `span-marker-hub-standin [--token TOKEN:USER[:write]]... [--dataset ID[@BRANCH]=DIR]...
//! [--private ID]... [--tree-page-size N]` prints the endpoint as its first line and serves
//! until its standard input closes.
//!
//! ```
//! let hub = span_marker_hub_standin::StandInHub::start()?;
//! hub.add_token("hf_writer", "user", true);
//! assert!(hub.endpoint().starts_with("http://127.0.0.1:"));
//! assert!(hub.files("user/model", "main").is_none());
//!
//! let split = std::collections::BTreeMap::from([(
//!     "default/train/0000.parquet".to_owned(),
//!     b"PAR1...".to_vec(),
//! )]);
//! hub.add_dataset("user/corpus", "refs/convert/parquet", split);
//! assert!(hub.dataset_commit("user/corpus", "refs/convert/parquet").is_some());
//! # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
//! ```

mod dataset;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tiny_http::{Header, Method, Request, Response, Server};

/// Patterns of the `.gitattributes` the Hub gives a new repository, matched on the file name's
/// suffix: files like these are stored through LFS.
const LFS_SUFFIXES: [&str; 16] = [
    ".7z",
    ".bin",
    ".bz2",
    ".ckpt",
    ".gz",
    ".h5",
    ".msgpack",
    ".onnx",
    ".ot",
    ".parquet",
    ".pkl",
    ".pt",
    ".pth",
    ".safetensors",
    ".tar",
    ".zip",
];

/// Files this large go through LFS whatever their name, as on the Hub.
const LFS_MIN_SIZE: u64 = 10 * 1024 * 1024;

/// A running stand-in Hub; stops when dropped.
pub struct StandInHub {
    endpoint: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// One file of a revision.
#[derive(Clone)]
struct Entry {
    data: Arc<Vec<u8>>,
    /// The SHA-256 of an LFS file (its pointer's oid).
    lfs: Option<String>,
}

impl Entry {
    /// A file of `data` at `path`, stored through LFS when the Hub would store it so (the
    /// rule of [`goes_to_lfs`]).
    fn new(path: &str, data: Vec<u8>) -> Self {
        let sample = &data[..data.len().min(512)];
        let lfs = goes_to_lfs(path, data.len() as u64, sample).then(|| sha256_hex(&data));
        Self {
            data: Arc::new(data),
            lfs,
        }
    }

    /// The `ETag` (and pre-upload `oid`) the Hub sends: the git blob id of an inline file, the
    /// LFS oid (SHA-256) of an LFS file.
    fn etag(&self) -> String {
        self.lfs.clone().unwrap_or_else(|| git_blob_id(&self.data))
    }

    /// The git blob id of what git stores: the file, or the LFS pointer to it.
    fn blob_id(&self) -> String {
        match &self.lfs {
            Some(oid) => git_blob_id(lfs_pointer(oid, self.data.len()).as_bytes()),
            None => git_blob_id(&self.data),
        }
    }
}

/// The Git LFS pointer file that stands for an object in git.
fn lfs_pointer(oid: &str, size: usize) -> String {
    format!("version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n")
}

fn git_blob_id(data: &[u8]) -> String {
    let mut git = sha1::Sha1::new();
    git.update(format!("blob {}\0", data.len()).as_bytes());
    git.update(data);
    hex(&git.finalize())
}

/// Whether the Hub stores a file through LFS: a name the default `.gitattributes` names, a
/// size of 10 MB or more, or a binary `sample` (its first 512 bytes hold a NUL); never an empty
/// file.
fn goes_to_lfs(path: &str, size: u64, sample: &[u8]) -> bool {
    size > 0
        && (LFS_SUFFIXES.iter().any(|s| path.ends_with(s))
            || size >= LFS_MIN_SIZE
            || sample.contains(&0))
}

type Tree = BTreeMap<String, Entry>;

struct Repo {
    owner: String,
    private: bool,
    branches: BTreeMap<String, String>,
    commits: HashMap<String, Tree>,
}

impl Repo {
    /// A new repository of `owner`, its one commit holding the Hub's default `.gitattributes`
    /// on `main`.
    fn new(owner: &str, private: bool) -> Self {
        let tree = initial_tree();
        let commit = commit_id("", &tree);
        Self {
            owner: owner.to_owned(),
            private,
            branches: BTreeMap::from([("main".to_owned(), commit.clone())]),
            commits: HashMap::from([(commit, tree)]),
        }
    }

    /// The commit `revision` names: a branch, or a commit id.
    fn commit_of(&self, revision: &str) -> Option<String> {
        self.branches.get(revision).cloned().or_else(|| {
            self.commits
                .contains_key(revision)
                .then(|| revision.to_owned())
        })
    }

    /// [`commit_of`](Self::commit_of), or the Hub's answer for a revision it does not know.
    fn commit_or_404(&self, revision: &str) -> Result<String, Reply> {
        self.commit_of(revision).ok_or_else(|| {
            Reply::error(
                404,
                Some("RevisionNotFound"),
                &format!("Invalid rev id: {revision}"),
            )
        })
    }
}

#[derive(Clone)]
struct User {
    name: String,
    write: bool,
}

#[derive(Default)]
struct State {
    endpoint: String,
    users: HashMap<String, User>,
    repos: BTreeMap<String, Repo>,
    /// Dataset repositories, a namespace apart from the models'.
    datasets: BTreeMap<String, Repo>,
    /// How many entries a page of a dataset's tree listing holds.
    tree_page_size: usize,
    /// `METHOD /path?query` of every request, in order.
    requests: Vec<String>,
    lfs: HashMap<String, Arc<Vec<u8>>>,
    fail_lfs_uploads: usize,
    fail_repo_creations: usize,
    repo_creations_asked: usize,
    commits_made: usize,
    /// Renamed repositories: old id to new id.
    moved: HashMap<String, String>,
    /// LFS downloads answered by a redirect to `/cdn/{oid}` on another host name.
    redirect_lfs: bool,
    /// Whether a request to `/cdn/` carried an `Authorization` header.
    cdn_saw_token: bool,
    /// The path the Hub is served under (empty, or `/...` without a trailing `/`).
    prefix: String,
    /// `http://localhost:{port}{prefix}`, the CDN's host as another name.
    cdn_endpoint: String,
}

impl StandInHub {
    /// Serves on a free port of `127.0.0.1` from a background thread.
    pub fn start() -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Self::start_under("")
    }

    /// Serves the Hub under the path `prefix` (e.g. `/mirror/hf`), as a proxy may: the
    /// [`endpoint`](Self::endpoint) ends with it, and requests outside it answer `404`.
    pub fn start_under(prefix: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let prefix = prefix.trim_end_matches('/');
        if !prefix.is_empty() && !prefix.starts_with('/') {
            return Err("the prefix is a path starting with `/`".into());
        }
        let server = Server::http("127.0.0.1:0")?;
        let port = server
            .server_addr()
            .to_ip()
            .ok_or("the stand-in Hub did not get an IP address")?
            .port();
        let endpoint = format!("http://127.0.0.1:{port}{prefix}");
        let state = Arc::new(Mutex::new(State {
            endpoint: endpoint.clone(),
            prefix: prefix.to_owned(),
            cdn_endpoint: format!("http://localhost:{port}{prefix}"),
            tree_page_size: 1000,
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(50)) {
                        handle(&state, request);
                    }
                }
            })
        };
        Ok(Self {
            endpoint,
            state,
            stop,
            thread: Some(thread),
        })
    }

    /// The base URL, for `HF_ENDPOINT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Accepts `token` as user `name`, who may create repositories and commit when `write`.
    pub fn add_token(&self, token: &str, name: &str, write: bool) {
        self.lock().users.insert(
            token.to_owned(),
            User {
                name: name.to_owned(),
                write,
            },
        );
    }

    /// Breaks the next `count` LFS object uploads halfway: the server reads half the body, then
    /// answers `500` and closes the connection.
    pub fn fail_next_lfs_upload(&self, count: usize) {
        self.lock().fail_lfs_uploads = count;
    }

    /// Answers the next `count` repository creations with `503`, before looking at them.
    pub fn fail_next_repo_creations(&self, count: usize) {
        self.lock().fail_repo_creations = count;
    }

    /// How many repository creations were asked for since the start (failed ones included).
    pub fn repo_creations_asked(&self) -> usize {
        self.lock().repo_creations_asked
    }

    /// Renames `from` to `to`, as the Hub does: requests naming `from` (downloads, the API,
    /// LFS) answer `307` with a relative `Location` naming `to`.
    pub fn move_repo(&self, from: &str, to: &str) {
        let mut state = self.lock();
        if let Some(repo) = state.repos.remove(from) {
            state.repos.insert(to.to_owned(), repo);
        }
        state.moved.insert(from.to_owned(), to.to_owned());
    }

    /// Serves the content of LFS files as the Hub does, from another host: a download answers
    /// `302` to `/cdn/{oid}` on `localhost` (the endpoint says `127.0.0.1`), with the file's
    /// commit, LFS oid and size in the redirect's headers.
    pub fn redirect_lfs_downloads(&self, on: bool) {
        self.lock().redirect_lfs = on;
    }

    /// Whether a request to the CDN came with an `Authorization` header (a client should not
    /// send the Hub's token to another host).
    pub fn cdn_saw_token(&self) -> bool {
        self.lock().cdn_saw_token
    }

    /// The files of `repo` at `revision` with their contents, or `None` when either is missing.
    pub fn files(&self, repo: &str, revision: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let state = self.lock();
        let repo = state.repos.get(repo)?;
        let tree = &repo.commits[&repo.commit_of(revision)?];
        Some(
            tree.iter()
                .map(|(path, entry)| (path.clone(), entry.data.to_vec()))
                .collect(),
        )
    }

    /// Which of `repo`'s files at `revision` are stored through LFS.
    pub fn lfs_files(&self, repo: &str, revision: &str) -> Vec<String> {
        let state = self.lock();
        let Some(repo) = state.repos.get(repo) else {
            return Vec::new();
        };
        let Some(commit) = repo.commit_of(revision) else {
            return Vec::new();
        };
        repo.commits[&commit]
            .iter()
            .filter(|(_, entry)| entry.lfs.is_some())
            .map(|(path, _)| path.clone())
            .collect()
    }

    /// Whether `repo` exists and is private.
    pub fn is_private(&self, repo: &str) -> Option<bool> {
        self.lock().repos.get(repo).map(|r| r.private)
    }

    /// How many commits were made since the start (repository creation included).
    pub fn commits_made(&self) -> usize {
        self.lock().commits_made
    }

    /// Commits `files` (paths relative to the repository's root, `/`-separated) onto `branch`
    /// of the dataset repository `id` (`namespace/name`), as its namespace's user. A missing
    /// repository is created as `POST /api/repos/create` would (public, the default
    /// `.gitattributes` on `main`); a missing branch starts from `main`, except the Hub's
    /// conversions (`refs/convert/parquet`), which start from the repository's first commit
    /// so that they hold only what is committed to them. Files go through LFS as on the Hub
    /// (`*.parquet` among them); datasets and models are apart (`a/b` may be both).
    ///
    /// # Panics
    ///
    /// When `id` is not `namespace/name` or a path is empty.
    pub fn add_dataset(&self, id: &str, branch: &str, files: BTreeMap<String, Vec<u8>>) {
        self.lock().seed_dataset(id, branch, files);
    }

    /// Makes the dataset `id` private (visible only to a token of its namespace's user) or
    /// public; `false` when there is no such dataset.
    pub fn set_dataset_private(&self, id: &str, private: bool) -> bool {
        match self.lock().datasets.get_mut(id) {
            Some(repo) => {
                repo.private = private;
                true
            }
            None => false,
        }
    }

    /// The commit `revision` (a branch or a commit id) of the dataset `id` names, or `None`
    /// when either is missing.
    pub fn dataset_commit(&self, id: &str, revision: &str) -> Option<String> {
        self.lock().datasets.get(id)?.commit_of(revision)
    }

    /// How many entries a page of a dataset's tree listing holds (at least 1; 1000 at the
    /// start); a longer listing names its next page in a `Link: <url>; rel="next"` header.
    pub fn set_tree_page_size(&self, size: usize) {
        self.lock().tree_page_size = size.max(1);
    }

    /// Every request since the start, in order, as `METHOD /path?query` (the path as sent,
    /// under the [`start_under`](Self::start_under) prefix): a client that should not reach
    /// the Hub (offline, or from a warm cache) is proven to by a list that did not grow.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for StandInHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An answer: status, extra headers and a body.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn json(status: u16, value: Value) -> Self {
        Self {
            status,
            headers: vec![("Content-Type", "application/json".into())],
            body: value.to_string().into_bytes(),
        }
    }

    /// An error as the Hub sends it: `X-Error-Code` (which clients map to exceptions),
    /// `X-Error-Message` and `{"error": ...}`.
    fn error(status: u16, code: Option<&str>, message: &str) -> Self {
        let mut reply = Self::json(status, json!({ "error": message }));
        if let Some(code) = code {
            reply.headers.push(("X-Error-Code", code.into()));
        }
        reply.headers.push(("X-Error-Message", message.into()));
        reply
    }
}

fn handle(state: &Mutex<State>, mut request: Request) {
    let method = request.method().clone();
    let url = request.url().to_owned();
    let (full_path, query) = url.split_once('?').unwrap_or((&url, ""));
    let (full_path, query) = (full_path.to_owned(), query.to_owned());
    let token = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .and_then(|h| h.value.as_str().strip_prefix("Bearer "))
        .map(str::to_owned);
    let range = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Range"))
        .map(|h| h.value.as_str().to_owned());
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    state.requests.push(format!("{method} {url}"));
    let path = match full_path.strip_prefix(state.prefix.as_str()) {
        Some(path) if path.starts_with('/') => path.to_owned(),
        _ => {
            send(request, Reply::error(404, None, "not under the Hub's path"));
            return;
        }
    };
    if let Some(location) = state.moved_location(&path) {
        let mut reply = Reply::error(307, None, "the repository was renamed");
        reply
            .headers
            .push(("Location", format!("{}{location}", state.prefix)));
        send(request, reply);
        return;
    }
    if let Some(oid) = path.strip_prefix("/cdn/") {
        if token.is_some() {
            state.cdn_saw_token = true;
        }
        let reply = match state.lfs.get(oid) {
            Some(data) if method == Method::Get || method == Method::Head => Reply {
                status: 200,
                headers: vec![("Content-Type", "application/octet-stream".into())],
                body: data.to_vec(),
            },
            _ => Reply::error(404, None, "no such object"),
        };
        send(request, reply);
        return;
    }
    if method == Method::Post && path == "/api/repos/create" {
        state.repo_creations_asked += 1;
        if state.fail_repo_creations > 0 {
            state.fail_repo_creations -= 1;
            send(
                request,
                Reply::error(503, None, "the Hub is busy, try again"),
            );
            return;
        }
    }

    // An LFS object upload reads its own body, so that a fault can stop halfway.
    if method == Method::Put {
        if let Some(oid) = path.strip_prefix("/lfs-upload/") {
            let expected = request.body_length().unwrap_or(0);
            if state.fail_lfs_uploads > 0 {
                state.fail_lfs_uploads -= 1;
                let mut half = vec![0; expected / 2];
                let _ = request.as_reader().read_exact(&mut half);
                let mut reply = Reply::error(500, None, "the connection broke");
                reply.headers.push(("Connection", "close".into()));
                send(request, reply);
                return;
            }
            let mut body = Vec::with_capacity(expected);
            let reply = match request.as_reader().read_to_end(&mut body) {
                Err(e) => Reply::error(400, None, &format!("reading the object: {e}")),
                Ok(_) if sha256_hex(&body) != oid => {
                    Reply::error(400, None, "the object's SHA-256 is not its oid")
                }
                Ok(_) => {
                    state.lfs.insert(oid.to_owned(), Arc::new(body));
                    Reply::json(200, json!({}))
                }
            };
            send(request, reply);
            return;
        }
    }
    let mut body = Vec::new();
    if let Err(e) = request.as_reader().read_to_end(&mut body) {
        send(
            request,
            Reply::error(400, None, &format!("reading the body: {e}")),
        );
        return;
    }
    let user = token.as_deref().and_then(|t| state.users.get(t)).cloned();
    let user = user.as_ref();
    let reply = match (&method, token.is_some() && user.is_none()) {
        // A token the Hub does not know is refused outright, as on the Hub.
        (_, true) => Reply::error(401, None, "Invalid credentials in Authorization header"),
        (Method::Get | Method::Head, false) => {
            state.get(&path, &query, user, range.as_deref(), &method)
        }
        (Method::Post, false) => state.post(&path, user, &body),
        _ => Reply::error(405, None, "method not allowed"),
    };
    send(request, reply);
}

fn send(request: Request, reply: Reply) {
    // Every answer says its length, as the Hub's do (clients read a file's size from a
    // `HEAD`'s `Content-Length`), however large: never chunked.
    let mut response = Response::from_data(reply.body)
        .with_status_code(reply.status)
        .with_chunked_threshold(usize::MAX);
    for (name, value) in reply.headers {
        if let Ok(header) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            response.add_header(header);
        }
    }
    let _ = request.respond(response);
}

/// `org/name` from the first two segments of `rest`, and what follows.
fn split_repo(rest: &str) -> Option<(String, &str)> {
    let mut parts = rest.splitn(3, '/');
    let (org, name) = (parts.next()?, parts.next()?);
    if org.is_empty() || name.is_empty() {
        return None;
    }
    Some((format!("{org}/{name}"), parts.next().unwrap_or("")))
}

impl State {
    /// Where a request for a renamed repository goes: `path` with the new id, if it names one.
    fn moved_location(&self, path: &str) -> Option<String> {
        for (from, to) in &self.moved {
            for (old, new) in [
                (format!("/api/models/{from}"), format!("/api/models/{to}")),
                (format!("/{from}.git/"), format!("/{to}.git/")),
                (format!("/{from}/"), format!("/{to}/")),
            ] {
                if let Some(rest) = path.strip_prefix(old.as_str()) {
                    if old.ends_with('/') || rest.is_empty() || rest.starts_with('/') {
                        return Some(format!("{new}{rest}"));
                    }
                }
            }
        }
        None
    }

    /// The repository `id` as `user` may see it: private ones only by their owner.
    fn visible(&self, id: &str, user: Option<&User>) -> Result<&Repo, Reply> {
        match self.repos.get(id) {
            Some(repo) if !repo.private || user.is_some_and(|u| u.name == repo.owner) => Ok(repo),
            _ => Err(Reply::error(
                401,
                Some("RepoNotFound"),
                &format!("Repository Not Found for url: {}/{id}.", self.endpoint),
            )),
        }
    }

    /// The repository `id`, for a change by `user`.
    fn writable(&self, id: &str, user: Option<&User>) -> Result<&Repo, Reply> {
        let repo = self.visible(id, user)?;
        match user {
            Some(user) if user.write && user.name == repo.owner => Ok(repo),
            _ => Err(Reply::error(
                403,
                None,
                &format!("You don't have the rights to write to {id}"),
            )),
        }
    }

    fn get(
        &self,
        path: &str,
        query: &str,
        user: Option<&User>,
        range: Option<&str>,
        method: &Method,
    ) -> Reply {
        if path == "/api/whoami-v2" {
            return match user {
                None => Reply::error(401, None, "Unauthorized"),
                Some(user) => Reply::json(
                    200,
                    json!({
                        "type": "user",
                        "name": user.name,
                        "auth": {"type": "access_token", "accessToken": {
                            "displayName": "test", "role": if user.write { "write" } else { "read" }
                        }}
                    }),
                ),
            };
        }
        if let Some(rest) = path.strip_prefix("/api/models/") {
            return self.info(rest, user);
        }
        if let Some(rest) = path.strip_prefix("/api/datasets/") {
            return self.dataset_api(path, rest, query, user);
        }
        if let Some(rest) = path.strip_prefix("/datasets/") {
            return self.dataset_resolve(rest, user, range, method);
        }
        // /{org}/{name}/resolve/{revision}/{path}
        let Some((id, rest)) = split_repo(path.trim_start_matches('/')) else {
            return Reply::error(404, Some("EntryNotFound"), "not found");
        };
        let Some(rest) = rest.strip_prefix("resolve/") else {
            return Reply::error(404, Some("EntryNotFound"), "not found");
        };
        let repo = match self.visible(&id, user) {
            Ok(repo) => repo,
            Err(reply) => return reply,
        };
        let (revision, file) = rest.split_once('/').unwrap_or((rest, ""));
        let revision = percent_decode(revision);
        match repo.commit_or_404(&revision) {
            Ok(commit) => self.resolve(repo, commit, file, range, method),
            Err(reply) => reply,
        }
    }

    /// A download of `file` (percent-encoded) at `commit` of `repo`, with the Hub's headers.
    fn resolve(
        &self,
        repo: &Repo,
        commit: String,
        file: &str,
        range: Option<&str>,
        method: &Method,
    ) -> Reply {
        let Some(entry) = repo.commits[&commit].get(&percent_decode(file)) else {
            let mut reply = Reply::error(
                404,
                Some("EntryNotFound"),
                &format!("Entry not found: {file}"),
            );
            // With the commit, clients remember the file's absence in their cache.
            reply.headers.push(("X-Repo-Commit", commit));
            return reply;
        };
        let size = entry.data.len();
        let mut headers = vec![
            ("X-Repo-Commit", commit),
            ("ETag", format!("\"{}\"", entry.etag())),
            ("Accept-Ranges", "bytes".to_owned()),
        ];
        if let Some(oid) = &entry.lfs {
            headers.push(("X-Linked-Etag", format!("\"{oid}\"")));
            headers.push(("X-Linked-Size", size.to_string()));
            if self.redirect_lfs {
                headers.push(("Location", format!("{}/cdn/{oid}", self.cdn_endpoint)));
                return Reply {
                    status: 302,
                    headers,
                    body: Vec::new(),
                };
            }
        }
        let (status, body) = match range.and_then(|r| parse_range(r, size)) {
            Some((start, end)) if method == &Method::Get || method == &Method::Head => {
                headers.push(("Content-Range", format!("bytes {start}-{end}/{size}")));
                let body = if size == 0 {
                    Vec::new()
                } else {
                    entry.data[start..=end].to_vec()
                };
                (206, body)
            }
            _ => (200, entry.data.to_vec()),
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// `GET /api/models/{repo}[/revision/{rev}]` and `/api/models/{repo}/tree/{rev}[/{path}]`.
    fn info(&self, rest: &str, user: Option<&User>) -> Reply {
        let Some((id, rest)) = split_repo(rest) else {
            return Reply::error(404, Some("EntryNotFound"), "not found");
        };
        let repo = match self.visible(&id, user) {
            Ok(repo) => repo,
            Err(reply) => return reply,
        };
        let (kind, revision, prefix) = match rest.split_once('/') {
            None if rest.is_empty() => ("revision", "main".to_owned(), String::new()),
            Some((kind @ ("revision" | "tree"), after)) => {
                let (revision, prefix) = after.split_once('/').unwrap_or((after, ""));
                (kind, percent_decode(revision), percent_decode(prefix))
            }
            _ => return Reply::error(404, Some("EntryNotFound"), "not found"),
        };
        let commit = match repo.commit_or_404(&revision) {
            Ok(commit) => commit,
            Err(reply) => return reply,
        };
        let tree = &repo.commits[&commit];
        if kind == "tree" {
            let prefix = if prefix.is_empty() {
                String::new()
            } else {
                format!("{}/", prefix.trim_end_matches('/'))
            };
            let entries: Vec<Value> = tree
                .iter()
                .filter(|(path, _)| path.starts_with(&prefix))
                .map(|(path, entry)| {
                    let mut item = json!({
                        "type": "file", "path": path, "size": entry.data.len(), "oid": entry.etag()
                    });
                    if let Some(oid) = &entry.lfs {
                        item["lfs"] =
                            json!({"oid": oid, "size": entry.data.len(), "pointerSize": 134});
                    }
                    item
                })
                .collect();
            if entries.is_empty() && !prefix.is_empty() {
                return Reply::error(
                    404,
                    Some("EntryNotFound"),
                    &format!("{prefix} does not exist on {revision}"),
                );
            }
            return Reply::json(200, Value::Array(entries));
        }
        let siblings: Vec<Value> = tree.keys().map(|p| json!({ "rfilename": p })).collect();
        Reply::json(
            200,
            json!({
                "_id": id, "id": id, "modelId": id, "author": repo.owner, "sha": commit,
                "private": repo.private, "disabled": false, "gated": false,
                "tags": [], "siblings": siblings,
            }),
        )
    }

    fn post(&mut self, path: &str, user: Option<&User>, body: &[u8]) -> Reply {
        // The Python client checks a README's metadata before uploading it; any is fine here.
        if path == "/api/validate-yaml" {
            return Reply::json(200, json!({"errors": [], "warnings": []}));
        }
        if path == "/api/repos/create" {
            return self.create_repo(user, body);
        }
        if let Some(rest) = path.strip_prefix("/api/datasets/") {
            return self.dataset_post(rest, body, user);
        }
        if let Some(rest) = path.strip_prefix("/api/models/") {
            let Some((id, rest)) = split_repo(rest) else {
                return Reply::error(404, Some("EntryNotFound"), "not found");
            };
            if let Err(reply) = self.writable(&id, user) {
                return reply;
            }
            let (action, revision) = rest.split_once('/').unwrap_or((rest, "main"));
            let revision = percent_decode(revision);
            return match action {
                "preupload" => self.preupload(&id, &revision, body),
                "commit" => self.commit(&id, &revision, body),
                "branch" => self.create_branch(&id, &revision),
                _ => Reply::error(404, Some("EntryNotFound"), "not found"),
            };
        }
        // /{org}/{name}.git/info/lfs/objects/{batch|verify}
        let trimmed = path.trim_start_matches('/');
        if let Some((id, rest)) = split_repo(trimmed) {
            if let (Some(id), Some(op)) = (
                id.strip_suffix(".git"),
                rest.strip_prefix("info/lfs/objects/"),
            ) {
                if let Err(reply) = self.writable(id, user) {
                    return reply;
                }
                return match op {
                    "batch" => self.lfs_batch(id, body),
                    "verify" => self.lfs_verify(body),
                    _ => Reply::error(404, Some("EntryNotFound"), "not found"),
                };
            }
        }
        Reply::error(404, Some("EntryNotFound"), "not found")
    }

    fn create_repo(&mut self, user: Option<&User>, body: &[u8]) -> Reply {
        let Some(user) = user else {
            return Reply::error(
                401,
                None,
                "You must be authenticated to create a repository",
            );
        };
        let Ok(request) = serde_json::from_slice::<Value>(body) else {
            return Reply::error(400, None, "the body is not JSON");
        };
        let Some(name) = request["name"].as_str() else {
            return Reply::error(400, None, "`name` is missing");
        };
        if request["type"].as_str().is_some_and(|t| t != "model") {
            return Reply::error(400, None, "the stand-in Hub holds model repositories only");
        }
        let owner = request["organization"].as_str().unwrap_or(&user.name);
        if !user.write || owner != user.name {
            return Reply::error(
                403,
                None,
                &format!(
                    "You don't have the rights to create a model under the namespace \"{owner}\""
                ),
            );
        }
        let id = format!("{owner}/{name}");
        let url = format!("{}/{id}", self.endpoint);
        if self.repos.contains_key(&id) {
            return Reply::json(
                409,
                json!({"error": "You already created this model repo", "url": url}),
            );
        }
        // The old name of a renamed repository is free again, as on the Hub.
        self.moved.remove(&id);
        self.commits_made += 1;
        let private = request["private"].as_bool().unwrap_or(false);
        self.repos
            .insert(id.clone(), Repo::new(&user.name, private));
        Reply::json(200, json!({"url": url, "name": id}))
    }

    fn create_branch(&mut self, id: &str, branch: &str) -> Reply {
        let repo = self.repos.get_mut(id).expect("checked writable");
        if repo.branches.contains_key(branch) {
            return Reply::error(409, None, &format!("Reference already exists: {branch}"));
        }
        let main = repo.branches["main"].clone();
        repo.branches.insert(branch.to_owned(), main);
        Reply::json(200, json!({}))
    }

    fn preupload(&self, id: &str, revision: &str, body: &[u8]) -> Reply {
        let repo = &self.repos[id];
        let commit = match repo.commit_or_404(revision) {
            Ok(commit) => commit,
            Err(reply) => return reply,
        };
        let tree = &repo.commits[&commit];
        let Ok(request) = serde_json::from_slice::<Value>(body) else {
            return Reply::error(400, None, "the body is not JSON");
        };
        let Some(files) = request["files"].as_array() else {
            return Reply::error(400, None, "`files` is missing");
        };
        let mut answers = Vec::new();
        for file in files {
            let (Some(path), Some(size)) = (file["path"].as_str(), file["size"].as_u64()) else {
                return Reply::error(400, None, "every file needs `path` and `size`");
            };
            let sample = file["sample"]
                .as_str()
                .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                .unwrap_or_default();
            let lfs = goes_to_lfs(path, size, &sample);
            let mut answer = json!({
                "path": path,
                "uploadMode": if lfs { "lfs" } else { "regular" },
                "shouldIgnore": false,
            });
            // What the revision holds at that path, so that clients skip unchanged files.
            if let Some(entry) = tree.get(path) {
                answer["oid"] = json!(entry.etag());
            }
            answers.push(answer);
        }
        Reply::json(200, json!({ "files": answers, "commitOid": commit }))
    }

    fn lfs_batch(&self, id: &str, body: &[u8]) -> Reply {
        let Ok(request) = serde_json::from_slice::<Value>(body) else {
            return Reply::error(400, None, "the body is not JSON");
        };
        if request["operation"] != "upload" {
            return Reply::error(400, None, "the stand-in Hub serves LFS uploads only");
        }
        let objects: Vec<Value> = request["objects"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|object| {
                let oid = object["oid"].as_str().unwrap_or_default();
                let size = object["size"].as_u64().unwrap_or_default();
                if self.lfs.contains_key(oid) {
                    return json!({"oid": oid, "size": size});
                }
                json!({
                    "oid": oid, "size": size, "authenticated": true,
                    "actions": {
                        "upload": {"href": format!("{}/lfs-upload/{oid}", self.endpoint)},
                        "verify": {"href": format!("{}/{id}.git/info/lfs/objects/verify", self.endpoint)},
                    }
                })
            })
            .collect();
        Reply {
            status: 200,
            headers: vec![("Content-Type", "application/vnd.git-lfs+json".into())],
            body: json!({"transfer": "basic", "objects": objects, "hash_algo": "sha256"})
                .to_string()
                .into_bytes(),
        }
    }

    fn lfs_verify(&self, body: &[u8]) -> Reply {
        let request: Value = serde_json::from_slice(body).unwrap_or_default();
        let oid = request["oid"].as_str().unwrap_or_default();
        match self.lfs.get(oid) {
            Some(data) if request["size"].as_u64() == Some(data.len() as u64) => {
                Reply::json(200, json!({}))
            }
            _ => Reply::error(404, None, &format!("LFS object {oid} was not uploaded")),
        }
    }

    /// Applies an NDJSON commit: every line checked before the branch moves.
    fn commit(&mut self, id: &str, revision: &str, body: &[u8]) -> Reply {
        let repo = &self.repos[id];
        let parent = match repo.commit_or_404(revision) {
            Ok(commit) => commit,
            Err(reply) => return reply,
        };
        if !repo.branches.contains_key(revision) {
            return Reply::error(400, None, "commits go to a branch, not to a commit id");
        }
        let mut tree = repo.commits[&parent].clone();
        let mut summary = None;
        let lines = body.split(|b| *b == b'\n').filter(|l| !l.is_empty());
        for (number, line) in lines.enumerate() {
            let Ok(line) = serde_json::from_slice::<Value>(line) else {
                return Reply::error(400, None, "a commit line is not JSON");
            };
            let value = &line["value"];
            let path = value["path"].as_str().unwrap_or_default().to_owned();
            let key = line["key"].as_str();
            if (number == 0) != (key == Some("header")) {
                return Reply::error(400, None, "the header must be the commit's first line");
            }
            if key != Some("header") && (path.is_empty() || path.starts_with('/')) {
                return Reply::error(400, None, &format!("invalid path {path:?}"));
            }
            match key {
                Some("header") => summary = value["summary"].as_str().map(str::to_owned),
                Some("file") => {
                    let Some(data) = value["content"]
                        .as_str()
                        .and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok())
                    else {
                        return Reply::error(400, None, &format!("{path}: content is not base64"));
                    };
                    tree.insert(
                        path,
                        Entry {
                            data: Arc::new(data),
                            lfs: None,
                        },
                    );
                }
                Some("lfsFile") => {
                    let oid = value["oid"].as_str().unwrap_or_default();
                    let Some(data) = self.lfs.get(oid) else {
                        return Reply::error(
                            422,
                            None,
                            &format!("{path}: LFS object {oid} was never uploaded"),
                        );
                    };
                    if value["size"].as_u64() != Some(data.len() as u64) {
                        return Reply::error(422, None, &format!("{path}: wrong LFS object size"));
                    }
                    tree.insert(
                        path,
                        Entry {
                            data: data.clone(),
                            lfs: Some(oid.to_owned()),
                        },
                    );
                }
                Some("deletedFile") => {
                    tree.remove(&path);
                }
                Some("deletedFolder") => {
                    let prefix = format!("{}/", path.trim_end_matches('/'));
                    tree.retain(|p, _| !p.starts_with(&prefix));
                }
                other => {
                    return Reply::error(400, None, &format!("unknown commit line key {other:?}"))
                }
            }
        }
        if summary.is_none() {
            return Reply::error(400, None, "the commit has no header line");
        }
        let commit = commit_id(&parent, &tree);
        let url = format!("{}/{id}/commit/{commit}", self.endpoint);
        self.commits_made += 1;
        let repo = self.repos.get_mut(id).expect("checked above");
        repo.commits.insert(commit.clone(), tree);
        repo.branches.insert(revision.to_owned(), commit.clone());
        Reply::json(
            200,
            json!({"success": true, "commitOid": commit, "commitUrl": url, "pullRequestUrl": null}),
        )
    }
}

/// The files of a new repository's first commit: the Hub's default `.gitattributes`.
fn initial_tree() -> Tree {
    let attributes: String = LFS_SUFFIXES
        .iter()
        .map(|s| format!("*{s} filter=lfs diff=lfs merge=lfs -text\n"))
        .collect();
    Tree::from([(
        ".gitattributes".to_owned(),
        Entry {
            data: Arc::new(attributes.into_bytes()),
            lfs: None,
        },
    )])
}

/// A 40-hex commit id from the parent and the tree's content.
fn commit_id(parent: &str, tree: &Tree) -> String {
    let mut hasher = Sha256::new();
    hasher.update(parent.as_bytes());
    for (path, entry) in tree {
        hasher.update(path.as_bytes());
        hasher.update(entry.etag().as_bytes());
    }
    hex(&hasher.finalize())[..40].to_owned()
}

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` as an inclusive range within `size`.
fn parse_range(range: &str, size: usize) -> Option<(usize, usize)> {
    let spec = range.strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    if size == 0 {
        return Some((0, 0));
    }
    let last = size - 1;
    match (start.parse::<usize>().ok(), end.parse::<usize>().ok()) {
        (Some(start), Some(end)) if start <= end => Some((start.min(last), end.min(last))),
        (Some(start), None) => Some((start.min(last), last)),
        (None, Some(n)) => Some((size.saturating_sub(n), last)),
        _ => None,
    }
}

/// `%XX` escapes of a URL path segment decoded (a `%` not followed by two hex digits kept).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
