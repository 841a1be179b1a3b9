//! Dataset repositories on the stand-in Hub, read over HTTP as a client reads the real Hub.

use std::collections::BTreeMap;
use std::io::Read;

use serde_json::Value;
use sha2::{Digest, Sha256};
use span_marker_hub_standin::StandInHub;

const OWNER: &str = "hf_owner";
const OTHER: &str = "hf_other";
const PARQUET: &str = "refs%2Fconvert%2Fparquet";

/// An answer: status, headers (names in lower case) and body.
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    fn error_code(&self) -> Option<&str> {
        self.header("x-error-code")
    }
}

/// `method url` with `headers`, redirects not followed, errors returned as answers.
fn ask(method: &str, url: &str, headers: &[(&str, &str)]) -> Answer {
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let mut request = agent.request(method, url);
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let response = match request.call() {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = response.status();
    let headers = response
        .headers_names()
        .into_iter()
        .map(|name| {
            let value = response.header(&name).unwrap_or_default().to_owned();
            (name.to_ascii_lowercase(), value)
        })
        .collect();
    let mut body = Vec::new();
    response.into_reader().read_to_end(&mut body).unwrap();
    Answer {
        status,
        headers,
        body,
    }
}

fn get(hub: &StandInHub, path: &str) -> Answer {
    ask("GET", &format!("{}{path}", hub.endpoint()), &[])
}

fn get_as(hub: &StandInHub, token: &str, path: &str) -> Answer {
    let bearer = format!("Bearer {token}");
    ask(
        "GET",
        &format!("{}{path}", hub.endpoint()),
        &[("Authorization", &bearer)],
    )
}

/// A small Parquet-like file (the magic at both ends; the Hub does not read it).
fn parquet(seed: u8) -> Vec<u8> {
    let mut data = b"PAR1".to_vec();
    data.extend((0..200u8).map(|i| i.wrapping_mul(seed)));
    data.extend(b"PAR1");
    data
}

fn files(entries: &[(&str, Vec<u8>)]) -> BTreeMap<String, Vec<u8>> {
    entries
        .iter()
        .map(|(path, data)| (path.to_string(), data.clone()))
        .collect()
}

/// `org/corpus`: CSV files on `main`, their Parquet conversion on `refs/convert/parquet`.
fn hub() -> StandInHub {
    let hub = StandInHub::start().unwrap();
    hub.add_token(OWNER, "org", false);
    hub.add_token(OTHER, "someone", true);
    hub.add_dataset(
        "org/corpus",
        "main",
        files(&[
            ("README.md", b"# corpus\n".to_vec()),
            ("data/train.csv", b"tokens,ner_tags\n".to_vec()),
            ("data/test.csv", b"tokens,ner_tags\n".to_vec()),
        ]),
    );
    hub.add_dataset(
        "org/corpus",
        "refs/convert/parquet",
        files(&[
            ("default/train/0000.parquet", parquet(3)),
            ("default/train/0001.parquet", parquet(5)),
            ("default/test/0000.parquet", parquet(7)),
        ]),
    );
    hub
}

fn paths(listing: &Value) -> Vec<String> {
    listing
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|item| {
            let kind = if item["type"] == "directory" { "/" } else { "" };
            format!("{}{kind}", item["path"].as_str().unwrap())
        })
        .collect()
}

#[test]
fn a_recursive_tree_lists_folders_and_files_with_their_lfs_objects() {
    let hub = hub();
    let answer = get(
        &hub,
        &format!("/api/datasets/org/corpus/tree/{PARQUET}?recursive=true&expand=false"),
    );
    assert_eq!(answer.status, 200);
    let listing = answer.json();
    assert_eq!(
        paths(&listing),
        [
            "default/",
            "default/test/",
            "default/test/0000.parquet",
            "default/train/",
            "default/train/0000.parquet",
            "default/train/0001.parquet",
            ".gitattributes",
        ],
        "only what the conversion holds, folders first"
    );
    for item in listing.as_array().unwrap() {
        let oid = item["oid"].as_str().unwrap();
        assert_eq!(oid.len(), 40, "{item}");
        if item["type"] == "directory" {
            assert_eq!(item["size"], 0);
            assert!(item.get("lfs").is_none());
            continue;
        }
        let path = item["path"].as_str().unwrap();
        if path == ".gitattributes" {
            assert!(item.get("lfs").is_none(), "a small text file is inline");
            continue;
        }
        let data = match path {
            "default/train/0000.parquet" => parquet(3),
            "default/train/0001.parquet" => parquet(5),
            _ => parquet(7),
        };
        let sha256 = hex(&Sha256::digest(&data));
        assert_eq!(item["size"], data.len());
        assert_eq!(item["lfs"]["oid"], sha256.as_str());
        assert_eq!(item["lfs"]["size"], data.len());
        let pointer = format!(
            "version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {}\n",
            data.len()
        );
        assert_eq!(item["lfs"]["pointerSize"], pointer.len());
        assert_ne!(oid, sha256, "the blob id is git's, of the pointer");
    }

    // Python sends `True`; `1` is as good; `expand` adds the last commit.
    let python = get(
        &hub,
        &format!("/api/datasets/org/corpus/tree/{PARQUET}?recursive=True&expand=True"),
    )
    .json();
    assert_eq!(paths(&python), paths(&listing));
    let commit = hub
        .dataset_commit("org/corpus", "refs/convert/parquet")
        .unwrap();
    assert_eq!(python[0]["lastCommit"]["id"], commit.as_str());
    let one = get(
        &hub,
        &format!("/api/datasets/org/corpus/tree/{PARQUET}?recursive=1"),
    );
    assert_eq!(paths(&one.json()), paths(&listing));
}

#[test]
fn a_tree_without_recursive_lists_direct_children_of_a_folder() {
    let hub = hub();
    let root = get(&hub, &format!("/api/datasets/org/corpus/tree/{PARQUET}")).json();
    assert_eq!(paths(&root), ["default/", ".gitattributes"]);
    let default = get(
        &hub,
        &format!("/api/datasets/org/corpus/tree/{PARQUET}/default"),
    )
    .json();
    assert_eq!(paths(&default), ["default/test/", "default/train/"]);
    // huggingface_hub escapes the folder's `/` too.
    let train = get(
        &hub,
        &format!("/api/datasets/org/corpus/tree/{PARQUET}/default%2Ftrain"),
    )
    .json();
    assert_eq!(
        paths(&train),
        ["default/train/0000.parquet", "default/train/0001.parquet"]
    );
    let main = get(&hub, "/api/datasets/org/corpus/tree/main?recursive=false").json();
    assert_eq!(paths(&main), ["data/", ".gitattributes", "README.md"]);

    let missing = get(
        &hub,
        &format!("/api/datasets/org/corpus/tree/{PARQUET}/nothing"),
    );
    assert_eq!(
        (missing.status, missing.error_code()),
        (404, Some("EntryNotFound"))
    );
    let no_revision = get(&hub, "/api/datasets/org/corpus/tree/v9");
    assert_eq!(
        (no_revision.status, no_revision.error_code()),
        (404, Some("RevisionNotFound"))
    );
}

#[test]
fn long_listings_come_a_page_at_a_time_through_link_headers() {
    let hub = hub();
    let path = format!("/api/datasets/org/corpus/tree/{PARQUET}?recursive=True&expand=False");
    let whole = get(&hub, &path);
    assert!(whole.header("link").is_none(), "1000 entries fit one page");
    let whole = paths(&whole.json());

    hub.set_tree_page_size(2);
    let mut url = format!("{}{path}", hub.endpoint());
    let mut pages = Vec::new();
    loop {
        let answer = ask("GET", &url, &[]);
        assert_eq!(answer.status, 200);
        pages.push(paths(&answer.json()));
        let Some(link) = answer.header("link") else {
            break;
        };
        let next = link
            .strip_prefix('<')
            .and_then(|l| l.split_once(">; rel=\"next\""))
            .map(|(next, _)| next.to_owned())
            .unwrap_or_else(|| panic!("not a next link: {link}"));
        assert!(next.contains("recursive=True") && next.contains("expand=False"));
        assert!(next.starts_with(hub.endpoint()), "{next}");
        url = next;
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 2, 1]);
    assert_eq!(pages.concat(), whole);
}

#[test]
fn revision_information_names_the_commit_and_files_of_main_and_the_conversion() {
    let hub = hub();
    let main = hub.dataset_commit("org/corpus", "main").unwrap();
    let converted = hub
        .dataset_commit("org/corpus", "refs/convert/parquet")
        .unwrap();
    assert_ne!(main, converted);

    let siblings = |info: &Value| -> Vec<String> {
        info["siblings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["rfilename"].as_str().unwrap().to_owned())
            .collect()
    };
    for path in [
        "/api/datasets/org/corpus",
        "/api/datasets/org/corpus/revision/main",
    ] {
        let info = get(&hub, path).json();
        assert_eq!(info["id"], "org/corpus");
        assert_eq!(info["sha"], main.as_str());
        assert_eq!(info["private"], false);
        assert_eq!(
            siblings(&info),
            [
                ".gitattributes",
                "README.md",
                "data/test.csv",
                "data/train.csv"
            ]
        );
    }
    for revision in [PARQUET, converted.as_str(), "refs/convert/parquet"] {
        let info = get(
            &hub,
            &format!("/api/datasets/org/corpus/revision/{revision}?blobs=true"),
        )
        .json();
        assert_eq!(info["sha"], converted.as_str(), "{revision}");
        assert_eq!(
            siblings(&info),
            [
                ".gitattributes",
                "default/test/0000.parquet",
                "default/train/0000.parquet",
                "default/train/0001.parquet"
            ]
        );
        let train = &info["siblings"][2];
        assert_eq!(
            train["lfs"]["sha256"],
            hex(&Sha256::digest(parquet(3))).as_str()
        );
        assert_eq!(train["size"], parquet(3).len());
    }
    let missing = get(&hub, "/api/datasets/org/corpus/revision/v2");
    assert_eq!(
        (missing.status, missing.error_code()),
        (404, Some("RevisionNotFound"))
    );

    let refs = get(&hub, "/api/datasets/org/corpus/refs").json();
    assert_eq!(refs["branches"][0]["name"], "main");
    assert_eq!(refs["branches"].as_array().unwrap().len(), 1);
    assert_eq!(refs["converts"][0]["name"], "parquet");
    assert_eq!(refs["converts"][0]["ref"], "refs/convert/parquet");
    assert_eq!(refs["converts"][0]["targetCommit"], converted.as_str());
}

#[test]
fn a_parquet_file_resolves_as_an_lfs_download_with_its_headers() {
    let hub = hub();
    let commit = hub
        .dataset_commit("org/corpus", "refs/convert/parquet")
        .unwrap();
    let data = parquet(5);
    let sha256 = hex(&Sha256::digest(&data));
    let url = format!(
        "{}/datasets/org/corpus/resolve/{PARQUET}/default/train/0001.parquet",
        hub.endpoint()
    );
    for method in ["HEAD", "GET"] {
        let answer = ask(method, &url, &[]);
        assert_eq!(answer.status, 200, "{method}");
        assert_eq!(answer.header("x-repo-commit"), Some(commit.as_str()));
        assert_eq!(
            answer.header("etag"),
            Some(format!("\"{sha256}\"").as_str())
        );
        assert_eq!(
            answer.header("x-linked-etag"),
            Some(format!("\"{sha256}\"").as_str())
        );
        assert_eq!(
            answer.header("x-linked-size"),
            Some(data.len().to_string().as_str())
        );
        assert_eq!(
            answer.header("content-length"),
            Some(data.len().to_string().as_str())
        );
        if method == "GET" {
            assert_eq!(answer.body, data);
        }
    }
    let tail = ask("GET", &url, &[("Range", "bytes=-4")]);
    assert_eq!(tail.status, 206);
    assert_eq!(tail.body, b"PAR1");

    // An unescaped conversion branch and the commit id name the same file.
    for revision in ["refs/convert/parquet", commit.as_str()] {
        let answer = get(
            &hub,
            &format!("/datasets/org/corpus/resolve/{revision}/default/train/0001.parquet"),
        );
        assert_eq!((answer.status, answer.body.len()), (200, data.len()));
    }

    // Served from another host, as the Hub's LFS files are.
    hub.redirect_lfs_downloads(true);
    let redirect = ask("HEAD", &url, &[]);
    assert_eq!(redirect.status, 302);
    assert_eq!(redirect.header("x-repo-commit"), Some(commit.as_str()));
    let location = redirect.header("location").unwrap();
    assert!(location.ends_with(&format!("/cdn/{sha256}")), "{location}");
    assert_eq!(ask("GET", location, &[]).body, data);

    let missing = get(
        &hub,
        &format!("/datasets/org/corpus/resolve/{PARQUET}/default/dev/0000.parquet"),
    );
    assert_eq!(
        (missing.status, missing.error_code()),
        (404, Some("EntryNotFound"))
    );
    assert_eq!(missing.header("x-repo-commit"), Some(commit.as_str()));
    let no_revision = get(&hub, "/datasets/org/corpus/resolve/v2/README.md");
    assert_eq!(
        (no_revision.status, no_revision.error_code()),
        (404, Some("RevisionNotFound"))
    );
    // Inline files too, from main.
    let readme = get(&hub, "/datasets/org/corpus/resolve/main/README.md");
    assert_eq!(readme.body, b"# corpus\n");
    assert!(readme.header("x-linked-etag").is_none());
}

#[test]
fn a_private_dataset_is_seen_by_its_namespace_only() {
    let hub = hub();
    assert!(hub.set_dataset_private("org/corpus", true));
    assert!(!hub.set_dataset_private("org/nothing", true));
    let paths = [
        "/api/datasets/org/corpus".to_owned(),
        format!("/api/datasets/org/corpus/tree/{PARQUET}"),
        format!("/datasets/org/corpus/resolve/{PARQUET}/default/test/0000.parquet"),
    ];
    for path in &paths {
        let anonymous = get(&hub, path);
        assert_eq!(
            (anonymous.status, anonymous.error_code()),
            (401, Some("RepoNotFound")),
            "{path}"
        );
        let other = get_as(&hub, OTHER, path);
        assert_eq!(
            (other.status, other.error_code()),
            (404, Some("RepoNotFound")),
            "{path}"
        );
        assert_eq!(get_as(&hub, OWNER, path).status, 200, "{path}");
        let refused = get_as(&hub, "hf_unknown", path);
        assert_eq!((refused.status, refused.error_code()), (401, None));
    }
    assert_eq!(
        get_as(&hub, OWNER, "/api/datasets/org/corpus").json()["private"],
        true
    );

    // A dataset that does not exist answers the same as one that may not be seen.
    let missing = get(&hub, "/api/datasets/org/nothing");
    assert_eq!(
        (missing.status, missing.error_code()),
        (401, Some("RepoNotFound"))
    );
    let missing = get_as(&hub, OWNER, "/datasets/org/nothing/resolve/main/README.md");
    assert_eq!(
        (missing.status, missing.error_code()),
        (404, Some("RepoNotFound"))
    );

    hub.set_dataset_private("org/corpus", false);
    assert_eq!(get(&hub, &paths[2]).status, 200);
}

#[test]
fn datasets_and_models_are_apart() {
    let hub = hub();
    // No model `org/corpus`: the model routes do not see the dataset.
    let model = get(&hub, "/api/models/org/corpus");
    assert_eq!(
        (model.status, model.error_code()),
        (401, Some("RepoNotFound"))
    );
    assert_eq!(get(&hub, "/org/corpus/resolve/main/README.md").status, 401);
    assert!(hub.files("org/corpus", "main").is_none());

    // A model of the same id, created through the API, leaves the dataset alone.
    hub.add_token("hf_org_writer", "org", true);
    let created = ureq::post(&format!("{}/api/repos/create", hub.endpoint()))
        .set("Authorization", "Bearer hf_org_writer")
        .send_json(serde_json::json!({"name": "corpus", "type": "model"}))
        .unwrap();
    assert_eq!(created.status(), 200);
    let model = get(&hub, "/api/models/org/corpus").json();
    assert_eq!(model["siblings"].as_array().unwrap().len(), 1);
    let dataset = get(&hub, "/api/datasets/org/corpus").json();
    assert_eq!(dataset["siblings"].as_array().unwrap().len(), 4);
    assert_ne!(model["sha"], dataset["sha"]);
}

#[test]
fn seeding_again_commits_on_top_and_new_branches_start_from_main() {
    let hub = hub();
    let before = hub.dataset_commit("org/corpus", "main").unwrap();
    hub.add_dataset(
        "org/corpus",
        "main",
        files(&[("data/dev.csv", b"x\n".to_vec())]),
    );
    let after = hub.dataset_commit("org/corpus", "main").unwrap();
    assert_ne!(before, after);
    // The earlier commit is still there by its id.
    assert_eq!(
        get(&hub, &format!("/api/datasets/org/corpus/revision/{before}")).json()["sha"],
        before.as_str()
    );
    let main = get(&hub, "/api/datasets/org/corpus/tree/main/data").json();
    assert_eq!(
        paths(&main),
        ["data/dev.csv", "data/test.csv", "data/train.csv"]
    );

    hub.add_dataset("org/corpus", "v1", files(&[("extra.txt", b"e".to_vec())]));
    let v1 = get(&hub, "/api/datasets/org/corpus/tree/v1").json();
    assert_eq!(
        paths(&v1),
        ["data/", ".gitattributes", "README.md", "extra.txt"]
    );
    // A binary file goes through LFS whatever its name, an empty one never.
    hub.add_dataset(
        "org/corpus",
        "v1",
        files(&[("blob.dat", vec![1, 0, 2]), ("empty.parquet", Vec::new())]),
    );
    let v1 = get(&hub, "/api/datasets/org/corpus/tree/v1").json();
    let lfs: Vec<&str> = v1
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item.get("lfs").is_some())
        .map(|item| item["path"].as_str().unwrap())
        .collect();
    assert_eq!(lfs, ["blob.dat"]);
}

#[test]
fn paths_information_names_the_entries_that_exist() {
    let hub = hub();
    let url = format!(
        "{}/api/datasets/org/corpus/paths-info/{PARQUET}",
        hub.endpoint()
    );
    let answer: Value = ureq::post(&url)
        .set("Content-Type", "application/x-www-form-urlencoded")
        .send_string("paths=default%2Ftrain%2F0000.parquet&paths=default&paths=missing&expand=True")
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(paths(&answer), ["default/train/0000.parquet", "default/"]);
    assert_eq!(
        answer[0]["lfs"]["oid"],
        hex(&Sha256::digest(parquet(3))).as_str()
    );
    assert!(answer[1]["lastCommit"]["id"].is_string());
    let commit = ureq::post(&format!(
        "{}/api/datasets/org/corpus/commit/main",
        hub.endpoint()
    ))
    .send_string("{}");
    assert!(
        matches!(commit, Err(ureq::Error::Status(404, _))),
        "read-only"
    );
}

#[test]
fn every_request_is_recorded() {
    let hub = hub();
    assert!(hub.requests().is_empty(), "seeding asks nothing");
    get(
        &hub,
        &format!("/api/datasets/org/corpus/tree/{PARQUET}?recursive=true"),
    );
    ask(
        "HEAD",
        &format!(
            "{}/datasets/org/corpus/resolve/main/README.md",
            hub.endpoint()
        ),
        &[],
    );
    assert_eq!(
        hub.requests(),
        [
            format!("GET /api/datasets/org/corpus/tree/{PARQUET}?recursive=true"),
            "HEAD /datasets/org/corpus/resolve/main/README.md".to_owned(),
        ]
    );
}

#[test]
#[should_panic(expected = "namespace/name")]
fn a_dataset_id_without_a_namespace_is_refused() {
    StandInHub::start()
        .unwrap()
        .add_dataset("corpus", "main", BTreeMap::new());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
