//! A model's files fetched from a Hub into the local cache, by the protocol and into the layout
//! of the Python tools, so that each finds what the other fetched (and offline mode finds both):
//!
//! - `HEAD /{repo}/resolve/{revision}/{path}` says the commit (`X-Repo-Commit`), the content's
//!   id (`X-Linked-Etag` for an LFS file, else `ETag`) and its size (`X-Linked-Size`, else
//!   `Content-Length`); redirects within the Hub (a renamed repository) are followed, one to
//!   another host (the Hub's CDN for LFS files) says where the content is;
//! - the content is fetched from there (without the token on another host), checked against
//!   its size and, for LFS files, its SHA-256, and stored once as `blobs/<etag>`;
//! - `snapshots/<commit>/<path>` links to the blob, and `refs/<revision>` names the commit,
//!   written last, so that a failed download never changes what a revision resolves to.
//!
//! The first file's commit pins the others, so that every file comes from the same commit even
//! when the branch moves meanwhile. Each step is bounded in time (see the `http` module).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use hf_hub::{Repo, RepoType};

use super::http::{encode_segment, origin_of, Failure, Http};
use super::{HubOptions, OPTIONAL, REQUIRED};
use crate::checkpoint::{PICKLE_FILE, SAFETENSORS_FILE, SAFETENSORS_INDEX_FILE};

/// How many redirects one step follows.
const MAX_REDIRECTS: usize = 5;

/// Downloads what a model needs that the cache lacks: `config.json`, the optional files, and
/// the weights (`model.safetensors`, else its shards, else `pytorch_model.bin`).
pub(super) fn download(id: &str, options: &HubOptions) -> Result<(), String> {
    let mut fetcher = Fetcher::new(id, RepoKind::Model, options.revision(), options)?;
    for file in REQUIRED {
        if fetcher.fetch(file)?.is_none() {
            return Err(format!("the repository has no `{file}`"));
        }
    }
    for file in OPTIONAL {
        fetcher.fetch(file)?;
    }
    if fetcher.fetch(SAFETENSORS_FILE)?.is_none() {
        if let Some(index) = fetcher.fetch(SAFETENSORS_INDEX_FILE)? {
            for shard in shards(&index)? {
                if fetcher.fetch(&shard)?.is_none() {
                    return Err(format!(
                        "`{SAFETENSORS_INDEX_FILE}` names `{shard}`, which the repository lacks"
                    ));
                }
            }
        } else if fetcher.fetch(PICKLE_FILE)?.is_none() {
            return Err(format!(
                "the repository has no weights (`{SAFETENSORS_FILE}`, `{SAFETENSORS_INDEX_FILE}` \
                 or `{PICKLE_FILE}`)"
            ));
        }
    }
    fetcher.finish()
}

/// The shard files a safetensors index names.
fn shards(index: &Path) -> Result<std::collections::BTreeSet<String>, String> {
    let text = std::fs::read_to_string(index).map_err(|e| format!("{}: {e}", index.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", index.display()))?;
    Ok(value["weight_map"]
        .as_object()
        .ok_or("the safetensors index has no `weight_map`")?
        .values()
        .filter_map(serde_json::Value::as_str)
        .map(str::to_owned)
        .collect())
}

/// What the Hub says of one file.
struct Remote {
    commit: String,
    etag: String,
    size: Option<u64>,
    /// Stored through LFS: the etag is the content's SHA-256.
    lfs: bool,
    /// Where the content is.
    url: String,
}

/// What a repository holds: a model or a dataset (their ids are separate namespaces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RepoKind {
    Model,
    Dataset,
}

impl RepoKind {
    /// The repository `id` at `revision`, as the cache names it (`datasets--org--name`).
    pub(super) fn repo(self, id: &str, revision: &str) -> Repo {
        let kind = match self {
            RepoKind::Model => RepoType::Model,
            RepoKind::Dataset => RepoType::Dataset,
        };
        Repo::with_revision(id.to_owned(), kind, revision.to_owned())
    }

    /// Where the repository's files are downloaded from, after the Hub's address.
    fn resolve_prefix(self) -> &'static str {
        match self {
            RepoKind::Model => "",
            RepoKind::Dataset => "datasets/",
        }
    }
}

/// Downloads of one repository's files at one revision into the cache.
pub(super) struct Fetcher<'a> {
    http: Http,
    id: &'a str,
    kind: RepoKind,
    /// `models--org--name` (or `datasets--...`) in the cache.
    dir: PathBuf,
    revision: String,
    /// The commit the first file came from, which pins the others.
    commit: Option<String>,
}

impl<'a> Fetcher<'a> {
    pub(super) fn new(
        id: &'a str,
        kind: RepoKind,
        revision: &str,
        options: &HubOptions,
    ) -> Result<Self, String> {
        let http = Http::new(options)?;
        check_relative(revision).map_err(|e| format!("the revision {revision:?} {e}"))?;
        let dir = options
            .cache()
            .path()
            .join(kind.repo(id, revision).folder_name());
        Ok(Self {
            http,
            id,
            kind,
            dir,
            revision: revision.to_owned(),
            commit: None,
        })
    }

    /// The HTTP session, for the caller's own API calls.
    pub(super) fn http(&self) -> &Http {
        &self.http
    }

    /// Files come from `commit` (known from the API), whatever the revision names meanwhile.
    pub(super) fn pin(&mut self, commit: String) {
        self.commit = Some(commit);
    }

    /// `file` in the snapshot, downloaded when missing; `None` when the repository has none.
    pub(super) fn fetch(&mut self, file: &str) -> Result<Option<PathBuf>, String> {
        check_relative(file).map_err(|e| format!("the file name {file:?} {e}"))?;
        let Some(remote) = self.remote(file)? else {
            return Ok(None);
        };
        let commit = self.commit.get_or_insert_with(|| remote.commit.clone());
        let pointer = self.dir.join("snapshots").join(&*commit).join(file);
        if pointer.exists() {
            return Ok(Some(pointer));
        }
        let blob = self.dir.join("blobs").join(&remote.etag);
        if !blob.is_file() {
            self.download_blob(file, &remote, &blob)?;
        }
        link(&blob, &pointer, file).map_err(|e| format!("{}: {e}", pointer.display()))?;
        Ok(Some(pointer))
    }

    /// Records the commit as the revision's (also when the revision is the commit itself,
    /// which the Python tools do not need but `hf_hub`'s cache lookup does).
    pub(super) fn finish(self) -> Result<(), String> {
        let Some(commit) = self.commit else {
            return Ok(());
        };
        let path = self.dir.join("refs").join(&self.revision);
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder).map_err(|e| format!("{}: {e}", folder.display()))?;
        }
        crate::atomic::write(&path, commit.as_bytes()).map_err(|e| e.to_string())
    }

    /// A failure of `step` as a message, with what to do about the usual ones.
    pub(super) fn describe(&self, step: &str, failure: &Failure) -> String {
        let hint = match (failure.status(), failure.code()) {
            (_, Some("RevisionNotFound")) => {
                format!("; the revision `{}` does not exist", self.revision)
            }
            (Some(401 | 403), _) | (_, Some("RepoNotFound")) => format!(
                "; the repository {} does not exist, or is private or gated and the token{} may \
                 not read it",
                self.id,
                if self.http.has_token() {
                    ""
                } else {
                    " (none was found: HF_TOKEN, or `huggingface-cli login`)"
                }
            ),
            _ => String::new(),
        };
        self.http.scrub(&format!("{step}: {failure}{hint}"))
    }

    /// What the Hub says of `file`; `None` when the revision has no such file.
    fn remote(&self, file: &str) -> Result<Option<Remote>, String> {
        let revision = self.commit.as_deref().unwrap_or(&self.revision);
        let mut url = format!(
            "{}/{}{}/resolve/{}/{}",
            self.http.endpoint().base(),
            self.kind.resolve_prefix(),
            self.id,
            encode_segment(revision),
            file.split('/')
                .map(encode_segment)
                .collect::<Vec<_>>()
                .join("/")
        );
        let step = format!("asking the Hub about `{file}`");
        let deadline = self.http.deadline(0);
        for _ in 0..=MAX_REDIRECTS {
            let answer = self.http.run(&step, &deadline, true, || {
                let request = self
                    .http
                    .request("HEAD", &url, &deadline, self.http.is_on_hub(&url))?
                    .set("Accept-Encoding", "identity");
                self.http.answer(request.call(), &deadline, None, true)
            });
            let response = match answer {
                Ok(response) => response,
                Err(failure)
                    if failure.status() == Some(404)
                        && !matches!(failure.code(), Some("RepoNotFound" | "RevisionNotFound")) =>
                {
                    return Ok(None);
                }
                Err(failure) => return Err(self.describe(&step, &failure)),
            };
            let redirect = (300..400).contains(&response.status());
            let location = response.header("Location").map(str::to_owned);
            match location {
                // A redirect within the Hub (a renamed repository): asked again there.
                Some(location) if redirect && location.starts_with('/') => {
                    if !location.starts_with("//") {
                        url = format!("{}{location}", self.http.endpoint().origin());
                        continue;
                    }
                    return Err(self.describe(
                        &step,
                        &Failure::Invalid(format!("a redirect to {location:?}")),
                    ));
                }
                _ => {}
            }
            let content_url = match (redirect, response.header("Location")) {
                (false, _) => url.clone(),
                (true, Some(location)) => resolve_location(&url, location),
                (true, None) => {
                    return Err(self.describe(
                        &step,
                        &Failure::Invalid("a redirect without a `Location`".into()),
                    ))
                }
            };
            return self
                .read_remote(&response, content_url)
                .map(Some)
                .map_err(|message| self.describe(&step, &Failure::Invalid(message)));
        }
        Err(self.describe(
            &step,
            &Failure::Invalid(format!("more than {MAX_REDIRECTS} redirects")),
        ))
    }

    /// The commit, content id and size from an answer's headers, each checked.
    fn read_remote(&self, response: &ureq::Response, url: String) -> Result<Remote, String> {
        let missing = |header: &str| {
            format!(
                "the answer has no `{header}` header (is {} a Hugging Face Hub?)",
                self.http.endpoint().base()
            )
        };
        let commit = response
            .header("X-Repo-Commit")
            .ok_or_else(|| missing("X-Repo-Commit"))?
            .trim()
            .to_owned();
        if commit.is_empty()
            || commit.len() > 128
            || !commit.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(format!("the commit id {commit:?} is not one"));
        }
        let linked = response.header("X-Linked-Etag");
        let etag = linked
            .or_else(|| response.header("ETag"))
            .ok_or_else(|| missing("ETag"))?;
        let etag = etag
            .trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .to_owned();
        let safe = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
        if etag.is_empty() || etag.starts_with('.') || etag.len() > 256 || !etag.bytes().all(safe) {
            return Err(format!("the content id (ETag) {etag:?} cannot name a file"));
        }
        let size = response
            .header("X-Linked-Size")
            .or_else(|| response.header("Content-Length"))
            .map(|s| {
                s.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("the size {s:?} is not a number"))
            })
            .transpose()?;
        Ok(Remote {
            commit,
            lfs: linked.is_some()
                && etag.len() == 64
                && etag.bytes().all(|b| b.is_ascii_hexdigit()),
            etag,
            size,
            url,
        })
    }

    /// The content of `file` into `blob`, through a temporary file in the same folder.
    fn download_blob(&self, file: &str, remote: &Remote, blob: &Path) -> Result<(), String> {
        let folder = blob.parent().expect("a blob lives in `blobs/`");
        std::fs::create_dir_all(folder).map_err(|e| format!("{}: {e}", folder.display()))?;
        let step = format!("downloading `{file}`");
        let deadline = self.http.deadline(remote.size.unwrap_or(0));
        let progress = Progress::new(file, remote.size);
        self.http
            .run(&step, &deadline, true, || {
                let mut url = remote.url.clone();
                let mut redirects = 0;
                let response = loop {
                    let request = self
                        .http
                        .request("GET", &url, &deadline, self.http.is_on_hub(&url))?
                        .set("Accept-Encoding", "identity");
                    let response = self.http.answer(request.call(), &deadline, None, true)?;
                    if !(300..400).contains(&response.status()) {
                        break response;
                    }
                    let location = response.header("Location").unwrap_or("");
                    redirects += 1;
                    if redirects > MAX_REDIRECTS || location.is_empty() {
                        return Err(Failure::Redirect {
                            status: response.status(),
                            location: location.to_owned(),
                        });
                    }
                    url = resolve_location(&url, location);
                };
                let local =
                    |e: std::io::Error| Failure::Invalid(format!("{}: {e}", folder.display()));
                let mut temp =
                    crate::atomic::temp_in(folder, &format!("{}.", remote.etag), ".incomplete")
                        .map_err(local)?;
                let pace = self.http.pace();
                let mut reader = pace.reader(response.into_reader());
                let mut hasher = Sha256::new();
                let mut buffer = vec![0u8; 1 << 16];
                let mut size = 0u64;
                progress.start();
                loop {
                    let read = reader
                        .read(&mut buffer)
                        .map_err(|e| self.http.body_failure(e, &url, &deadline, Some(&pace)))?;
                    if read == 0 {
                        break;
                    }
                    temp.write_all(&buffer[..read]).map_err(local)?;
                    if remote.lfs {
                        hasher.update(&buffer[..read]);
                    }
                    size += read as u64;
                    progress.advance(read);
                }
                if let Some(expected) = remote.size.filter(|&s| s != size) {
                    return Err(Failure::Transport {
                        kind: ureq::ErrorKind::Io,
                        peer: origin_of(&url),
                        text: format!("the content ended after {size} of {expected} bytes"),
                    });
                }
                if remote.lfs && crate::fingerprint::hex(&hasher.finalize()) != remote.etag {
                    return Err(Failure::Invalid(
                        "the content's SHA-256 is not the one the Hub gave".into(),
                    ));
                }
                temp.as_file().sync_all().map_err(local)?;
                temp.persist(blob).map_err(|e| local(e.error))?;
                Ok(())
            })
            .map_err(|failure| self.describe(&step, &failure))?;
        progress.finish();
        Ok(())
    }
}

/// `location` (absolute, or a path) as an absolute URL from `url`'s origin.
fn resolve_location(url: &str, location: &str) -> String {
    if location.contains("://") {
        location.to_owned()
    } else if let Some(rest) = location.strip_prefix("//") {
        let scheme = url.split("://").next().unwrap_or("https");
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{}{location}", origin_of(url))
    } else {
        let base = url.rsplit_once('/').map_or(url, |(base, _)| base);
        format!("{base}/{location}")
    }
}

/// `Ok` for a relative path of plain parts (no `..`, no leading `/`, no backslash), which is
/// what file names and revisions must be to become paths in the cache.
pub(super) fn check_relative(path: &str) -> Result<(), &'static str> {
    let plain = !path.is_empty()
        && !path.contains('\\')
        && !path.contains('\0')
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..");
    if plain {
        Ok(())
    } else {
        Err("is not a relative path of plain names, which the cache needs")
    }
}

/// Points `pointer` at `blob` (a relative symbolic link, as the Python tools make; a copy
/// where links cannot be made), replacing it atomically.
fn link(blob: &Path, pointer: &Path, file: &str) -> std::io::Result<()> {
    let folder = pointer.parent().expect("a pointer lives in a snapshot");
    std::fs::create_dir_all(folder)?;
    let temp = tempfile::Builder::new()
        .prefix(".link")
        .tempfile_in(folder)?
        .into_temp_path();
    let temp_path = temp.to_path_buf();
    // The name is taken for the link; the placeholder goes first.
    temp.close()?;
    #[cfg(unix)]
    {
        let depth = file.split('/').count();
        let mut target = PathBuf::new();
        for _ in 0..=depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(blob.file_name().expect("a blob has a name"));
        std::os::unix::fs::symlink(&target, &temp_path)?;
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        std::fs::copy(blob, &temp_path)?;
    }
    std::fs::rename(&temp_path, pointer).inspect_err(|_| {
        let _ = std::fs::remove_file(&temp_path);
    })
}

/// A download's progress on the terminal (with the `progress` feature).
struct Progress {
    #[cfg(feature = "progress")]
    bar: indicatif::ProgressBar,
}

impl Progress {
    fn new(file: &str, size: Option<u64>) -> Self {
        #[cfg(not(feature = "progress"))]
        let _ = (file, size);
        Self {
            #[cfg(feature = "progress")]
            bar: {
                let bar = indicatif::ProgressBar::new(size.unwrap_or(0));
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{msg} {bar:30} {bytes}/{total_bytes} [{elapsed_precise}<{eta_precise}]",
                    )
                    .expect("a valid template"),
                );
                bar.set_message(file.to_owned());
                bar
            },
        }
    }

    /// A new attempt starts from zero.
    fn start(&self) {
        #[cfg(feature = "progress")]
        self.bar.set_position(0);
    }

    fn advance(&self, bytes: usize) {
        #[cfg(feature = "progress")]
        self.bar.inc(bytes as u64);
        #[cfg(not(feature = "progress"))]
        let _ = bytes;
    }

    fn finish(&self) {
        #[cfg(feature = "progress")]
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_request() {
        let url = "http://127.0.0.1:8/a/resolve/main/config.json";
        assert_eq!(
            resolve_location(url, "/b/resolve/main/config.json"),
            "http://127.0.0.1:8/b/resolve/main/config.json"
        );
        assert_eq!(
            resolve_location(url, "https://cdn.example/x?sig=1"),
            "https://cdn.example/x?sig=1"
        );
        assert_eq!(
            resolve_location(url, "//cdn.example/x"),
            "http://cdn.example/x"
        );
        assert_eq!(
            resolve_location(url, "other.json"),
            "http://127.0.0.1:8/a/resolve/main/other.json"
        );
    }

    #[test]
    fn names_from_the_hub_stay_inside_the_cache() {
        assert!(check_relative("config.json").is_ok());
        assert!(check_relative("refs/pr/1").is_ok());
        for bad in ["", "../x", "a/../../x", "/etc/passwd", "a//b", "a\\b", "."] {
            assert!(check_relative(bad).is_err(), "{bad}");
        }
    }
}
