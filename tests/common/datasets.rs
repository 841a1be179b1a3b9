//! A stand-in Hub serving Hub datasets made by Python `datasets` and the tutorial's encoder,
//! for the dataset tests of the command line and the engine crate (which include it beside
//! `common` as `#[path = "../../tests/common/datasets.rs"] mod datasets;`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use span_marker::hub::publish::{upload_folder, PushOptions};
use span_marker::hub::HubOptions;
use span_marker_hub_standin::StandInHub;

use crate::common::{fixtures, reference_python, repo};

pub const CONLL_LABELS: [&str; 9] = [
    "O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC",
];
pub const TOY: &str = "user/toy-ner";
pub const TUTORIAL: &str = "eriktks/conll2003";
pub const WRITER: &str = "hf_tutor_token";

/// The toy corpus as a Hub dataset made by Python `datasets` (`train`, and its test split as
/// `validation` and `test`), in `layout`; its files by path.
pub fn dataset_files(work: &Path, layout: &str) -> BTreeMap<String, Vec<u8>> {
    let out = work.join(layout);
    let python = reference_python();
    let status = Command::new(&python)
        .current_dir(repo())
        .arg("tests/fixtures/make_hub_dataset.py")
        .arg(&out)
        .args([
            "train=examples/data/train.txt",
            "validation=examples/data/test.txt",
            "test=examples/data/test.txt",
            "--layout",
            layout,
        ])
        .output()
        .expect("the venv's Python runs (bash scripts/setup.sh)");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let mut files = BTreeMap::new();
    collect(&out, &out, &mut files);
    files
}

fn collect(root: &Path, dir: &Path, files: &mut BTreeMap<String, Vec<u8>>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(root, &path, files);
        } else {
            let name = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            files.insert(name, std::fs::read(&path).unwrap());
        }
    }
}

/// A stand-in Hub serving the toy dataset as its own Parquet files (`user/toy-ner`) and as a
/// loading script with the Hub's conversion (`eriktks/conll2003`, as on the real Hub).
pub fn hub(work: &Path) -> StandInHub {
    let hub = StandInHub::start().expect("the stand-in Hub starts");
    hub.add_token(WRITER, "tutor", true);
    hub.add_token("hf_fb_token", "FacebookAI", true);
    hub.add_dataset(TOY, "main", dataset_files(work, "data"));
    let script = BTreeMap::from([
        ("conll2003.py".to_owned(), b"# a loading script\n".to_vec()),
        ("README.md".to_owned(), b"# CoNLL-2003\n".to_vec()),
    ]);
    hub.add_dataset(TUTORIAL, "main", script.clone());
    let converted = dataset_files(work, "converted");
    hub.add_dataset(TUTORIAL, "refs/convert/parquet", converted);
    hub.add_dataset("user/script-only", "main", script);
    seed_encoder(&hub);
    hub
}

/// Pushes the tiny RoBERTa fixture as `FacebookAI/roberta-base`, the tutorial's encoder.
pub fn seed_encoder(hub: &StandInHub) {
    let options = PushOptions {
        hub: HubOptions {
            endpoint: Some(hub.endpoint().to_owned()),
            token: Some("hf_fb_token".into()),
            ..HubOptions::default()
        },
        ..PushOptions::default()
    };
    let encoder = fixtures().join("encoders/tiny-roberta");
    upload_folder(&encoder, "FacebookAI/roberta-base", &options).unwrap();
}

/// Every file under `dir`.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                found.extend(walk(&path));
            } else {
                found.push(path);
            }
        }
    }
    found
}
