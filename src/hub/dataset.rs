//! A split of a Hub dataset as Parquet files in the local cache, found the way the Hub's own
//! viewer and `datasets` find them:
//!
//! - the revision's Parquet files (`data/train-00000-of-00001.parquet`, `{config}/test-*.parquet`,
//!   `{config}/validation/*.parquet`, ...), a file belonging to the split whose name appears in
//!   its path as a word (with the Hub's synonyms: `dev`/`valid`/`val` for `validation`, ...);
//! - else, for a dataset kept in another form (a loading script, CSV or JSON files), the
//!   Parquet conversion the Hub keeps on the `refs/convert/parquet` branch
//!   (`{config}/{split}/0000.parquet`).
//!
//! The revision is resolved to its commit once and every file comes from that commit. Files
//! are downloaded into the Python tools' cache layout (`datasets--org--name`), once; offline
//! (`HF_HUB_OFFLINE=1`) the split is found in the cache alone.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::download::{check_relative, Fetcher, RepoKind};
use super::http::{encode_segment, Call, Failure};
use super::HubOptions;
use crate::error::{Error, Result};

/// The branch where the Hub keeps its Parquet conversion of every dataset.
pub const CONVERTED_BRANCH: &str = "refs/convert/parquet";

/// How many pages of a file listing are read at most (the Hub pages by 1,000 files).
const MAX_PAGES: usize = 1000;

/// Which part of which dataset: the `(id, config, split)` of `load_dataset(id, config,
/// split=split)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetRef {
    /// `name` or `org/name`.
    pub id: String,
    /// The configuration (subset); `None` when the dataset has one.
    pub config: Option<String>,
    /// `train`, `validation`, `test` or any other split name.
    pub split: String,
}

impl DatasetRef {
    pub fn new(id: impl Into<String>, config: Option<String>, split: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            config,
            split: split.into(),
        }
    }

    /// The error for this split.
    fn error(&self, message: impl Into<String>) -> Error {
        Error::Dataset {
            dataset: self.to_string(),
            message: message.into(),
        }
    }
}

/// `owner/name` (config `c`) split `train`, as errors and logs name it.
impl std::fmt::Display for DatasetRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.id)?;
        if let Some(config) = &self.config {
            write!(f, " config {config:?}")?;
        }
        write!(f, " split {:?}", self.split)
    }
}

/// A dataset split's Parquet files in the local cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetSplit {
    /// The commit they come from.
    pub commit: String,
    /// Where in the repository they are, in order.
    pub paths: Vec<String>,
    /// The files, in the same order: shards by their number.
    pub files: Vec<PathBuf>,
}

/// The Parquet files of `dataset` at `options.revision` (`main` when unset), downloaded into
/// the cache when missing (unless offline).
///
/// Errors name the dataset and say what is missing: the repository (or the token to read it),
/// the revision, any Parquet files, the config (with the ones there are) or the split (with
/// the ones there are).
pub fn dataset_split(dataset: &DatasetRef, options: &HubOptions) -> Result<DatasetSplit> {
    if !super::is_repo_id(&dataset.id) {
        return Err(dataset.error("not a Hugging Face dataset id (`name` or `org/name`)"));
    }
    if dataset.split.is_empty() || dataset.config.as_deref() == Some("") {
        return Err(dataset.error("the split and the config may not be empty"));
    }
    let revision = options.revision();
    check_relative(revision)
        .map_err(|e| dataset.error(format!("the revision {revision:?} {e}")))?;
    if options.is_offline() {
        return cached_split(dataset, revision, options);
    }
    let main = Fetcher::new(&dataset.id, RepoKind::Dataset, revision, options)
        .map_err(|e| dataset.error(e))?;
    let (commit, paths) = listing(&main, dataset, revision)?
        .ok_or_else(|| dataset.error(format!("the dataset has no revision {revision:?}")))?;
    let (mut fetcher, commit, chosen) = match choose(&paths, dataset, false) {
        Ok(chosen) => (main, commit, chosen),
        Err(Choice::NoParquet) if revision != "main" => {
            return Err(dataset.error(format!(
                "the revision {revision:?} has no Parquet files (the Hub's Parquet conversion, \
                 `{CONVERTED_BRANCH}`, is of `main` only)"
            )))
        }
        Err(Choice::NoParquet) => {
            let converted = Fetcher::new(&dataset.id, RepoKind::Dataset, CONVERTED_BRANCH, options)
                .map_err(|e| dataset.error(e))?;
            let (commit, paths) = match listing(&converted, dataset, CONVERTED_BRANCH)? {
                Some(found) => found,
                None => {
                    return Err(dataset.error(format!(
                        "the revision {revision:?} has no Parquet files and the dataset has no \
                         Parquet conversion (`{CONVERTED_BRANCH}`): a dataset made by a loading \
                         script must be converted to Parquet first"
                    )))
                }
            };
            let chosen = choose(&paths, dataset, true).map_err(|e| e.into_error(dataset))?;
            (converted, commit, chosen)
        }
        Err(other) => return Err(other.into_error(dataset)),
    };
    fetcher.pin(commit.clone());
    let mut files = Vec::with_capacity(chosen.len());
    for path in &chosen {
        let file = fetcher
            .fetch(path)
            .map_err(|e| dataset.error(e))?
            .ok_or_else(|| {
                dataset.error(format!("the Hub listed `{path}` but does not serve it"))
            })?;
        files.push(file);
    }
    fetcher.finish().map_err(|e| dataset.error(e))?;
    Ok(DatasetSplit {
        commit,
        paths: chosen,
        files,
    })
}

/// The commit `revision` names and the paths of its files; `None` when the dataset has no
/// such revision.
fn listing(
    fetcher: &Fetcher<'_>,
    dataset: &DatasetRef,
    revision: &str,
) -> Result<Option<(String, Vec<String>)>> {
    let http = fetcher.http();
    let base = http.endpoint().base();
    let fail = |step: &str, failure: Failure| dataset.error(fetcher.describe(step, &failure));
    let step = format!("asking the Hub for revision {revision:?}");
    let url = format!(
        "{base}/api/datasets/{}/revision/{}",
        dataset.id,
        encode_segment(revision)
    );
    let info = match http.call(&step, &Call::get(&url)) {
        Ok(info) => info,
        Err(failure) if failure.code() == Some("RevisionNotFound") => return Ok(None),
        Err(failure) => return Err(fail(&step, failure)),
    };
    let commit = info["sha"]
        .as_str()
        .filter(|sha| is_commit(sha))
        .ok_or_else(|| dataset.error(format!("{step}: the answer has no commit (`sha`)")))?
        .to_owned();
    let step = format!("listing the files of commit {commit}");
    let mut url = Some(format!(
        "{base}/api/datasets/{}/tree/{commit}?recursive=true",
        dataset.id
    ));
    let mut paths = Vec::new();
    for _ in 0..MAX_PAGES {
        let Some(page) = url.take() else {
            break;
        };
        let (entries, next) = http
            .call_page(&step, &Call::get(&page))
            .map_err(|f| fail(&step, f))?;
        let entries = entries
            .as_array()
            .ok_or_else(|| dataset.error(format!("{step}: the answer is not a list")))?;
        paths.extend(
            entries
                .iter()
                .filter(|e| e["type"] == "file")
                .filter_map(|e| e["path"].as_str().map(str::to_owned)),
        );
        // The token goes to the Hub's host only.
        if let Some(next) = next.as_deref().filter(|next| !http.is_on_hub(next)) {
            return Err(dataset.error(format!(
                "{step}: the next page is on another host ({})",
                http.scrub(&super::redact_url(next))
            )));
        }
        url = next;
    }
    if url.is_some() {
        return Err(dataset.error(format!("{step}: more than {MAX_PAGES} pages")));
    }
    Ok(Some((commit, paths)))
}

/// The split found in the cache alone: the revision's commit (from `refs/`), then its
/// snapshot's files.
fn cached_split(
    dataset: &DatasetRef,
    revision: &str,
    options: &HubOptions,
) -> Result<DatasetSplit> {
    let cache = options.cache();
    let mut last = Choice::NoParquet;
    // The conversion is of the default branch's data.
    let tries: &[(&str, bool)] = if revision == "main" {
        &[("main", false), (CONVERTED_BRANCH, true)]
    } else {
        &[(revision, false)]
    };
    for &(revision, converted) in tries {
        let repo = RepoKind::Dataset.repo(&dataset.id, revision);
        let dir = cache.path().join(repo.folder_name());
        let commit = match std::fs::read_to_string(dir.join("refs").join(revision)) {
            Ok(commit) if is_commit(commit.trim()) => commit.trim().to_owned(),
            Ok(_) => continue,
            // A commit id asked for by itself has no ref.
            Err(_) if dir.join("snapshots").join(revision).is_dir() => revision.to_owned(),
            Err(_) => continue,
        };
        let snapshot = dir.join("snapshots").join(&commit);
        let mut paths = Vec::new();
        list_files(&snapshot, "", &mut paths).map_err(|e| dataset.error(e))?;
        match choose(&paths, dataset, converted) {
            Ok(chosen) => {
                let files = chosen.iter().map(|p| snapshot.join(p)).collect();
                return Ok(DatasetSplit {
                    commit,
                    paths: chosen,
                    files,
                });
            }
            Err(choice) => last = choice,
        }
    }
    let found = match last {
        Choice::NoParquet => "it is not there".to_owned(),
        other => format!("what is there: {}", other.message()),
    };
    Err(dataset.error(format!(
        "offline mode is on (HF_HUB_OFFLINE) and the Hugging Face cache ({}) lacks it ({found}): \
         read it once with network access",
        cache.path().display()
    )))
}

/// The files under `dir`, as `/`-separated paths after `prefix`.
fn list_files(dir: &Path, prefix: &str, out: &mut Vec<String>) -> std::result::Result<(), String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = format!("{prefix}{name}");
        // Snapshots hold folders and links to blobs; a link is never followed as a folder.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            list_files(&entry.path(), &format!("{path}/"), out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// A commit id as the Hub gives them: hexadecimal (or alphanumeric), never a path.
fn is_commit(text: &str) -> bool {
    !text.is_empty() && text.len() <= 128 && text.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Why no files were chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Choice {
    NoParquet,
    /// The config is not there; the ones that are.
    NoConfig(Vec<String>),
    /// No config was given and there are several.
    SeveralConfigs(Vec<String>),
    /// The split is not there; the ones that are.
    NoSplit(Vec<String>),
}

impl Choice {
    fn message(&self) -> String {
        let list = |names: &[String]| names.join(", ");
        match self {
            Choice::NoParquet => "the dataset has no Parquet files".into(),
            Choice::NoConfig(found) => format!("no such config; the configs are: {}", list(found)),
            Choice::SeveralConfigs(found) => {
                format!(
                    "the dataset has several configs: name one of {}",
                    list(found)
                )
            }
            Choice::NoSplit(found) if found.is_empty() => {
                "no such split, and no file names a split".into()
            }
            Choice::NoSplit(found) => format!("no such split; the splits are: {}", list(found)),
        }
    }

    fn into_error(self, dataset: &DatasetRef) -> Error {
        dataset.error(self.message())
    }
}

/// Other names the Hub's data-file patterns accept for the usual splits.
fn split_words(split: &str) -> Vec<&str> {
    match split {
        "train" => vec!["train", "training"],
        "validation" => vec!["validation", "valid", "dev", "val"],
        "test" => vec!["test", "testing", "eval", "evaluation"],
        other => vec![other],
    }
}

/// The split names the usual words in `path` stand for.
fn splits_named(path: &str) -> Vec<&'static str> {
    let words = words(path);
    ["train", "validation", "test"]
        .into_iter()
        .filter(|split| split_words(split).iter().any(|w| words.contains(w)))
        .collect()
}

/// The split names a path gives exactly: its file name without `.parquet` and a shard suffix
/// (`-00000-of-00002`), and its folder.
fn exact_split(path: &str) -> Vec<String> {
    let (folder, file) = path.rsplit_once('/').map_or(("", path), |(f, n)| (f, n));
    let stem = file.strip_suffix(".parquet").unwrap_or(file);
    let stem = match stem.rsplit_once("-of-") {
        Some((head, total)) if !total.is_empty() && total.bytes().all(|b| b.is_ascii_digit()) => {
            match head.rsplit_once('-') {
                Some((name, shard)) if shard.bytes().all(|b| b.is_ascii_digit()) => name,
                _ => stem,
            }
        }
        _ => stem,
    };
    let mut names = vec![stem.to_owned()];
    if let Some(last) = folder.rsplit('/').next().filter(|f| !f.is_empty()) {
        names.push(last.to_owned());
    }
    names
}

/// The words of a path: its parts split at separators and digits.
fn words(path: &str) -> Vec<&str> {
    path.split(|c: char| matches!(c, '/' | '-' | '_' | '.' | ' ') || c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .collect()
}

/// The split's files among `paths` (sorted, so shards come in order): the revision's own
/// Parquet files, or the conversion branch's layout (`{config}/{split}/NNNN.parquet`).
fn choose(
    paths: &[String],
    dataset: &DatasetRef,
    converted: bool,
) -> std::result::Result<Vec<String>, Choice> {
    let mut parquet: Vec<&str> = paths
        .iter()
        .map(String::as_str)
        .filter(|p| p.ends_with(".parquet"))
        .collect();
    parquet.sort_unstable();
    if parquet.is_empty() {
        return Err(Choice::NoParquet);
    }
    // A config is a top-level folder (other than the plain `data/`); files outside folders
    // belong to the `default` config.
    let config_of = |path: &str| match path.split_once('/') {
        Some((folder, _)) if folder != "data" || converted => folder.to_owned(),
        _ => "default".to_owned(),
    };
    let mut configs: Vec<String> = parquet.iter().map(|p| config_of(p)).collect();
    configs.sort_unstable();
    configs.dedup();
    let config = match &dataset.config {
        Some(config) if configs.contains(config) => config.clone(),
        Some(_) => return Err(Choice::NoConfig(configs)),
        None if configs.len() == 1 => configs[0].clone(),
        None if configs.iter().any(|c| c == "default") => "default".into(),
        None => return Err(Choice::SeveralConfigs(configs)),
    };
    let in_config: Vec<&str> = parquet
        .into_iter()
        .filter(|p| config_of(p) == config)
        .collect();
    let within = |path: &'_ str| -> String {
        if config == "default" && !converted {
            path.to_owned()
        } else {
            path.split_once('/')
                .map_or(path, |(_, rest)| rest)
                .to_owned()
        }
    };
    let chosen: Vec<String> = if converted {
        // `{config}/{split}/NNNN.parquet`, or `{config}/partial-{split}/...` for the first
        // rows of a large split.
        let folder_of = |path: &str| {
            within(path)
                .split_once('/')
                .map(|(folder, _)| folder.to_owned())
        };
        let partial = format!("partial-{}", dataset.split);
        let chosen: Vec<String> = in_config
            .iter()
            .filter(|path| folder_of(path).is_some_and(|f| f == dataset.split || f == partial))
            .map(|p| (*p).to_owned())
            .collect();
        if chosen.is_empty() {
            let mut found: Vec<String> = in_config.iter().filter_map(|p| folder_of(p)).collect();
            found.sort_unstable();
            found.dedup();
            return Err(Choice::NoSplit(found));
        }
        chosen
    } else {
        // A file named for the split exactly (`validation_matched-00000-of-00001.parquet`, or
        // in a folder of that name) belongs to it; else one whose path has the split's word.
        let exact: Vec<String> = in_config
            .iter()
            .filter(|p| exact_split(&within(p)).contains(&dataset.split))
            .map(|p| (*p).to_owned())
            .collect();
        let wanted = split_words(&dataset.split);
        let chosen: Vec<String> = if exact.is_empty() {
            in_config
                .iter()
                .filter(|p| words(&within(p)).iter().any(|w| wanted.contains(w)))
                .map(|p| (*p).to_owned())
                .collect()
        } else {
            exact
        };
        if chosen.is_empty() {
            let mut found: Vec<String> = in_config
                .iter()
                .flat_map(|p| {
                    let path = within(p);
                    let mut names: Vec<String> =
                        splits_named(&path).into_iter().map(str::to_owned).collect();
                    names.extend(
                        exact_split(&path)
                            .into_iter()
                            .filter(|n| n.contains(['_', '-'])),
                    );
                    names
                })
                .collect();
            found.sort_unstable();
            found.dedup();
            return Err(Choice::NoSplit(found));
        }
        chosen
    };
    Ok(chosen)
}

/// The label names a `huggingface` Parquet metadata value (`{"info": {"features": ...}}`)
/// stores for `column`: the `ClassLabel` names of a list column's items
/// (`features["ner_tags"].feature.names`), or of the column itself. `None` when it stores no
/// class labels for it.
///
/// ```
/// let metadata = r#"{"info": {"features": {"ner_tags": {"feature": {"names": ["O", "B-PER"],
///     "_type": "ClassLabel"}, "_type": "Sequence"}}}}"#;
/// let names = span_marker::hub::dataset::class_label_names(metadata, "ner_tags").unwrap();
/// assert_eq!(names, Some(vec!["O".to_owned(), "B-PER".to_owned()]));
/// ```
pub fn class_label_names(
    metadata: &str,
    column: &str,
) -> std::result::Result<Option<Vec<String>>, String> {
    let value: Value = serde_json::from_str(metadata)
        .map_err(|e| format!("the `huggingface` metadata is not JSON: {e}"))?;
    let features = &value["info"]["features"];
    let feature = &features[column];
    if feature.is_null() {
        return Ok(None);
    }
    let class_label = match feature["_type"].as_str() {
        Some("ClassLabel") => feature,
        Some("Sequence" | "List" | "LargeList") => &feature["feature"],
        _ => return Ok(None),
    };
    if class_label["_type"] != "ClassLabel" {
        return Ok(None);
    }
    let names = class_label["names"]
        .as_array()
        .ok_or_else(|| format!("the `ClassLabel` of `{column}` has no `names`"))?;
    names
        .iter()
        .map(|n| {
            n.as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("a `ClassLabel` name of `{column}` is not a string: {n}"))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(list: &[&str]) -> Vec<String> {
        list.iter().map(|p| (*p).to_owned()).collect()
    }

    fn split(config: Option<&str>, split: &str) -> DatasetRef {
        DatasetRef::new("o/d", config.map(str::to_owned), split)
    }

    #[test]
    fn the_usual_layouts_give_their_splits_in_shard_order() {
        let repo = paths(&[
            ".gitattributes",
            "README.md",
            "data/train-00001-of-00002.parquet",
            "data/train-00000-of-00002.parquet",
            "data/validation-00000-of-00001.parquet",
            "data/test-00000-of-00001.parquet",
        ]);
        assert_eq!(
            choose(&repo, &split(None, "train"), false).unwrap(),
            [
                "data/train-00000-of-00002.parquet",
                "data/train-00001-of-00002.parquet"
            ]
        );
        assert_eq!(
            choose(&repo, &split(None, "validation"), false).unwrap(),
            ["data/validation-00000-of-00001.parquet"]
        );
        assert_eq!(
            choose(&repo, &split(None, "other"), false),
            Err(Choice::NoSplit(paths(&["test", "train", "validation"])))
        );
        let dev = paths(&["dev.parquet", "train.parquet"]);
        assert_eq!(
            choose(&dev, &split(None, "validation"), false).unwrap(),
            ["dev.parquet"]
        );
    }

    #[test]
    fn a_split_named_exactly_is_taken_alone() {
        let repo = paths(&[
            "data/train-00000-of-00001.parquet",
            "data/validation_matched-00000-of-00001.parquet",
            "data/validation_mismatched-00000-of-00001.parquet",
        ]);
        assert_eq!(
            choose(&repo, &split(None, "validation_matched"), false).unwrap(),
            ["data/validation_matched-00000-of-00001.parquet"]
        );
        assert_eq!(
            choose(&repo, &split(None, "other"), false),
            Err(Choice::NoSplit(paths(&[
                "train",
                "validation",
                "validation_matched",
                "validation_mismatched"
            ])))
        );
        assert_eq!(
            exact_split("data/train-00001-of-00002.parquet"),
            ["train", "data"]
        );
    }

    #[test]
    fn configs_are_folders_and_several_need_a_name() {
        let repo = paths(&[
            "en/train-00000-of-00001.parquet",
            "de/train-00000-of-00001.parquet",
            "de/test-00000-of-00001.parquet",
        ]);
        assert_eq!(
            choose(&repo, &split(None, "train"), false),
            Err(Choice::SeveralConfigs(paths(&["de", "en"])))
        );
        assert_eq!(
            choose(&repo, &split(Some("de"), "test"), false).unwrap(),
            ["de/test-00000-of-00001.parquet"]
        );
        assert_eq!(
            choose(&repo, &split(Some("fr"), "test"), false),
            Err(Choice::NoConfig(paths(&["de", "en"])))
        );
        assert_eq!(
            choose(&paths(&["README.md", "x.py"]), &split(None, "train"), false),
            Err(Choice::NoParquet)
        );
    }

    #[test]
    fn the_conversion_branch_names_splits_by_folder() {
        let repo = paths(&[
            "conll2003/train/0000.parquet",
            "conll2003/train/0001.parquet",
            "conll2003/validation/0000.parquet",
        ]);
        assert_eq!(
            choose(&repo, &split(None, "train"), true).unwrap(),
            [
                "conll2003/train/0000.parquet",
                "conll2003/train/0001.parquet"
            ]
        );
        assert_eq!(
            choose(&repo, &split(None, "test"), true),
            Err(Choice::NoSplit(paths(&["train", "validation"])))
        );
    }

    #[test]
    fn class_labels_are_read_from_list_and_plain_features() {
        let sequence = r#"{"info":{"features":{"tags":{"feature":{"names":["O","B-X"],"_type":"ClassLabel"},"_type":"List"},"tokens":{"feature":{"dtype":"string","_type":"Value"},"_type":"Sequence"}}}}"#;
        assert_eq!(
            class_label_names(sequence, "tags").unwrap(),
            Some(paths(&["O", "B-X"]))
        );
        assert_eq!(class_label_names(sequence, "tokens").unwrap(), None);
        assert_eq!(class_label_names(sequence, "absent").unwrap(), None);
        assert!(class_label_names("{", "tags").is_err());
    }
}
