//! Where a model comes from, resolved in one place for every caller (the library, SQL's
//! `span_marker.model`, the command line's `--model`, pipeline encoders):
//!
//! - `bundled` ([`BUNDLED`]) is the small model compiled into the library, never a path (write
//!   `./bundled` for a directory of that name);
//! - an existing directory is used as is;
//! - anything else that looks like a Hugging Face id (`name` or `org/name`) is looked up in the
//!   local Hugging Face cache and, unless offline, downloaded into it (the `hub` feature).
//!
//! The cache follows the Hugging Face layout (`models--org--name/snapshots/<commit>/...`) and
//! location (`HF_HOME`, default `~/.cache/huggingface`), so models fetched by Python tools are
//! found here and the other way round. `HF_HUB_OFFLINE=1` forbids any network access,
//! `HF_ENDPOINT` names another Hub (a mirror, a proxy with a path, or a stand-in in tests) and
//! the token comes from `HF_TOKEN` or the file the Hugging Face CLI writes, as for the Python
//! tools.
//!
//! Publishing ([`publish`]) goes the other way: a folder, or a model, committed to a Hub
//! repository.
//!
//! Both talk to the Hub the same way (`http`): secrets never appear in a message or a debug
//! form (a token that an HTTP header cannot carry is refused without being shown, an address
//! with credentials is refused and shown with its password replaced), redirects are never
//! taken for an answer, and every step ends within [`HubOptions::timeout`] (two minutes by
//! default; `HF_HUB_DOWNLOAD_TIMEOUT`), plus the time a file's content takes at 64 KiB/s.

#[cfg(feature = "hub")]
pub mod dataset;
#[cfg(feature = "hub")]
mod download;
#[cfg(feature = "hub")]
mod http;
#[cfg(feature = "hub")]
pub mod publish;

use std::path::{Path, PathBuf};
use std::time::Duration;

#[cfg(feature = "hub")]
use hf_hub::Cache;

#[cfg(feature = "hub")]
pub use http::MIN_RATE;

#[cfg(feature = "hub")]
use crate::checkpoint::{PICKLE_FILE, SAFETENSORS_FILE, SAFETENSORS_INDEX_FILE};
use crate::error::{Error, Result};

/// The model name that selects the model compiled into the library
/// ([`SpanMarkerModel::bundled`](crate::SpanMarkerModel::bundled)).
pub const BUNDLED: &str = "bundled";

/// Where a named model is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// The model compiled into the library.
    Bundled,
    /// A local directory (given, or a Hugging Face cache snapshot).
    Dir(PathBuf),
}

/// Files a model directory needs, and the optional ones fetched along.
#[cfg(feature = "hub")]
const REQUIRED: [&str; 1] = ["config.json"];
#[cfg(feature = "hub")]
const OPTIONAL: [&str; 4] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "README.md",
];

/// The Hub's address when neither [`HubOptions::endpoint`] nor `HF_ENDPOINT` names another.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// How long one step of a download or a push may take when neither [`HubOptions::timeout`]
/// nor [`TIMEOUT_ENV`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The environment variable that sets the timeout, in seconds, when the options leave it
/// unset (the Python tools read it as the longest wait for each read of a download).
pub const TIMEOUT_ENV: &str = "HF_HUB_DOWNLOAD_TIMEOUT";

/// What replaces a secret in messages and debug forms.
const REDACTED: &str = "<redacted>";

/// Where and how model ids are resolved, and where models are published.
#[derive(Clone, Default)]
pub struct HubOptions {
    /// The cache directory (`HF_HUB_CACHE`, else `hub/` inside `HF_HOME`, when unset).
    pub cache_dir: Option<PathBuf>,
    /// Branch, tag or commit; `main` when unset.
    pub revision: Option<String>,
    /// Never touch the network (also set by `HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// The Hub's base URL; `HF_ENDPOINT`, else [`DEFAULT_ENDPOINT`], when unset.
    pub endpoint: Option<String>,
    /// The access token; `HF_TOKEN`, else the token file (`HF_TOKEN_PATH`, else `token` in
    /// `HF_HOME`), when unset.
    pub token: Option<Secret>,
    /// How long one step may take: a request and its repetitions, from connecting to the
    /// answer's last byte, plus, for a step that moves a file, the time its size takes at
    /// 64 KiB/s (which a transfer must keep up after its first `timeout`). [`TIMEOUT_ENV`],
    /// else [`DEFAULT_TIMEOUT`], when unset.
    pub timeout: Option<Duration>,
}

/// The address is shown with its password replaced, the token not at all.
impl std::fmt::Debug for HubOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubOptions")
            .field("cache_dir", &self.cache_dir)
            .field("revision", &self.revision)
            .field("offline", &self.offline)
            .field("endpoint", &self.endpoint.as_deref().map(redact_url))
            .field("token", &self.token)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A token, kept out of `Debug` output (and so out of logs and failed assertions).
///
/// ```
/// let token = span_marker::hub::Secret::from("hf_abc");
/// assert_eq!(format!("{token:?}"), "Secret(<redacted>)");
/// assert_eq!(token.expose(), "hf_abc");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The token itself, for the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl From<String> for Secret {
    fn from(token: String) -> Self {
        Self(token)
    }
}

impl From<&str> for Secret {
    fn from(token: &str) -> Self {
        Self(token.to_owned())
    }
}

impl HubOptions {
    /// The Hub's base URL, without a trailing `/`.
    ///
    /// ```
    /// use span_marker::hub::HubOptions;
    /// let options = HubOptions { endpoint: Some("http://127.0.0.1:8080/".into()), ..Default::default() };
    /// assert_eq!(options.endpoint(), "http://127.0.0.1:8080");
    /// ```
    pub fn endpoint(&self) -> String {
        let endpoint = self
            .endpoint
            .clone()
            .or_else(|| non_empty_env("HF_ENDPOINT"))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        endpoint.trim_end_matches('/').to_owned()
    }

    /// The access token, if any: given, `HF_TOKEN`, or the token file (each trimmed; an empty
    /// variable or file counts as none). A token given empty, or with a byte that an HTTP
    /// header cannot carry, is an error that does not show it.
    pub fn token(&self) -> Result<Option<Secret>> {
        self.checked_token().map_err(|message| Error::Setting {
            key: "token",
            message,
        })
    }

    pub(crate) fn checked_token(&self) -> std::result::Result<Option<Secret>, String> {
        let (token, source) = if let Some(given) = &self.token {
            (given.expose().trim().to_owned(), TokenSource::Given)
        } else if let Some(token) = non_empty_env("HF_TOKEN") {
            (token, TokenSource::Env)
        } else {
            let Some(path) = token_path() else {
                return Ok(None);
            };
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => {
                    tracing::debug!(path = %path.display(), error = %e, "token file not read");
                    return Ok(None);
                }
            };
            let source = TokenSource::File(path);
            let Ok(text) = String::from_utf8(bytes) else {
                return Err(format!(
                    "{source} is not UTF-8 text: log in again with `huggingface-cli login`"
                ));
            };
            let token = text.trim().to_owned();
            if token.is_empty() {
                return Ok(None);
            }
            (token, source)
        };
        check_token(&token, &source)?;
        Ok(Some(Secret(token)))
    }

    /// How long one step may take: [`timeout`](Self::timeout), else [`TIMEOUT_ENV`] (in
    /// seconds), else [`DEFAULT_TIMEOUT`]. Zero, or a variable that is not a positive number
    /// of seconds, is an error.
    ///
    /// ```
    /// use std::time::Duration;
    /// use span_marker::hub::HubOptions;
    /// let options = HubOptions { timeout: Some(Duration::from_secs(5)), ..Default::default() };
    /// assert_eq!(options.timeout()?, Duration::from_secs(5));
    /// # Ok::<(), span_marker::Error>(())
    /// ```
    pub fn timeout(&self) -> Result<Duration> {
        self.checked_timeout().map_err(|message| Error::Setting {
            key: "timeout",
            message,
        })
    }

    pub(crate) fn checked_timeout(&self) -> std::result::Result<Duration, String> {
        if let Some(timeout) = self.timeout {
            return if timeout.is_zero() || timeout > MAX_TIMEOUT {
                Err(format!(
                    "the Hub timeout must be positive and at most {}s, got {timeout:?}",
                    MAX_TIMEOUT.as_secs()
                ))
            } else {
                Ok(timeout)
            };
        }
        let Some(text) = non_empty_env(TIMEOUT_ENV) else {
            return Ok(DEFAULT_TIMEOUT);
        };
        parse_seconds(&text).map_err(|e| format!("{TIMEOUT_ENV}: {e}"))
    }
}

/// The longest Hub timeout taken: past it, deadlines would overflow.
const MAX_TIMEOUT: Duration = Duration::from_secs(1_000_000_000);

/// A positive number of seconds (fractions allowed, at most a billion): how `--timeout` and
/// `HF_HUB_DOWNLOAD_TIMEOUT` are read.
///
/// ```
/// # use std::time::Duration;
/// assert_eq!(span_marker::hub::parse_seconds("1.5"), Ok(Duration::from_millis(1500)));
/// assert!(span_marker::hub::parse_seconds("0").is_err());
/// ```
pub fn parse_seconds(text: &str) -> std::result::Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s < MAX_TIMEOUT.as_secs_f64())
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{text:?} is not a positive number of seconds"))
}

/// The token file the Hugging Face CLI writes: `HF_TOKEN_PATH`, else `token` in `HF_HOME`
/// (default `~/.cache/huggingface`).
pub fn token_path() -> Option<PathBuf> {
    if let Some(path) = non_empty_env("HF_TOKEN_PATH") {
        return Some(PathBuf::from(path));
    }
    let home = non_empty_env("HF_HOME").map(PathBuf::from).or_else(|| {
        let home = non_empty_env("HOME")?;
        Some(Path::new(&home).join(".cache").join("huggingface"))
    })?;
    Some(home.join("token"))
}

/// `url` with the password of its `user:password@` part (if any) replaced by `<redacted>`,
/// and its query and fragment (which may carry a key) too.
///
/// ```
/// # use span_marker::hub::redact_url;
/// assert_eq!(redact_url("http://me:pw@hub.example/x"), "http://me:<redacted>@hub.example/x");
/// assert_eq!(redact_url("https://hub.example"), "https://hub.example");
/// assert_eq!(redact_url("https://hub.example/hf?key=k"), "https://hub.example/hf?<redacted>");
/// ```
pub fn redact_url(url: &str) -> String {
    match url.find(['?', '#']) {
        Some(at) => format!(
            "{}{}{REDACTED}",
            redact_authority(&url[..at]),
            &url[at..=at]
        ),
        None => redact_authority(url),
    }
}

/// [`redact_url`] for the part before the query.
fn redact_authority(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        // No scheme: whatever precedes an `@` before the first `/` may be credentials.
        return match url.split('/').next().and_then(|a| a.rfind('@')) {
            Some(at) => format!("{REDACTED}{}", &url[at..]),
            None => url.to_owned(),
        };
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let user = authority[..at].split(':').next().unwrap_or("");
            let credentials = if authority[..at].contains(':') {
                format!("{user}:{REDACTED}")
            } else {
                // A lone user name may be a token (`https://hf_xxx@host`).
                REDACTED.to_owned()
            };
            format!(
                "{}{credentials}{}",
                &url[..scheme_end],
                &url[scheme_end + at..]
            )
        }
        None => url.to_owned(),
    }
}

/// Where a token came from, for messages.
enum TokenSource {
    Given,
    Env,
    File(std::path::PathBuf),
}

impl std::fmt::Display for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Given => f.write_str("the token given (`--token`, `hub_token` or the options)"),
            Self::Env => f.write_str("the token in HF_TOKEN"),
            Self::File(path) => write!(f, "the token in {}", path.display()),
        }
    }
}

/// `Ok` for a token that can be sent as a bearer token: visible ASCII only, not empty. The
/// message describes the fault by its kind and position, never by the token's text.
fn check_token(token: &str, source: &TokenSource) -> Result<(), String> {
    if token.is_empty() {
        return Err(format!(
            "{source} is empty: give a token, or none to use HF_TOKEN or the token file"
        ));
    }
    if let Some((at, byte)) = token
        .bytes()
        .enumerate()
        .find(|(_, b)| !(0x21..=0x7E).contains(b))
    {
        let kind = match byte {
            b'\n' | b'\r' => "a line break",
            b' ' | b'\t' => "a space",
            0x80.. => "a non-ASCII character",
            _ => "a control character",
        };
        return Err(format!(
            "{source} has {kind} at byte {} of {}, which an HTTP header cannot carry: check \
             how it was copied",
            at + 1,
            token.len()
        ));
    }
    Ok(())
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

#[cfg(feature = "hub")]
impl HubOptions {
    fn is_offline(&self) -> bool {
        self.offline
            || std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
                matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "1" | "true" | "yes" | "on"
                )
            })
    }

    /// The cache: `cache_dir`, else `HF_HUB_CACHE`, else `hub/` in `HF_HOME` (or its default),
    /// as the Python tools choose it.
    fn cache(&self) -> Cache {
        match (&self.cache_dir, non_empty_env("HF_HUB_CACHE")) {
            (Some(dir), _) => Cache::new(dir.clone()),
            (None, Some(dir)) => Cache::new(dir.into()),
            (None, None) => Cache::from_env(),
        }
    }

    /// The revision asked for: `main` when unset.
    fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }
}

/// Where `name_or_path` is: [`ModelSource::Bundled`] for [`BUNDLED`], else the directory of
/// [`resolve`].
///
/// ```
/// use span_marker::hub::{locate, ModelSource};
/// assert_eq!(locate("bundled", &Default::default())?, ModelSource::Bundled);
/// # Ok::<(), span_marker::Error>(())
/// ```
pub fn locate(name_or_path: &str, options: &HubOptions) -> Result<ModelSource> {
    if name_or_path == BUNDLED {
        return Ok(ModelSource::Bundled);
    }
    resolve(name_or_path, options).map(ModelSource::Dir)
}

/// The local directory holding `name_or_path`: the path itself when it is a directory, else
/// the cached snapshot of the model id (downloaded first when allowed and needed).
pub fn resolve(name_or_path: &str, options: &HubOptions) -> Result<PathBuf> {
    let path = Path::new(name_or_path);
    if path.is_dir() {
        return Ok(path.to_owned());
    }
    let hub_error = |message: String| Error::Hub {
        id: name_or_path.to_owned(),
        message,
    };
    if !is_repo_id(name_or_path) {
        return Err(hub_error(
            "not a directory, and not a Hugging Face model id (`name` or `org/name`)".into(),
        ));
    }
    cached_snapshot(name_or_path, options).map_err(hub_error)
}

/// Without the `hub` feature, model ids cannot be resolved.
#[cfg(not(feature = "hub"))]
fn cached_snapshot(_id: &str, _options: &HubOptions) -> std::result::Result<PathBuf, String> {
    Err(
        "not a directory; model ids need the `hub` feature of span-marker, which this build \
         leaves out"
            .into(),
    )
}

/// The cached snapshot of model `id`, downloaded first when allowed and needed.
#[cfg(feature = "hub")]
fn cached_snapshot(
    name_or_path: &str,
    options: &HubOptions,
) -> std::result::Result<PathBuf, String> {
    let cached = options
        .cache()
        .repo(download::RepoKind::Model.repo(name_or_path, options.revision()));
    let weights = [SAFETENSORS_FILE, SAFETENSORS_INDEX_FILE, PICKLE_FILE];
    let complete = REQUIRED.iter().all(|f| cached.get(f).is_some())
        && weights.iter().any(|f| cached.get(f).is_some());
    if !complete {
        if options.is_offline() {
            return Err(format!(
                "not found in the Hugging Face cache at {} and offline mode is on \
                 (HF_HUB_OFFLINE): download it once with network access, or pass a local directory",
                options.cache().path().display()
            ));
        }
        download::download(name_or_path, options)?;
    }
    let config = cached
        .get("config.json")
        .ok_or_else(|| "the download did not produce `config.json`".to_owned())?;
    Ok(config
        .parent()
        .expect("a cached file lives in a snapshot directory")
        .to_owned())
}

/// `Ok` for a repository id to publish to: `user/name` or `org/name`, both parts made of the
/// characters the Hub allows.
///
/// ```
/// assert!(span_marker::hub::check_repo_id("me/my-ner").is_ok());
/// assert!(span_marker::hub::check_repo_id("my-ner").is_err());
/// ```
pub fn check_repo_id(repo_id: &str) -> std::result::Result<(), String> {
    let parts: Vec<&str> = repo_id.split('/').collect();
    // Stricter than ids to download: the Hub refuses to create names that start or end with
    // `-` or `.`, or are longer than 96 characters.
    let valid = parts.len() == 2
        && parts.iter().all(|p| {
            is_repo_part(p) && !p.starts_with('-') && !p.ends_with(['.', '-']) && p.len() <= 96
        });
    if valid {
        Ok(())
    } else {
        Err("a repository id is `user/name` or `org/name` (letters, digits, `-`, `_`, `.`)".into())
    }
}

/// Whether `id` looks like a Hugging Face model id.
fn is_repo_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split('/').collect();
    (1..=2).contains(&parts.len()) && parts.iter().all(|p| is_repo_part(p))
}

/// One part of a Hub id: letters, digits, `-`, `_` and `.`, not starting with `.`.
fn is_repo_part(part: &str) -> bool {
    !part.is_empty()
        && !part.starts_with('.')
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_are_told_from_paths() {
        assert!(is_repo_id("bert-base-cased"));
        assert!(is_repo_id(
            "tomaarsen/span-marker-bert-base-fewnerd-fine-super"
        ));
        assert!(!is_repo_id("a/b/c"));
        assert!(!is_repo_id("../model"));
        assert!(!is_repo_id("/abs/path"));
        assert!(!is_repo_id("with space/x"));
    }

    #[test]
    fn repository_ids_to_publish_need_a_namespace() {
        assert!(check_repo_id("me/my-ner").is_ok());
        for bad in [
            "my-ner",
            "a/b/c",
            "me/",
            "/x",
            "me/with space",
            "me/.hidden",
            "me/x-",
        ] {
            assert!(check_repo_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_with_bytes_a_header_cannot_carry_are_described_not_shown() {
        assert!(check_token("hf_AbC123", &TokenSource::Given).is_ok());
        for (token, kind) in [
            ("hf_abc\nsecret", "a line break"),
            ("hf_abc secret", "a space"),
            ("hf_abc\u{e9}secret", "a non-ASCII character"),
            ("hf_abc\u{1}secret", "a control character"),
        ] {
            let err = check_token(token, &TokenSource::Env).unwrap_err();
            assert!(err.contains(kind) && err.contains("HF_TOKEN"), "{err}");
            assert!(!err.contains("secret") && !err.contains("hf_abc"), "{err}");
        }
        let err = check_token("", &TokenSource::Given).unwrap_err();
        assert!(err.contains("empty"), "{err}");
    }

    #[test]
    fn bundled_is_a_name_not_a_path() {
        assert_eq!(
            locate(BUNDLED, &HubOptions::default()).unwrap(),
            ModelSource::Bundled
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap();
        assert_eq!(
            locate(path, &HubOptions::default()).unwrap(),
            ModelSource::Dir(dir.path().to_owned())
        );
    }

    #[cfg(feature = "hub")]
    #[test]
    fn offline_lookup_of_an_uncached_id_says_where_it_looked() {
        let cache = tempfile::tempdir().unwrap();
        let options = HubOptions {
            cache_dir: Some(cache.path().to_owned()),
            offline: true,
            ..Default::default()
        };
        let err = resolve("org/absent-model", &options)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("org/absent-model") && err.contains("offline"),
            "{err}"
        );
        assert!(err.contains(&cache.path().display().to_string()), "{err}");
    }
}
