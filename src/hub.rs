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
//! found here and the other way round. `HF_HUB_OFFLINE=1` forbids any network access.

use std::path::{Path, PathBuf};

#[cfg(feature = "hub")]
use hf_hub::{Cache, Repo, RepoType};

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

/// Where and how model ids are resolved.
#[derive(Debug, Clone, Default)]
pub struct HubOptions {
    /// The cache directory (`hub/` inside `HF_HOME` when unset).
    pub cache_dir: Option<PathBuf>,
    /// Branch, tag or commit; `main` when unset.
    pub revision: Option<String>,
    /// Never touch the network (also set by `HF_HUB_OFFLINE=1`).
    pub offline: bool,
}

#[cfg(feature = "hub")]
impl HubOptions {
    fn is_offline(&self) -> bool {
        self.offline
            || std::env::var("HF_HUB_OFFLINE")
                .is_ok_and(|v| matches!(v.trim(), "1" | "true" | "TRUE" | "yes" | "ON" | "on"))
    }

    fn cache(&self) -> Cache {
        match &self.cache_dir {
            Some(dir) => Cache::new(dir.clone()),
            None => Cache::from_env(),
        }
    }

    fn repo(&self, id: &str) -> Repo {
        match &self.revision {
            Some(revision) => Repo::with_revision(id.to_owned(), RepoType::Model, revision.clone()),
            None => Repo::model(id.to_owned()),
        }
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
    let cached = options.cache().repo(options.repo(name_or_path));
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
        download(name_or_path, options)?;
    }
    let config = cached
        .get("config.json")
        .ok_or_else(|| "the download did not produce `config.json`".to_owned())?;
    Ok(config
        .parent()
        .expect("a cached file lives in a snapshot directory")
        .to_owned())
}

/// Whether `id` looks like a Hugging Face model id.
fn is_repo_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split('/').collect();
    (1..=2).contains(&parts.len())
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
}

#[cfg(feature = "hub")]
fn download(id: &str, options: &HubOptions) -> std::result::Result<(), String> {
    let mut builder = hf_hub::api::sync::ApiBuilder::from_env().with_progress(true);
    if let Some(dir) = &options.cache_dir {
        builder = builder.with_cache_dir(dir.clone());
    }
    let api = builder.build().map_err(|e| e.to_string())?;
    let repo = api.repo(options.repo(id));
    for file in REQUIRED {
        repo.get(file)
            .map_err(|e| format!("downloading `{file}`: {e}"))?;
    }
    for file in OPTIONAL {
        if let Err(e) = repo.get(file) {
            tracing::debug!(file, error = %e, "optional file not downloaded");
        }
    }
    if repo.get(SAFETENSORS_FILE).is_ok() {
        Ok(())
    } else if let Ok(index) = repo.get(SAFETENSORS_INDEX_FILE) {
        download_shards(&repo, &index)
    } else {
        repo.get(PICKLE_FILE)
            .map(drop)
            .map_err(|e| format!("no weights (`{SAFETENSORS_FILE}` or `{PICKLE_FILE}`): {e}"))
    }
}

#[cfg(feature = "hub")]
fn download_shards(
    repo: &hf_hub::api::sync::ApiRepo,
    index: &Path,
) -> std::result::Result<(), String> {
    let text = std::fs::read_to_string(index).map_err(|e| e.to_string())?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let shards: std::collections::BTreeSet<&str> = value["weight_map"]
        .as_object()
        .ok_or("the safetensors index has no `weight_map`")?
        .values()
        .filter_map(serde_json::Value::as_str)
        .collect();
    for shard in shards {
        repo.get(shard)
            .map_err(|e| format!("downloading `{shard}`: {e}"))?;
    }
    Ok(())
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
