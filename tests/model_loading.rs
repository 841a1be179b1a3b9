//! Loading models by id through a local Hugging Face cache, and clear errors for broken or
//! incompatible checkpoints.

mod common;

use std::path::{Path, PathBuf};

use common::{fixtures, logits, max_abs_diff};
use serde_json::Value;
use span_marker::hub::HubOptions;
use span_marker::{LoadOptions, SentenceInput, SpanMarkerModel};

/// A copy of a fixture model directory that a test may break.
fn copy_model(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join(name), tmp.path());
    tmp
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn load_error(dir: &Path) -> String {
    SpanMarkerModel::from_pretrained(dir.to_str().unwrap())
        .expect_err("loading should fail")
        .to_string()
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let path = dir.join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
}

#[test]
fn a_model_id_resolves_through_a_local_hugging_face_cache() {
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("models--acme--tiny-ner");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    copy_dir(
        &fixtures().join("trained/tiny-bert"),
        &repo.join("snapshots").join(commit),
    );
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();

    let options = LoadOptions {
        hub: HubOptions {
            cache_dir: Some(cache.path().to_owned()),
            offline: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let by_id = SpanMarkerModel::from_pretrained_with("acme/tiny-ner", &options).unwrap();
    let by_path =
        SpanMarkerModel::from_pretrained(fixtures().join("trained/tiny-bert").to_str().unwrap())
            .unwrap();
    let words = ["Germany", "beat", "England", "."];
    let input = [SentenceInput::Words(&words)];
    assert_eq!(
        max_abs_diff(&logits(&by_id, &input), &logits(&by_path, &input)),
        0.0
    );

    // Another revision is not in the cache: offline, that is an error naming the id.
    let options = LoadOptions {
        hub: HubOptions {
            revision: Some("v2".into()),
            ..options.hub
        },
        ..Default::default()
    };
    let err = SpanMarkerModel::from_pretrained_with("acme/tiny-ner", &options)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("acme/tiny-ner") && err.contains("offline"),
        "{err}"
    );
}

#[test]
fn a_path_that_is_neither_a_directory_nor_an_id_is_named() {
    let err = load_error(Path::new("/no/such/model/dir"));
    assert!(
        err.contains("/no/such/model/dir") && err.contains("not a directory"),
        "{err}"
    );
}

#[test]
fn missing_weights_are_reported_with_the_directory() {
    let dir = copy_model("trained/tiny-bert");
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let err = load_error(dir.path());
    assert!(
        err.contains("no weights found") && err.contains(&dir.path().display().to_string()),
        "{err}"
    );
}

#[test]
fn a_corrupt_safetensors_file_is_reported() {
    let dir = copy_model("trained/tiny-bert");
    let path = dir.path().join("model.safetensors");
    std::fs::write(&path, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all").unwrap();
    let err = load_error(dir.path());
    assert!(
        err.contains("model.safetensors") && err.contains("not a valid safetensors file"),
        "{err}"
    );

    // Truncated: a valid header whose data is cut short.
    let bytes = std::fs::read(fixtures().join("trained/tiny-bert/model.safetensors")).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_error(dir.path());
    assert!(
        err.contains("model.safetensors") && err.contains("not a valid safetensors file"),
        "{err}"
    );
}

#[test]
fn a_corrupt_pickle_file_is_reported() {
    let dir = copy_model("trained/tiny-roberta");
    let path = dir.path().join("pytorch_model.bin");
    std::fs::write(&path, b"definitely not a zip archive").unwrap();
    let err = load_error(dir.path());
    assert!(
        err.contains("pytorch_model.bin") && err.contains("not a PyTorch zip checkpoint"),
        "{err}"
    );

    let bytes = std::fs::read(fixtures().join("trained/tiny-roberta/pytorch_model.bin")).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
    let err = load_error(dir.path());
    assert!(
        err.contains("pytorch_model.bin") && err.contains("not a readable zip archive"),
        "{err}"
    );
}

#[test]
fn a_pickle_record_cut_short_is_refused_naming_it() {
    // The archive is intact, but the word embeddings' record lost its second half: libtorch
    // alone would load it and leave half of the matrix undefined.
    use std::io::{Read, Write};
    let dir = copy_model("trained/tiny-roberta");
    let path = dir.path().join("pytorch_model.bin");
    let source = std::fs::File::open(fixtures().join("trained/tiny-roberta/pytorch_model.bin"));
    let mut archive = zip::ZipArchive::new(source.unwrap()).unwrap();
    let mut writer = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let stored =
        zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).unwrap();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        if entry.name() == "pytorch_model/data/0" {
            bytes.truncate(bytes.len() / 2);
        }
        writer.start_file(entry.name(), stored).unwrap();
        writer.write_all(&bytes).unwrap();
    }
    writer.finish().unwrap();
    let err = load_error(dir.path());
    assert!(
        err.contains("pytorch_model.bin")
            && err.contains("record `pytorch_model/data/0` holds 256512 bytes")
            && err.contains("needs 513024"),
        "{err}"
    );
}

/// A copy of the tiny BERT whose weight `name` is replaced by `replace(weight)`.
fn with_weight(name: &str, replace: impl Fn(&tch::Tensor) -> tch::Tensor) -> tempfile::TempDir {
    let dir = copy_model("trained/tiny-bert");
    let path: PathBuf = dir.path().join("model.safetensors");
    let state = span_marker::checkpoint::StateDict::read(&path).unwrap();
    let mut tensors: Vec<(String, tch::Tensor)> = state.tensors.into_iter().collect();
    for (key, tensor) in &mut tensors {
        if key == name {
            *tensor = replace(tensor);
        }
    }
    span_marker::checkpoint::write_safetensors(&path, &tensors).unwrap();
    dir
}

#[test]
fn non_finite_or_integer_weights_are_refused_naming_the_tensor() {
    let name = "encoder.encoder.layer.0.attention.self.query.weight";
    let nan = with_weight(name, |t| {
        let t = t.copy();
        let _ = t.get(0).get(3).fill_(f64::NAN);
        let _ = t.get(1).get(0).fill_(f64::INFINITY);
        t
    });
    let err = load_error(nan.path());
    assert!(
        err.contains("model.safetensors") && err.contains(name) && err.contains("2 non-finite"),
        "{err}"
    );
    let int = with_weight(name, |t| t.to_kind(tch::Kind::Int64));
    let err = load_error(int.path());
    assert!(
        err.contains(name) && err.contains("floating point"),
        "{err}"
    );
}

#[test]
fn a_head_that_does_not_match_the_labels_is_reported() {
    let dir = copy_model("trained/tiny-bert");
    // Drop MISC: 4 reduced labels for a head with 5 outputs.
    edit_config(dir.path(), |c| {
        let labels = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"];
        c["encoder"]["id2label"] = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (i.to_string(), Value::from(*l)))
            .collect();
        c["encoder"]["label2id"] = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.to_string(), Value::from(i)))
            .collect();
        c.as_object_mut()
            .unwrap()
            .retain(|k, _| !["id2label", "label2id", "id2reduced_id"].contains(&k.as_str()));
    });
    let err = load_error(dir.path());
    assert!(
        err.contains("classifier.weight") && err.contains("[5, 64]") && err.contains("4 labels"),
        "{err}"
    );
}

#[test]
fn weights_of_the_wrong_shape_are_reported() {
    let dir = copy_model("trained/tiny-bert");
    edit_config(dir.path(), |c| {
        c["encoder"]["intermediate_size"] = Value::from(128)
    });
    let err = load_error(dir.path());
    assert!(
        err.contains("`intermediate_size` = 128")
            && err.contains("intermediate.dense.weight` has shape [64"),
        "{err}"
    );
    // Sizes are checked against the weights before anything is allocated: a config asking
    // for a thousand layers where the weights hold two is an error, not an allocation.
    edit_config(dir.path(), |c| {
        c["encoder"]["intermediate_size"] = Value::from(64);
        c["encoder"]["num_hidden_layers"] = Value::from(1000);
    });
    let err = load_error(dir.path());
    assert!(
        err.contains("1000 layers (`num_hidden_layers`)") && err.contains("hold 2"),
        "{err}"
    );
    // And beyond any encoder, before the weights are even read.
    edit_config(dir.path(), |c| {
        c["encoder"]["num_hidden_layers"] = Value::from(100_000_000)
    });
    let err = load_error(dir.path());
    assert!(
        err.contains("`num_hidden_layers` must be between 1 and 1024"),
        "{err}"
    );
}

#[test]
fn unsupported_encoders_are_refused() {
    let dir = copy_model("trained/tiny-bert");
    edit_config(dir.path(), |c| {
        c["encoder"]["model_type"] = Value::from("distilbert")
    });
    let err = load_error(dir.path());
    assert!(
        err.contains("distilbert") && err.contains("position_ids"),
        "{err}"
    );
}

#[test]
fn missing_or_malformed_files_are_named() {
    let dir = copy_model("trained/tiny-bert");
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let err = load_error(dir.path());
    assert!(err.contains("tokenizer.json"), "{err}");

    let dir = copy_model("trained/tiny-bert");
    std::fs::write(dir.path().join("config.json"), "{ not json").unwrap();
    let err = load_error(dir.path());
    assert!(
        err.contains("config.json") && err.contains("invalid JSON"),
        "{err}"
    );
}

#[test]
fn a_tokenizer_that_does_not_fit_the_weights_is_reported() {
    // Embeddings cut to the 4000 rows of the original vocabulary: the marker ids 4000 and 4001
    // of the saved tokenizer are out of range.
    let embeddings = "encoder.embeddings.word_embeddings.weight";
    let dir = with_weight(embeddings, |t| t.narrow(0, 0, 4000));
    let err = load_error(dir.path());
    assert!(
        err.contains("4000 rows") && err.contains("token id 4001"),
        "{err}"
    );
    // The other way: far more rows than the tokenizer's ids (a tokenizer of a smaller model).
    let dir = with_weight(embeddings, |t| {
        tch::Tensor::cat(&[t, &t.zeros_like(), &t.zeros_like()], 0)
    });
    let err = load_error(dir.path());
    assert!(
        err.contains("highest token id is 4001") && err.contains("do not belong"),
        "{err}"
    );
}

#[test]
fn a_plain_encoder_needs_labels() {
    let err =
        SpanMarkerModel::from_pretrained(fixtures().join("encoders/tiny-bert").to_str().unwrap())
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("plain encoder") && err.contains("label"),
        "{err}"
    );
}
