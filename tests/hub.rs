//! Publishing to the Hub, end to end against the stand-in Hub (`hub-standin`, served on
//! 127.0.0.1 by each test): the Python `huggingface_hub` client proves the stand-in speaks the
//! real protocol; then an encoder is pushed, a model trained from it by id is pushed during and
//! after training (`hub_strategy = "every_save"`), loaded back by id from an empty cache here
//! and by Python `span_marker`; and refused tokens, missing rights and a broken upload give
//! clear errors without leaving a half-written revision.

mod common;

use std::path::Path;
use std::process::Command;

use common::{conll_words, fixtures, predict_words, repo};
use serde_json::Value;
use span_marker::device::Precision;
use span_marker::hub::publish::{upload_folder, PushOptions};
use span_marker::hub::HubOptions;
use span_marker::train::{HubStrategy, IntervalStrategy, NerDataset, Trainer, TrainingArguments};
use span_marker::{LoadOptions, SpanMarkerModel};
use span_marker_hub_standin::StandInHub;

const WRITER: &str = "hf_writer_token";
const READER: &str = "hf_reader_token";
const CONLL_LABELS: [&str; 9] = [
    "O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC",
];

fn hub() -> StandInHub {
    let hub = StandInHub::start().expect("the stand-in Hub starts");
    hub.add_token(WRITER, "user", true);
    hub.add_token(READER, "user", false);
    hub
}

fn push_options(hub: &StandInHub, token: &str) -> PushOptions {
    PushOptions {
        hub: HubOptions {
            endpoint: Some(hub.endpoint().to_owned()),
            token: Some(token.into()),
            ..HubOptions::default()
        },
        ..PushOptions::default()
    }
}

/// Options that resolve ids through the stand-in into the empty cache `cache`.
fn load_options(hub: &StandInHub, cache: &Path, labels: Option<Vec<String>>) -> LoadOptions {
    LoadOptions {
        hub: HubOptions {
            endpoint: Some(hub.endpoint().to_owned()),
            token: Some(WRITER.into()),
            cache_dir: Some(cache.to_owned()),
            ..HubOptions::default()
        },
        labels,
        ..LoadOptions::default()
    }
}

/// Training on the CPU into `output_dir`, saving every 2 steps, publishing to the stand-in.
fn publishing_args(hub: &StandInHub, output_dir: &Path) -> TrainingArguments {
    TrainingArguments {
        output_dir: output_dir.to_owned(),
        save_strategy: IntervalStrategy::Steps,
        save_steps: 2,
        device: "cpu".into(),
        push_to_hub: true,
        hub_token: Some(WRITER.into()),
        hub_endpoint: Some(hub.endpoint().to_owned()),
        ..TrainingArguments::default()
    }
}

/// Runs `tests/compat/hub_client.py` against the stand-in; its JSON output.
fn python_client(hub: &StandInHub, work: &Path, load: Option<&str>) -> Value {
    let python = common::reference_python();
    let mut command = Command::new(&python);
    command
        .arg("tests/compat/hub_client.py")
        .arg(work)
        .current_dir(repo())
        .env("HF_ENDPOINT", hub.endpoint())
        .env("HF_TOKEN", WRITER)
        .env("HF_HOME", work.join("hf-home"))
        .env("DISABLE_SAFETENSORS_CONVERSION", "true");
    if let Some(id) = load {
        command.arg("--load").arg(id);
    }
    let output = command.output().expect("the Python client runs");
    assert!(
        output.status.success(),
        "the Python client failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("hub_client.py prints JSON")
}

#[test]
fn the_python_client_uploads_to_and_downloads_from_the_stand_in() {
    let hub = hub();
    let work = tempfile::tempdir().unwrap();
    let out = python_client(&hub, work.path(), None);
    assert_eq!(out["user"], "user");
    assert_eq!(out["missing_file"], "EntryNotFoundError");
    for (name, equal) in out["downloaded_equal"].as_object().unwrap() {
        assert_eq!(equal, &Value::Bool(true), "{name} came back different");
    }
    assert_eq!(hub.is_private("user/python-upload"), Some(true));
    let files = hub.files("user/python-upload", "main").unwrap();
    assert_eq!(
        files.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            ".gitattributes",
            "README.md",
            "notes.txt",
            "weights/model.safetensors"
        ]
    );
    assert_eq!(
        hub.lfs_files("user/python-upload", "main"),
        ["weights/model.safetensors"]
    );
    assert_eq!(files["notes.txt"], b"plain text, committed inline\n");
}

/// The toy corpus's first sentences, as words.
fn sentences() -> Vec<Vec<String>> {
    let labels: Vec<String> = CONLL_LABELS.iter().map(|s| s.to_string()).collect();
    let labels = span_marker::Labels::new(&labels).unwrap();
    let mut sentences = conll_words(&repo().join("examples/data/test.txt"), &labels);
    sentences.truncate(8);
    sentences
}

/// Entities with their scores, for comparisons across loads.
fn predictions(
    model: &SpanMarkerModel,
    sentences: &[Vec<String>],
) -> Vec<Vec<(usize, usize, String, u32)>> {
    predict_words(model, sentences, Precision::Float32)
        .into_iter()
        .map(|found| {
            found
                .into_iter()
                .map(|e| (e.word_start, e.word_end, e.label, e.score.to_bits()))
                .collect()
        })
        .collect()
}

#[test]
fn a_model_trained_from_a_hub_encoder_is_published_while_training_and_loads_back_by_id() {
    let hub = hub();
    let work = tempfile::tempdir().unwrap();
    // The encoder goes up first, so that the trained model names it by id (as a model
    // fine-tuned from `bert-base-cased` does) and Python finds its tokenizer there.
    let encoder = upload_folder(
        &fixtures().join("encoders/tiny-bert"),
        "user/tiny-bert",
        &push_options(&hub, WRITER),
    )
    .unwrap();
    assert_eq!(
        encoder.repo_url,
        format!("{}/user/tiny-bert", hub.endpoint())
    );
    assert_eq!(
        hub.lfs_files("user/tiny-bert", "main"),
        ["model.safetensors"]
    );

    let labels: Vec<String> = CONLL_LABELS.iter().map(|s| s.to_string()).collect();
    let mut model = SpanMarkerModel::from_pretrained_with(
        "user/tiny-bert",
        &load_options(&hub, &work.path().join("cache-train"), Some(labels)),
    )
    .unwrap();
    let train =
        NerDataset::from_conll(repo().join("examples/data/train.txt"), model.labels()).unwrap();
    let output_dir = work.path().join("tiny-ner");
    let commits_before = hub.commits_made();
    let args = TrainingArguments {
        learning_rate: 5e-3,
        max_steps: Some(6),
        logging_steps: 2,
        hub_model_id: Some("user/tiny-ner".into()),
        hub_strategy: HubStrategy::EverySave,
        hub_private_repo: true,
        ..publishing_args(&hub, &output_dir)
    };
    Trainer::new(&mut model, args)
        .unwrap()
        .train(&train, None, None)
        .unwrap();
    // Creation, one commit per save (steps 2, 4, 6) and the final one.
    assert_eq!(hub.commits_made() - commits_before, 5);
    assert_eq!(hub.is_private("user/tiny-ner"), Some(true));
    let files = hub.files("user/tiny-ner", "main").unwrap();
    for name in [
        "config.json",
        "model.safetensors",
        "README.md",
        "tokenizer.json",
    ] {
        assert!(
            files.contains_key(name),
            "{name} not published: {:?}",
            files.keys()
        );
    }
    for name in files.keys() {
        assert!(
            !name.starts_with("checkpoint-") && name != "optimizer.safetensors",
            "{name} should not be published with hub_strategy every_save"
        );
    }
    // The model card written by save_pretrained is the repository's README.
    assert_eq!(
        files["README.md"],
        std::fs::read(output_dir.join("README.md")).unwrap()
    );
    // The weights go through LFS, and so do the TensorBoard event files under `runs/`, which
    // are published with the model as the Python Trainer publishes them.
    let lfs = hub.lfs_files("user/tiny-ner", "main");
    assert!(lfs.contains(&"model.safetensors".to_owned()), "{lfs:?}");
    for name in &lfs {
        assert!(
            name == "model.safetensors"
                || (name.starts_with("runs/") && name.contains("/events.out.tfevents.")),
            "{name} should not be published through LFS"
        );
    }

    // Back by id, from an empty cache: the same entities and scores as the local model.
    let local = SpanMarkerModel::from_pretrained(output_dir.to_str().unwrap()).unwrap();
    let fetched = SpanMarkerModel::from_pretrained_with(
        "user/tiny-ner",
        &load_options(&hub, &work.path().join("cache-load"), None),
    )
    .unwrap();
    let snapshot = span_marker::hub::resolve(
        "user/tiny-ner",
        &load_options(&hub, &work.path().join("cache-load"), None).hub,
    )
    .unwrap();
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert_eq!(
            std::fs::read(snapshot.join(file)).unwrap(),
            std::fs::read(output_dir.join(file)).unwrap(),
            "{file}"
        );
    }
    let sentences = sentences();
    assert_eq!(
        predictions(&fetched, &sentences),
        predictions(&local, &sentences)
    );

    // Python span_marker loads the published model by id through HF_ENDPOINT, and predicts as
    // it does from the local directory.
    let python_work = tempfile::tempdir().unwrap();
    let from_hub = python_client(&hub, python_work.path(), Some("user/tiny-ner"));
    let from_dir = python_client(&hub, python_work.path(), Some(output_dir.to_str().unwrap()));
    assert_eq!(from_hub["entities"], from_dir["entities"]);
    assert_eq!(from_hub["logits"], from_dir["logits"]);
    assert!(from_hub["logits"].as_array().unwrap().len() > 100);
}

#[test]
fn refused_tokens_and_missing_rights_are_clear_errors() {
    let hub = hub();
    let dir = fixtures().join("encoders/tiny-bert");
    let err = upload_folder(&dir, "user/model", &push_options(&hub, "hf_not_a_token"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("user/model") && err.contains("401"), "{err}");
    assert!(err.contains("token was refused"), "{err}");
    assert!(
        !err.contains("hf_not_a_token"),
        "the token leaks into the error: {err}"
    );

    // A read-only token cannot create the repository.
    let err = upload_folder(&dir, "user/model", &push_options(&hub, READER))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("403") && err.contains("may not write"),
        "{err}"
    );
    assert_eq!(hub.is_private("user/model"), None);

    // Nor publish to an existing one, nor may a user write into another's namespace.
    upload_folder(&dir, "user/model", &push_options(&hub, WRITER)).unwrap();
    let err = upload_folder(&dir, "user/model", &push_options(&hub, READER))
        .unwrap_err()
        .to_string();
    assert!(err.contains("403"), "{err}");
    let err = upload_folder(&dir, "someone-else/model", &push_options(&hub, WRITER))
        .unwrap_err()
        .to_string();
    assert!(err.contains("403") && err.contains("someone-else"), "{err}");

    // Not a repository id; nothing listening.
    let err = upload_folder(&dir, "model", &push_options(&hub, WRITER))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`user/name`"), "{err}");
    let mut options = push_options(&hub, WRITER);
    options.hub.endpoint = Some("http://127.0.0.1:9".into());
    let err = upload_folder(&dir, "user/model", &options)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("could not talk to http://127.0.0.1:9"),
        "{err}"
    );
    options.hub.endpoint = Some("127.0.0.1:9".into());
    let err = upload_folder(&dir, "user/model", &options)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not an http:// or https:// URL"), "{err}");
}

#[test]
fn a_broken_upload_leaves_the_revision_as_it_was_and_a_retry_completes_it() {
    let hub = hub();
    let options = push_options(&hub, WRITER);
    let first = tempfile::tempdir().unwrap();
    let model =
        SpanMarkerModel::from_pretrained(fixtures().join("training/init").to_str().unwrap())
            .unwrap();
    model.save_pretrained(first.path()).unwrap();
    upload_folder(first.path(), "user/ner", &options).unwrap();
    let before = hub.files("user/ner", "main").unwrap();

    // A second version: other weights, and a file the first did not have.
    let second = tempfile::tempdir().unwrap();
    let trained = SpanMarkerModel::from_pretrained(common::conll_tiny().to_str().unwrap()).unwrap();
    trained.save_pretrained(second.path()).unwrap();
    std::fs::write(second.path().join("notes.txt"), "second version\n").unwrap();
    // An empty file is committed inline, whatever its name says.
    std::fs::write(second.path().join("empty.safetensors"), b"").unwrap();
    // Every attempt breaks: the push gives up.
    hub.fail_next_lfs_upload(4);
    let commits = hub.commits_made();
    let err = upload_folder(second.path(), "user/ner", &options)
        .unwrap_err()
        .to_string();
    assert!(err.contains("uploading `model.safetensors`"), "{err}");
    assert!(err.contains("nothing was committed"), "{err}");
    assert_eq!(hub.commits_made(), commits);
    assert_eq!(hub.files("user/ner", "main").unwrap(), before);

    // One broken attempt is absorbed by trying again.
    hub.fail_next_lfs_upload(1);
    let commit = upload_folder(second.path(), "user/ner", &options).unwrap();
    let after = hub.files("user/ner", "main").unwrap();
    assert_eq!(after["empty.safetensors"], b"");
    assert_eq!(hub.lfs_files("user/ner", "main"), ["model.safetensors"]);
    assert_eq!(after["notes.txt"], b"second version\n");
    assert_eq!(
        after["model.safetensors"],
        std::fs::read(second.path().join("model.safetensors")).unwrap()
    );
    assert_eq!(commit.lfs_files, 1);
    assert!(commit.commit_url.ends_with(&commit.commit_oid));

    // Unchanged files are not sent again; with nothing changed, no commit is made.
    let commits = hub.commits_made();
    let again = upload_folder(second.path(), "user/ner", &options).unwrap();
    assert_eq!((again.files, again.lfs_files), (0, 0));
    assert_eq!(again.commit_oid, commit.commit_oid);
    assert_eq!(hub.commits_made(), commits);
    std::fs::write(second.path().join("notes.txt"), "third version\n").unwrap();
    let third = upload_folder(second.path(), "user/ner", &options).unwrap();
    assert_eq!((third.files, third.lfs_files), (1, 0));
    assert_eq!(
        hub.files("user/ner", "main").unwrap()["notes.txt"],
        b"third version\n"
    );
}

#[test]
fn push_to_hub_publishes_to_a_branch() {
    let hub = hub();
    let model = SpanMarkerModel::from_pretrained(common::conll_tiny().to_str().unwrap()).unwrap();
    let mut options = push_options(&hub, WRITER);
    options.hub.revision = Some("experiment".into());
    options.commit_message = Some("A first try".into());
    model.push_to_hub("user/branched", &options).unwrap();
    let branch = hub.files("user/branched", "experiment").unwrap();
    assert!(branch.contains_key("config.json") && branch.contains_key("model.safetensors"));
    // `main` keeps only what the repository was created with.
    let main = hub.files("user/branched", "main").unwrap();
    assert_eq!(main.keys().collect::<Vec<_>>(), [".gitattributes"]);
    let cache = tempfile::tempdir().unwrap();
    let mut load = load_options(&hub, cache.path(), None);
    load.hub.revision = Some("experiment".into());
    let fetched = SpanMarkerModel::from_pretrained_with("user/branched", &load).unwrap();
    let sentences = sentences();
    assert_eq!(
        predictions(&fetched, &sentences),
        predictions(&model, &sentences)
    );
}

#[test]
fn the_checkpoint_strategy_publishes_the_latest_checkpoint_whole_without_the_token_and_survives_a_failed_push(
) {
    let hub = hub();
    let mut model =
        SpanMarkerModel::from_pretrained(fixtures().join("training/init").to_str().unwrap())
            .unwrap();
    let train =
        NerDataset::from_conll(repo().join("examples/data/train.txt"), model.labels()).unwrap();
    let work = tempfile::tempdir().unwrap();
    // Without hub_model_id: the token's user and the output directory's name.
    let args = TrainingArguments {
        max_steps: Some(4),
        hub_strategy: HubStrategy::Checkpoint,
        ..publishing_args(&hub, &work.path().join("from-checkpoints"))
    };
    let mut trainer = Trainer::new(&mut model, args).unwrap();
    // The first checkpoint's push fails for good: a warning, and training goes on.
    let commits = hub.commits_made();
    hub.fail_next_lfs_upload(4);
    trainer.train(&train, None, None).unwrap();
    // The step-4 checkpoint and the final model; not the step-2 checkpoint.
    assert_eq!(hub.commits_made() - commits, 2);
    let files = hub.files("user/from-checkpoints", "main").unwrap();
    for name in [
        "model.safetensors",
        "last-checkpoint/model.safetensors",
        "last-checkpoint/optimizer.safetensors",
        "last-checkpoint/trainer_state.json",
    ] {
        assert!(files.contains_key(name), "{name}: {:?}", files.keys());
    }
    let state: Value =
        serde_json::from_slice(&files["last-checkpoint/trainer_state.json"]).unwrap();
    assert_eq!(state["global_step"], 4);
    assert!(!files.contains_key("optimizer.safetensors"));
    let args = String::from_utf8(files["last-checkpoint/training_args.json"].clone()).unwrap();
    assert!(
        args.contains("<HUB_TOKEN>") && !args.contains(WRITER),
        "{args}"
    );
}
