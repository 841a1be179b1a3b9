//! Publishing to a Hugging Face Hub repository, by the protocol the `huggingface_hub` client
//! speaks: the repository is created when missing, the Hub says which files go through Git LFS
//! (`preupload`), those are uploaded as LFS objects (batch API, basic transfer, verified), and
//! one commit then adds every file at once: inline files as base64, LFS files as pointers. The
//! files of a failed push never show (the repository and branch may have been created), and
//! pushing again uploads only the LFS objects the Hub does not have yet. Files the revision
//! already holds (the pre-upload answer's `oid`) are left out, and nothing changed means no
//! commit. Requests that can be repeated (all but the commit, repository creation included)
//! are, on network errors and on `429` and `5xx` answers; a redirect is refused, never taken
//! for the Hub's answer; and each step ends within the Hub options' `timeout` (plus the time
//! an LFS object's size takes at [`MIN_RATE`](super::MIN_RATE)), its error naming the step.
//!
//! ```no_run
//! use span_marker::hub::publish::{upload_folder, PushOptions};
//! let options = PushOptions { private: true, ..Default::default() };
//! let commit = upload_folder("models/my-ner".as_ref(), "me/my-ner", &options)?;
//! println!("{}", commit.commit_url);
//! # Ok::<(), span_marker::Error>(())
//! ```

use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::http::{encode_segment, Body, Call, Failure, Http};
use super::{check_repo_id, HubOptions};
use crate::error::{Error, Result};
use crate::fingerprint::hex;

/// How many files one `preupload` request asks about (the Hub's own client sends 256).
const PREUPLOAD_CHUNK: usize = 256;
/// What a token check publishes to, in its errors.
const WHOAMI: &str = "(the token's user)";
/// The name of the last step in errors.
const COMMIT_STEP: &str = "committing";
/// How many bytes of each file the Hub sees to tell text from binary.
const SAMPLE_BYTES: usize = 512;

/// How files are published.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Endpoint and token (see [`HubOptions::endpoint`] and [`HubOptions::token`]); its
    /// `revision` is the branch committed to (`main` when unset), created from `main` when
    /// missing.
    pub hub: HubOptions,
    /// Create a missing repository as private.
    pub private: bool,
    /// The commit's summary line; `Upload folder using span-marker` when unset.
    pub commit_message: Option<String>,
    /// Create the repository when it does not exist (else a missing one is an error).
    pub create_repo: bool,
}

impl Default for PushOptions {
    fn default() -> Self {
        Self {
            hub: HubOptions::default(),
            private: false,
            commit_message: None,
            create_repo: true,
        }
    }
}

/// Files of one local folder to commit.
pub struct Folder<'a> {
    /// The local folder (walked recursively; hidden files and folders left out).
    pub dir: &'a Path,
    /// Where its files go in the repository; its root when `None`.
    pub path_in_repo: Option<&'a str>,
    /// Which files go, by their path relative to `dir` (with `/` separators); a folder that
    /// is refused is not entered.
    pub keep: &'a dyn Fn(&str) -> bool,
}

impl<'a> Folder<'a> {
    /// Every file of `dir`, at the repository's root.
    pub fn all(dir: &'a Path) -> Self {
        Self {
            dir,
            path_in_repo: None,
            keep: &|_| true,
        }
    }
}

/// What a push committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    /// The repository's page, e.g. `https://huggingface.co/me/my-ner`.
    pub repo_url: String,
    /// The commit's id.
    pub commit_oid: String,
    /// The commit's page.
    pub commit_url: String,
    /// How many files the commit adds or changes (0 when nothing changed, and no commit was
    /// made: `commit_oid` is then the revision's current commit).
    pub files: usize,
    /// How many of them are stored through LFS.
    pub lfs_files: usize,
}

/// One file to commit.
struct LocalFile {
    path: PathBuf,
    path_in_repo: String,
    size: u64,
    sha256: String,
    /// The git blob id, which the Hub gives inline files.
    git_sha1: String,
    sample: Vec<u8>,
}

/// How the Hub wants a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upload {
    Inline,
    Lfs,
    /// The revision holds it already, byte for byte.
    Unchanged,
}

/// Commits every file under `dir` (recursively; hidden files and folders left out) to
/// `repo_id` (`user/name` or `org/name`).
pub fn upload_folder(dir: &Path, repo_id: &str, options: &PushOptions) -> Result<CommitInfo> {
    upload_folders(&[Folder::all(dir)], repo_id, options)
}

/// Commits the files of several folders to `repo_id` in one commit.
pub fn upload_folders(
    folders: &[Folder<'_>],
    repo_id: &str,
    options: &PushOptions,
) -> Result<CommitInfo> {
    let fail = |message: String| Error::Publish {
        repo: repo_id.to_owned(),
        message,
    };
    check_repo_id(repo_id).map_err(fail)?;
    if options.hub.is_offline() {
        return Err(fail(
            "offline mode is on (HF_HUB_OFFLINE): publishing needs the network".into(),
        ));
    }
    let mut files = Vec::new();
    for folder in folders {
        if !folder.dir.is_dir() {
            return Err(fail(format!("{} is not a directory", folder.dir.display())));
        }
        let prefix = match folder.path_in_repo.map(|p| p.trim_matches('/')) {
            Some(p) if !p.is_empty() => format!("{p}/"),
            _ => String::new(),
        };
        collect_files(folder.dir, folder.dir, &prefix, folder.keep, &mut files)?;
    }
    if files.is_empty() {
        return Err(fail("no files to publish".into()));
    }
    let client = Client::new(&options.hub, repo_id)?;
    let revision = options.hub.revision.as_deref().unwrap_or("main");
    if options.create_repo {
        client.create_repo(options.private)?;
    }
    if revision != "main" {
        client.create_branch(revision)?;
    }
    let mut uploads = Vec::new();
    for chunk in files.chunks(PREUPLOAD_CHUNK) {
        uploads.extend(client.preupload(revision, chunk)?);
    }
    let changed: Vec<(&LocalFile, Upload)> = files
        .iter()
        .zip(uploads)
        .filter(|(_, upload)| *upload != Upload::Unchanged)
        .collect();
    let repo_url = format!("{}/{repo_id}", client.endpoint());
    if changed.is_empty() {
        // An empty commit would only add noise to the history, as the Python client knows.
        let commit_oid = client.head(revision)?;
        tracing::info!(
            repo = repo_id,
            "nothing changed since the last commit: nothing published"
        );
        return Ok(CommitInfo {
            commit_url: format!("{repo_url}/commit/{commit_oid}"),
            repo_url,
            commit_oid,
            files: 0,
            lfs_files: 0,
        });
    }
    let lfs_files: Vec<&LocalFile> = changed
        .iter()
        .filter(|(_, upload)| *upload == Upload::Lfs)
        .map(|(file, _)| *file)
        .collect();
    client.upload_lfs(revision, &lfs_files)?;
    let message = options
        .commit_message
        .clone()
        .unwrap_or_else(|| "Upload folder using span-marker".into());
    let (commit_oid, commit_url) = client.commit(revision, &message, &changed)?;
    tracing::info!(repo = repo_id, commit = %commit_oid, files = changed.len(), "published");
    Ok(CommitInfo {
        repo_url,
        commit_oid,
        commit_url,
        files: changed.len(),
        lfs_files: lfs_files.len(),
    })
}

/// The name of the user (or organization) `hub`'s token belongs to.
pub fn whoami(hub: &HubOptions) -> Result<String> {
    let client = Client::new(hub, WHOAMI)?;
    let url = format!("{}/api/whoami-v2", client.endpoint());
    let answer = client.call("asking the Hub whose token this is", &Call::get(&url))?;
    answer["name"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| client.fail("the whoami answer has no `name`".into()))
}

/// Creates `repo_id` (private when `options.private`); one that exists already is fine.
pub fn create_repo(repo_id: &str, options: &PushOptions) -> Result<()> {
    check_repo_id(repo_id).map_err(|message| Error::Publish {
        repo: repo_id.to_owned(),
        message,
    })?;
    Client::new(&options.hub, repo_id)?.create_repo(options.private)
}

/// The files under `dir`, sorted by their path in the repository.
fn collect_files(
    root: &Path,
    dir: &Path,
    prefix: &str,
    keep: &dyn Fn(&str) -> bool,
    out: &mut Vec<LocalFile>,
) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(Error::io(
                &path,
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the file name is not UTF-8, which a Hub path must be",
                ),
            ));
        };
        if name.starts_with('.') {
            continue;
        }
        let relative = path
            .strip_prefix(root)
            .expect("walked from the root")
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        if !keep(&relative) {
            continue;
        }
        let kind = entry.file_type().map_err(|e| Error::io(&path, e))?;
        if kind.is_dir() {
            collect_files(root, &path, prefix, keep, out)?;
        } else if kind.is_file() || path.is_file() {
            let (size, sha256, git_sha1, sample) = digest_file(&path)?;
            out.push(LocalFile {
                path,
                path_in_repo: format!("{prefix}{relative}"),
                size,
                sha256,
                git_sha1,
                sample,
            });
        }
    }
    Ok(())
}

/// A file's size, SHA-256, git blob id (hex) and first bytes, in one read.
fn digest_file(path: &Path) -> Result<(u64, String, String, Vec<u8>)> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let expected = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut hasher = Sha256::new();
    let mut git = sha1::Sha1::new();
    git.update(format!("blob {expected}\0").as_bytes());
    let mut buffer = vec![0u8; 1 << 20];
    let (mut size, mut sample) = (0u64, Vec::new());
    loop {
        let read = file.read(&mut buffer).map_err(|e| Error::io(path, e))?;
        if read == 0 {
            break;
        }
        if sample.len() < SAMPLE_BYTES {
            let take = (SAMPLE_BYTES - sample.len()).min(read);
            sample.extend_from_slice(&buffer[..take]);
        }
        hasher.update(&buffer[..read]);
        git.update(&buffer[..read]);
        size += read as u64;
    }
    if size != expected {
        return Err(Error::io(
            path,
            std::io::Error::other("the file changed while it was read for publishing"),
        ));
    }
    Ok((size, hex(&hasher.finalize()), hex(&git.finalize()), sample))
}

/// The Hub's API for one repository, with the token.
struct Client {
    http: Http,
    repo_id: String,
}

impl Client {
    fn new(hub: &HubOptions, repo_id: &str) -> Result<Self> {
        let fail = |message: String| Error::Publish {
            repo: repo_id.to_owned(),
            message,
        };
        let http = Http::new(hub).map_err(fail)?;
        if !http.has_token() {
            return Err(fail(format!(
                "no access token: set HF_TOKEN, pass one, or log in with `huggingface-cli login` \
                 (which writes {})",
                super::token_path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "~/.cache/huggingface/token".into())
            )));
        }
        Ok(Self {
            http,
            repo_id: repo_id.to_owned(),
        })
    }

    /// The Hub's base URL.
    fn endpoint(&self) -> &str {
        self.http.endpoint().base()
    }

    /// An error of this push, with the session's secrets taken out.
    fn fail(&self, message: String) -> Error {
        Error::Publish {
            repo: self.repo_id.clone(),
            message: self.http.scrub(&message),
        }
    }

    /// A step's failure as an error naming the step, with what to do about the usual ones and
    /// what became of the push.
    fn failure(&self, step: &str, failure: Failure) -> Error {
        let hint = match failure.status() {
            Some(401) => "; the token was refused, or the repository does not exist (check \
                          the token and the id; a private repository is visible to its owner \
                          only)"
                .to_owned(),
            Some(403) => format!(
                "; the token may not write to {} (a read-only token, or another user's or \
                 organization's namespace)",
                self.repo_id
            ),
            _ => String::new(),
        };
        // Files become visible only through the commit, all at once.
        let outcome = if self.repo_id == WHOAMI {
            ""
        } else if step == COMMIT_STEP {
            "; the commit may or may not have been applied, and pushing again is safe"
        } else {
            "; nothing was committed, and pushing again continues where this stopped"
        };
        self.fail(format!("{step}: {failure}{hint}{outcome}"))
    }

    /// `call`'s JSON answer, or the failure of `step`.
    fn call(&self, step: &str, call: &Call<'_>) -> Result<Value> {
        self.http
            .call(step, call)
            .map_err(|failure| self.failure(step, failure))
    }

    /// An LFS action's URL, moved to this endpoint when it names the public Hub and another
    /// endpoint is used (as the Python client does for mirrors).
    fn action_url(&self, href: &str) -> String {
        match href.strip_prefix(super::DEFAULT_ENDPOINT) {
            Some(rest) if self.endpoint() != super::DEFAULT_ENDPOINT => {
                format!("{}{rest}", self.endpoint())
            }
            _ => href.to_owned(),
        }
    }

    fn api(&self, action: &str, revision: &str) -> String {
        format!(
            "{}/api/models/{}/{action}/{}",
            self.endpoint(),
            self.repo_id,
            encode_segment(revision)
        )
    }

    /// Creates the repository; one that exists already is fine. Repeated like the other
    /// requests that can be: a repeat of a creation that did happen answers `409`.
    fn create_repo(&self, private: bool) -> Result<()> {
        const STEP: &str = "creating the repository";
        let (organization, name) = self.repo_id.split_once('/').expect("checked id");
        let body = json!({"name": name, "organization": organization, "private": private});
        let url = format!("{}/api/repos/create", self.endpoint());
        match self.http.call(STEP, &Call::post(&url, Body::Json(&body))) {
            // The Hub answers with the repository's address; anything else (an empty or a
            // non-JSON answer) is not a Hub's answer, and not taken for one.
            Ok(answer) if answer.is_object() => Ok(()),
            Ok(answer) => {
                Err(self.failure(
                    STEP,
                    Failure::Invalid(format!(
                    "the answer is not the Hub's ({} instead of a JSON object): check the Hub's \
                     address",
                    if answer.is_null() { "nothing".to_owned() } else { answer.to_string() }
                )),
                ))
            }
            Err(failure) if failure.status() == Some(409) => Ok(()),
            // No right to create: fine when the repository exists and the token may write to
            // it, which the commit finds out.
            Err(failure) if failure.status() == Some(403) && self.exists() => Ok(()),
            Err(failure) => Err(self.failure(STEP, failure)),
        }
    }

    /// Whether the repository exists for this token.
    fn exists(&self) -> bool {
        let url = format!("{}/api/models/{}", self.endpoint(), self.repo_id);
        self.http
            .call("looking the repository up", &Call::get(&url))
            .is_ok()
    }

    /// The commit `revision` points at.
    fn head(&self, revision: &str) -> Result<String> {
        let url = self.api("revision", revision);
        let answer = self.call("reading the revision", &Call::get(&url))?;
        answer["sha"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| self.fail("the revision answer has no `sha`".into()))
    }

    fn create_branch(&self, branch: &str) -> Result<()> {
        let step = format!("creating the branch `{branch}`");
        let url = self.api("branch", branch);
        let body = json!({});
        match self.http.call(&step, &Call::post(&url, Body::Json(&body))) {
            Ok(_) => Ok(()),
            Err(failure) if failure.status() == Some(409) => Ok(()),
            Err(failure) => Err(self.failure(&step, failure)),
        }
    }

    /// Per file, how the Hub wants it: inline, through LFS, or not at all when the revision
    /// has it already (the Hub's `oid` equal to ours) or ignores it.
    fn preupload(&self, revision: &str, files: &[LocalFile]) -> Result<Vec<Upload>> {
        let body = json!({
            "files": files.iter().map(|f| json!({
                "path": f.path_in_repo,
                "size": f.size,
                "sample": base64::engine::general_purpose::STANDARD.encode(&f.sample),
            })).collect::<Vec<_>>()
        });
        let url = self.api("preupload", revision);
        let answer = self.call(
            "asking the Hub how to upload",
            &Call::post(&url, Body::Json(&body)),
        )?;
        let modes = answer["files"]
            .as_array()
            .ok_or_else(|| self.fail("the pre-upload answer has no `files`".into()))?;
        files
            .iter()
            .map(|file| {
                let answer = modes
                    .iter()
                    .find(|m| m["path"] == file.path_in_repo.as_str());
                let mode = answer.and_then(|m| m["uploadMode"].as_str());
                let known = answer.and_then(|m| m["oid"].as_str());
                let ignored = answer.is_some_and(|m| m["shouldIgnore"] == true);
                // An empty file is stored inline whatever its name, as the Python client does
                // (object stores refuse empty uploads).
                let mode = if file.size == 0 {
                    Some("regular")
                } else {
                    mode
                };
                match mode {
                    _ if ignored => Ok(Upload::Unchanged),
                    Some("lfs") if known == Some(file.sha256.as_str()) => Ok(Upload::Unchanged),
                    Some("regular") if known == Some(file.git_sha1.as_str()) => {
                        Ok(Upload::Unchanged)
                    }
                    Some("lfs") => Ok(Upload::Lfs),
                    Some("regular") => Ok(Upload::Inline),
                    other => Err(self.fail(format!(
                        "the pre-upload answer gives `{}` the upload mode {other:?}",
                        file.path_in_repo
                    ))),
                }
            })
            .collect()
    }

    /// Uploads the LFS objects the Hub does not have, each verified when the Hub asks.
    fn upload_lfs(&self, revision: &str, files: &[&LocalFile]) -> Result<()> {
        if files.is_empty() {
            return Ok(());
        }
        let body = json!({
            "operation": "upload",
            "transfers": ["basic"],
            "objects": files.iter().map(|f| json!({"oid": f.sha256, "size": f.size})).collect::<Vec<_>>(),
            "hash_algo": "sha256",
            "ref": {"name": revision},
        });
        let url = format!(
            "{}/{}.git/info/lfs/objects/batch",
            self.endpoint(),
            self.repo_id
        );
        let body = body.to_string();
        const LFS_JSON: &str = "application/vnd.git-lfs+json";
        let answer = self.call(
            "starting the LFS upload",
            &Call::post(&url, Body::Text(&body, LFS_JSON)).header("Accept", LFS_JSON),
        )?;
        let objects = answer["objects"]
            .as_array()
            .ok_or_else(|| self.fail("the LFS batch answer has no `objects`".into()))?;
        for file in files {
            let object = objects
                .iter()
                .find(|o| o["oid"] == file.sha256.as_str())
                .ok_or_else(|| {
                    self.fail(format!(
                        "the LFS batch answer leaves out `{}`",
                        file.path_in_repo
                    ))
                })?;
            if let Some(error) = object.get("error") {
                return Err(self.fail(format!(
                    "the Hub refused the LFS object of `{}`: {error}",
                    file.path_in_repo
                )));
            }
            let Some(upload) = object["actions"].get("upload") else {
                tracing::debug!(file = file.path_in_repo, "LFS object already on the Hub");
                continue;
            };
            let href = upload["href"]
                .as_str()
                .ok_or_else(|| self.fail("an LFS upload action has no `href`".into()))?;
            self.put_object(file, &self.action_url(href), upload)?;
            if let Some(verify) = object["actions"].get("verify") {
                let href = verify["href"]
                    .as_str()
                    .ok_or_else(|| self.fail("an LFS verify action has no `href`".into()))?;
                let href = self.action_url(href);
                let body = json!({"oid": file.sha256, "size": file.size});
                let mut call = Call::post(&href, Body::Json(&body));
                for (name, value) in action_headers(verify) {
                    call = call.header(name, value);
                }
                self.call(
                    &format!("verifying the upload of `{}`", file.path_in_repo),
                    &call,
                )?;
            }
        }
        Ok(())
    }

    /// Sends `file` to the storage `href` names, as is and without the Hub's token, within
    /// the time its size allows and at no less than the slowest rate waited for.
    fn put_object(&self, file: &LocalFile, href: &str, action: &Value) -> Result<()> {
        let step = format!("uploading `{}`", file.path_in_repo);
        let deadline = self.http.deadline(file.size);
        self.http
            .run(&step, &deadline, true, || {
                let reader = std::fs::File::open(&file.path)
                    .map_err(|e| Failure::Invalid(format!("{}: {e}", file.path.display())))?;
                let mut request = self
                    .http
                    .request("PUT", href, &deadline, false)?
                    .set("Content-Length", &file.size.to_string());
                for (name, value) in action_headers(action) {
                    request = request.set(name, value);
                }
                let pace = self.http.pace();
                let sent = request.send(pace.reader(reader));
                self.http.answer(sent, &deadline, Some(&pace), false)?;
                Ok(())
            })
            .map_err(|failure| self.failure(&step, failure))
    }

    /// One commit of every file; returns its id and page. Sent once: a commit that may have
    /// been applied is not made twice.
    fn commit(
        &self,
        revision: &str,
        message: &str,
        files: &[(&LocalFile, Upload)],
    ) -> Result<(String, String)> {
        let mut lines =
            vec![json!({"key": "header", "value": {"summary": message, "description": ""}})];
        for &(file, upload) in files {
            lines.push(if upload == Upload::Lfs {
                json!({"key": "lfsFile", "value": {
                    "path": file.path_in_repo, "algo": "sha256", "oid": file.sha256, "size": file.size
                }})
            } else {
                let content = std::fs::read(&file.path).map_err(|e| Error::io(&file.path, e))?;
                json!({"key": "file", "value": {
                    "path": file.path_in_repo,
                    "encoding": "base64",
                    "content": base64::engine::general_purpose::STANDARD.encode(content),
                }})
            });
        }
        let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let url = self.api("commit", revision);
        let answer = self.call(
            COMMIT_STEP,
            &Call::post(&url, Body::Text(&body, "application/x-ndjson")).once(),
        )?;
        match (answer["commitOid"].as_str(), answer["commitUrl"].as_str()) {
            (Some(oid), Some(url)) => Ok((oid.to_owned(), url.to_owned())),
            _ => Err(self.fail(format!(
                "the commit answer has no `commitOid` and `commitUrl`: {answer}"
            ))),
        }
    }
}

/// The headers an LFS action asks for.
fn action_headers(action: &Value) -> Vec<(&str, &str)> {
    action["header"]
        .as_object()
        .map(|headers| {
            headers
                .iter()
                .filter_map(|(name, value)| Some((name.as_str(), value.as_str()?)))
                .collect()
        })
        .unwrap_or_default()
}
