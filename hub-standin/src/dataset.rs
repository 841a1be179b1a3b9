//! Dataset repositories: seeded by the test, then read as on the Hub (information, refs, tree
//! listings a page at a time, downloads). They are a namespace apart from models, so a model
//! and a dataset may share an id.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tiny_http::Method;

use crate::{commit_id, hex, percent_decode, split_repo, Entry, Reply, Repo, State, User};

/// The date every commit of the stand-in Hub carries.
const DATE: &str = "2024-01-01T00:00:00.000Z";

/// Branches under this prefix (`refs/convert/parquet`) are the Hub's conversions: they start
/// from the repository's first commit, not from `main`, and are listed as `converts`.
const CONVERT_PREFIX: &str = "refs/convert/";

impl State {
    /// Commits `files` onto `branch` of the dataset `id`, creating either when missing.
    pub(crate) fn seed_dataset(
        &mut self,
        id: &str,
        branch: &str,
        files: BTreeMap<String, Vec<u8>>,
    ) {
        let Some((namespace, _)) = id
            .split_once('/')
            .filter(|(n, r)| !n.is_empty() && !r.is_empty() && !r.contains('/'))
        else {
            panic!("a dataset id is `namespace/name`, not {id:?}");
        };
        if !self.datasets.contains_key(id) {
            self.commits_made += 1;
            self.datasets
                .insert(id.to_owned(), Repo::new(namespace, false));
        }
        let repo = self.datasets.get_mut(id).expect("inserted above");
        let parent = match repo.branches.get(branch) {
            Some(commit) => commit.clone(),
            // The Hub's converter starts its branch from the first commit, so that it holds
            // the converted files only.
            None if branch.starts_with(CONVERT_PREFIX) => commit_id("", &crate::initial_tree()),
            None => repo.branches["main"].clone(),
        };
        let mut tree = repo.commits[&parent].clone();
        for (path, data) in files {
            let path = path.trim_start_matches('/').to_owned();
            assert!(!path.is_empty(), "a file of dataset {id} has an empty path");
            let entry = Entry::new(&path, data);
            if let Some(oid) = &entry.lfs {
                self.lfs.insert(oid.clone(), entry.data.clone());
            }
            tree.insert(path, entry);
        }
        let commit = commit_id(&parent, &tree);
        repo.commits.insert(commit.clone(), tree);
        repo.branches.insert(branch.to_owned(), commit);
        self.commits_made += 1;
    }

    /// The dataset `id` as `user` may see it: private ones only by their namespace's user.
    /// Otherwise `RepoNotFound`, as `401` without a token and `404` with one, as on the Hub.
    fn visible_dataset(&self, id: &str, user: Option<&User>) -> Result<&Repo, Reply> {
        match self.datasets.get(id) {
            Some(repo) if !repo.private || user.is_some_and(|u| u.name == repo.owner) => Ok(repo),
            _ => Err(Reply::error(
                if user.is_some() { 404 } else { 401 },
                Some("RepoNotFound"),
                &format!(
                    "Repository Not Found for url: {}/datasets/{id}.",
                    self.endpoint
                ),
            )),
        }
    }

    /// `GET /api/datasets/{id}[/revision/{rev}]`, `.../tree/{rev}[/{path}]` and `.../refs`;
    /// `path` is the request's whole path, `rest` what follows `/api/datasets/`.
    pub(crate) fn dataset_api(
        &self,
        path: &str,
        rest: &str,
        query: &str,
        user: Option<&User>,
    ) -> Reply {
        let Some((id, rest)) = split_repo(rest) else {
            return Reply::error(404, Some("EntryNotFound"), "not found");
        };
        let repo = match self.visible_dataset(&id, user) {
            Ok(repo) => repo,
            Err(reply) => return reply,
        };
        let query = Query::parse(query);
        let (action, after) = rest.split_once('/').unwrap_or((rest, ""));
        match action {
            "" | "revision" => {
                let revision = if action.is_empty() {
                    "main".to_owned()
                } else {
                    percent_decode(after)
                };
                match repo.commit_or_404(&revision) {
                    Ok(commit) => self.dataset_info(&id, repo, &commit, &query),
                    Err(reply) => reply,
                }
            }
            "tree" => {
                let (revision, dir) = split_revision(repo, after);
                match repo.commit_or_404(&revision) {
                    Ok(commit) => self.tree(repo, &commit, &revision, &dir, &query, path),
                    Err(reply) => reply,
                }
            }
            "refs" if after.is_empty() => refs(repo),
            _ => Reply::error(404, Some("EntryNotFound"), "not found"),
        }
    }

    /// `POST /api/datasets/{id}/paths-info/{rev}` (a form of `paths` and `expand`): the
    /// entries of those paths that exist, as the tree listing shows them; `rest` follows
    /// `/api/datasets/`. Datasets are read-only here: other actions answer `404`.
    pub(crate) fn dataset_post(&self, rest: &str, body: &[u8], user: Option<&User>) -> Reply {
        let Some((id, rest)) = split_repo(rest) else {
            return Reply::error(404, Some("EntryNotFound"), "not found");
        };
        let repo = match self.visible_dataset(&id, user) {
            Ok(repo) => repo,
            Err(reply) => return reply,
        };
        let Some(revision) = rest.strip_prefix("paths-info/") else {
            return Reply::error(
                404,
                None,
                "the stand-in Hub serves dataset repositories read-only",
            );
        };
        let revision = percent_decode(revision);
        let commit = match repo.commit_or_404(&revision) {
            Ok(commit) => commit,
            Err(reply) => return reply,
        };
        let files = &repo.commits[&commit];
        let form = String::from_utf8_lossy(body).replace('+', " ");
        let form = Query::parse(&form);
        let last_commit = form.flag("expand").then(|| last_commit(&commit));
        let items: Vec<Value> = form
            .pairs
            .iter()
            .filter(|(_, key, _)| *key == "paths")
            .filter_map(|(_, _, path)| {
                let path = percent_decode(path);
                let path = path.trim_matches('/');
                if let Some(entry) = files.get(path) {
                    return Some(file_item(path, entry, last_commit.as_ref()));
                }
                let prefix = format!("{path}/");
                let is_dir = files
                    .range(prefix.clone()..)
                    .next()
                    .is_some_and(|(p, _)| p.starts_with(&prefix));
                is_dir.then(|| directory_item(files, path, last_commit.as_ref()))
            })
            .collect();
        Reply::json(200, Value::Array(items))
    }

    /// `GET`/`HEAD /datasets/{id}/resolve/{rev}/{path}`; `rest` follows `/datasets/`.
    pub(crate) fn dataset_resolve(
        &self,
        rest: &str,
        user: Option<&User>,
        range: Option<&str>,
        method: &Method,
    ) -> Reply {
        let Some((id, rest)) = split_repo(rest) else {
            return Reply::error(404, Some("EntryNotFound"), "not found");
        };
        let Some(rest) = rest.strip_prefix("resolve/") else {
            return Reply::error(404, Some("EntryNotFound"), "not found");
        };
        let repo = match self.visible_dataset(&id, user) {
            Ok(repo) => repo,
            Err(reply) => return reply,
        };
        let (revision, file) = split_revision_raw(repo, rest);
        match repo.commit_or_404(&revision) {
            Ok(commit) => self.resolve(repo, commit, file, range, method),
            Err(reply) => reply,
        }
    }

    /// The repository's information at `commit`; with `blobs`, each file's size, blob id and
    /// LFS object.
    fn dataset_info(&self, id: &str, repo: &Repo, commit: &str, query: &Query) -> Reply {
        let tree = &repo.commits[commit];
        let blobs = query.flag("blobs");
        let siblings: Vec<Value> = tree
            .iter()
            .map(|(path, entry)| {
                let mut sibling = json!({ "rfilename": path });
                if blobs {
                    sibling["size"] = json!(entry.data.len());
                    sibling["blobId"] = json!(entry.blob_id());
                    if let Some(oid) = &entry.lfs {
                        sibling["lfs"] = json!({
                            "sha256": oid, "size": entry.data.len(),
                            "pointerSize": pointer_size(oid, entry.data.len()),
                        });
                    }
                }
                sibling
            })
            .collect();
        let used: usize = tree.values().map(|e| e.data.len()).sum();
        Reply::json(
            200,
            json!({
                "_id": id, "id": id, "author": repo.owner, "sha": commit,
                "lastModified": DATE, "createdAt": DATE, "private": repo.private,
                "gated": false, "disabled": false, "downloads": 0, "likes": 0, "tags": [],
                "siblings": siblings, "usedStorage": used,
            }),
        )
    }

    /// The entries of `dir` at `commit` as the Hub lists them: directories first, then files,
    /// each directory followed by its own entries when `recursive`; one page of
    /// `tree_page_size` entries, the next page named by a `Link` header.
    fn tree(
        &self,
        repo: &Repo,
        commit: &str,
        revision: &str,
        dir: &str,
        query: &Query,
        path: &str,
    ) -> Reply {
        let files = &repo.commits[commit];
        let dir = dir.trim_matches('/');
        let base = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let recursive = query.flag("recursive");
        let last_commit = query.flag("expand").then(|| last_commit(commit));
        // Sorted with directories (`false`) before files at every level.
        let mut entries: BTreeMap<Vec<(bool, &str)>, Value> = BTreeMap::new();
        let under = files
            .range(base.clone()..)
            .take_while(|(file, _)| file.starts_with(&base));
        for (file, entry) in under {
            let segments: Vec<&str> = file[base.len()..].split('/').collect();
            let depth = if recursive { segments.len() } else { 1 };
            for level in 1..=depth {
                let is_file = level == segments.len();
                let key: Vec<(bool, &str)> = segments[..level]
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (i + 1 == segments.len(), *s))
                    .collect();
                if entries.contains_key(&key) {
                    continue;
                }
                let item_path = format!("{base}{}", segments[..level].join("/"));
                let item = if is_file {
                    file_item(&item_path, entry, last_commit.as_ref())
                } else {
                    directory_item(files, &item_path, last_commit.as_ref())
                };
                entries.insert(key, item);
            }
        }
        if entries.is_empty() && !dir.is_empty() {
            return Reply::error(
                404,
                Some("EntryNotFound"),
                &format!("{dir} does not exist on {revision}"),
            );
        }
        let start = match query.get("cursor").map(str::parse::<usize>) {
            None => 0,
            Some(Ok(start)) => start,
            Some(Err(_)) => return Reply::error(400, None, "invalid cursor"),
        };
        let size = self.tree_page_size.max(1);
        let page: Vec<Value> = entries.into_values().skip(start).collect();
        let more = page.len() > size;
        let page: Vec<Value> = page.into_iter().take(size).collect();
        let mut reply = Reply::json(200, Value::Array(page));
        if more {
            let mut params: Vec<&str> = query.raw_without("cursor");
            let cursor = format!("cursor={}", start + size);
            params.push(&cursor);
            let next = format!("{}{path}?{}", self.endpoint, params.join("&"));
            reply
                .headers
                .push(("Link", format!("<{next}>; rel=\"next\"")));
        }
        reply
    }
}

/// A file as the tree listing and the paths' information show it.
fn file_item(path: &str, entry: &Entry, last_commit: Option<&Value>) -> Value {
    let mut item = json!({
        "type": "file", "oid": entry.blob_id(), "size": entry.data.len(), "path": path,
    });
    if let Some(oid) = &entry.lfs {
        item["lfs"] = json!({
            "oid": oid, "size": entry.data.len(),
            "pointerSize": pointer_size(oid, entry.data.len()),
        });
    }
    if let Some(last_commit) = last_commit {
        item["lastCommit"] = last_commit.clone();
    }
    item
}

/// A directory of `files` as the tree listing and the paths' information show it.
fn directory_item(files: &crate::Tree, path: &str, last_commit: Option<&Value>) -> Value {
    let oid = directory_id(files, path);
    let mut item = json!({"type": "directory", "oid": oid, "size": 0, "path": path});
    if let Some(last_commit) = last_commit {
        item["lastCommit"] = last_commit.clone();
    }
    item
}

/// The `lastCommit` of an entry listed with `expand=true`: the revision's commit.
fn last_commit(commit: &str) -> Value {
    json!({"id": commit, "title": "Stand-in commit", "date": DATE})
}

/// `GET /api/datasets/{id}/refs`: branches, and the Hub's conversions apart.
fn refs(repo: &Repo) -> Reply {
    let (mut branches, mut converts) = (Vec::new(), Vec::new());
    for (name, commit) in &repo.branches {
        match name.strip_prefix(CONVERT_PREFIX) {
            Some(kind) => converts.push(json!({"name": kind, "ref": name, "targetCommit": commit})),
            None => branches.push(
                json!({"name": name, "ref": format!("refs/heads/{name}"), "targetCommit": commit}),
            ),
        }
    }
    Reply::json(
        200,
        json!({"branches": branches, "converts": converts, "tags": []}),
    )
}

/// The revision that starts `rest` (`{rev}/{path}`) and the path after it, decoded. The
/// revision is one segment (clients escape its `/` as `%2F`); an unescaped `refs/...` branch
/// the repository has is taken whole.
fn split_revision(repo: &Repo, rest: &str) -> (String, String) {
    let (revision, path) = split_revision_raw(repo, rest);
    (revision, percent_decode(path))
}

/// [`split_revision`] with the path left percent-encoded.
fn split_revision_raw<'a>(repo: &Repo, rest: &'a str) -> (String, &'a str) {
    let cut = |at: Option<usize>| match at {
        Some(at) => (percent_decode(&rest[..at]), &rest[at + 1..]),
        None => (percent_decode(rest), ""),
    };
    let slashes: Vec<usize> = rest.match_indices('/').map(|(i, _)| i).collect();
    if rest.starts_with("refs/") {
        for count in [3, 2] {
            let candidate = cut(slashes.get(count - 1).copied());
            if repo.commit_of(&candidate.0).is_some() {
                return candidate;
            }
        }
    }
    cut(slashes.first().copied())
}

/// The size of the LFS pointer file git holds for an object.
fn pointer_size(oid: &str, size: usize) -> usize {
    crate::lfs_pointer(oid, size).len()
}

/// A 40-hex id for the directory `dir` from the files under it (a stand-in for a git tree id).
fn directory_id(files: &crate::Tree, dir: &str) -> String {
    let prefix = format!("{dir}/");
    let mut hasher = Sha256::new();
    for (path, entry) in files.range(prefix.clone()..) {
        if !path.starts_with(&prefix) {
            break;
        }
        hasher.update(path.as_bytes());
        hasher.update(entry.blob_id().as_bytes());
    }
    hex(&hasher.finalize())[..40].to_owned()
}

/// A query string's `key=value` pairs, as sent (the values read here need no decoding).
struct Query<'a> {
    /// Each pair whole, its key and its value.
    pairs: Vec<(&'a str, &'a str, &'a str)>,
}

impl<'a> Query<'a> {
    fn parse(query: &'a str) -> Self {
        let pairs = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (pair, key, value)
            })
            .collect();
        Self { pairs }
    }

    fn get(&self, key: &str) -> Option<&'a str> {
        self.pairs
            .iter()
            .find(|(_, k, _)| *k == key)
            .map(|(_, _, v)| *v)
    }

    /// Whether `key` is on: `true` in any case (Python sends `True`) or `1`.
    fn flag(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
    }

    /// The pairs whole, but those of `key`.
    fn raw_without(&self, key: &str) -> Vec<&'a str> {
        self.pairs
            .iter()
            .filter(|(_, k, _)| *k != key)
            .map(|(pair, _, _)| *pair)
            .collect()
    }
}
