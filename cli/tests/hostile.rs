//! The `span-marker` binary under hostile invocations: out-of-range numbers, missing, corrupt
//! and mistyped files, broken models, bad SQL settings, odd text and a closed standard output.
//! Every case must end in a clear error that names what was wrong (or in a normal result),
//! never in a panic, an abort, a crash or a C++ stack trace.
//!
//! The cases run against the binary cargo built for the tests (a debug build, whose integer
//! overflow checks make it stricter than the release binary); `SPAN_MARKER_BIN` points the
//! test at another binary, e.g. the release build (`scripts/hostile.sh`).

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/common/corpus.rs"]
mod corpus;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// What a case must end in.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Success.
    Runs,
    /// A failure whose message holds every one of these strings.
    Fails(&'static [&'static str]),
    /// Success or a clean failure (input whose treatment is a matter of policy).
    Either,
    /// A bug in a library that this project cannot fix from outside: it must end in the
    /// "internal error" report (exit code 70) or in a clean error, never in a crash. The
    /// string names the upstream bug.
    Upstream(&'static str),
}

struct Case {
    /// The class of hostile input, for the summary.
    class: &'static str,
    args: Vec<String>,
    stdin: Option<Vec<u8>>,
    expect: Expect,
}

/// Text on standard error that must never reach a user ("internal error" is the report of a
/// bug, allowed only in the [`Expect::Upstream`] cases).
const FORBIDDEN: [&str; 9] = [
    "internal error",
    "panicked",
    "stack backtrace",
    "Exception raised from",
    "frame #",
    "terminate called",
    "core dumped",
    "Segmentation fault",
    "RUST_BACKTRACE",
];

fn binary() -> PathBuf {
    std::env::var_os("SPAN_MARKER_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_span-marker")),
        PathBuf::from,
    )
}

/// Runs one case; `Err` says how it went wrong.
fn run(case: &Case) -> Result<(), String> {
    let mut child = Command::new(binary())
        .current_dir(common::repo())
        .args(&case.args)
        .stdin(if case.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    if let Some(input) = &case.stdin {
        let mut stdin = child.stdin.take().unwrap();
        // The process may stop reading early; that is its right.
        let _ = stdin.write_all(input);
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if let Expect::Upstream(bug) = case.expect {
        let clean = FORBIDDEN.iter().all(|f| !stderr.contains(f));
        return match out.status.code() {
            Some(70) if stderr.contains("error: internal error") => Ok(()),
            Some(1) if clean && stderr.contains("error: ") => Ok(()),
            _ => Err(format!(
                "expected the internal-error report for {bug}, got {:?}:\n{stderr}",
                out.status
            )),
        };
    }
    if let Some(bad) = FORBIDDEN.iter().find(|f| stderr.contains(*f)) {
        return Err(format!("stderr shows {bad:?}:\n{stderr}"));
    }
    let Some(code) = out.status.code() else {
        return Err(format!("killed by a signal ({:?}):\n{stderr}", out.status));
    };
    if [101, 134, 139].contains(&code) {
        return Err(format!("exit code {code}:\n{stderr}"));
    }
    match case.expect {
        Expect::Runs if code != 0 => Err(format!("failed (exit {code}):\n{stderr}")),
        Expect::Fails(_) if code == 0 => Err("succeeded, but should have failed".into()),
        Expect::Fails(needles) => {
            if !stderr.contains("error") {
                return Err(format!("no error message:\n{stderr}"));
            }
            match needles.iter().find(|n| !stderr.contains(*n)) {
                Some(missing) => Err(format!("the error does not say {missing:?}:\n{stderr}")),
                None => Ok(()),
            }
        }
        Expect::Either if code != 0 && !stderr.contains("error") => Err(format!(
            "failed (exit {code}) without an error message:\n{stderr}"
        )),
        _ => Ok(()),
    }
}

/// A copy of the small CoNLL-2003 test model in `dir/name`, changed by `edit`.
fn model_copy(dir: &Path, name: &str, edit: impl FnOnce(&Path)) -> String {
    let to = dir.join(name);
    std::fs::create_dir_all(&to).unwrap();
    let from = common::conll_tiny();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    edit(&to);
    to.to_str().unwrap().to_owned()
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let path = dir.join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, config.to_string()).unwrap();
}

/// Overwrites the first value of tensor `name` in a safetensors file with `value` (float32).
fn poke_safetensors(path: &Path, name: &str, value: f32) {
    let mut bytes = std::fs::read(path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let start = header[name]["data_offsets"][0].as_u64().unwrap() as usize + 8 + header_len;
    bytes[start..start + 4].copy_from_slice(&value.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

/// A pipeline file: `pipelines/toy.toml` with `from` replaced by `to`.
fn pipeline(dir: &Path, name: &str, from: &str, to: &str) -> String {
    let toy = std::fs::read_to_string(common::repo().join("pipelines/toy.toml")).unwrap();
    assert!(toy.contains(from), "{from:?} is not in pipelines/toy.toml");
    let text = toy
        .replace(from, to)
        .replace("\"../", &format!("\"{}/", common::repo().display()));
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[rustfmt::skip] // a table: one case a line
fn cases(dir: &Path) -> Vec<Case> {
    let p = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    // Files.
    corpus::write_corpus(&dir.join("corpus.parquet"), 40, &[3]);
    let corpus_bytes = std::fs::read(dir.join("corpus.parquet")).unwrap();
    std::fs::write(
        p("truncated.parquet"),
        &corpus_bytes[..corpus_bytes.len() / 2],
    )
    .unwrap();
    let mut flipped = corpus_bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle..middle + 64]
        .iter_mut()
        .for_each(|b| *b ^= 0xa5);
    std::fs::write(p("flipped.parquet"), flipped).unwrap();
    std::fs::write(
        p("garbage.parquet"),
        b"PAR1 this is not parquet at all PAR1",
    )
    .unwrap();
    std::fs::write(p("empty.parquet"), b"").unwrap();
    std::fs::write(p("empty.txt"), b"").unwrap();
    std::fs::write(p("latin1.txt"), b"Caf\xe9 in M\xfcnchen\n").unwrap();
    std::fs::write(p("long-word.txt"), "x".repeat(100_000)).unwrap();
    std::fs::write(p("long-sentence.txt"), "Paris ".repeat(20_000)).unwrap();
    std::fs::write(p("bad.conll"), "EU B-ORG\nrejects\n").unwrap();
    std::fs::write(p("unknown-tag.conll"), "EU B-FOO\nrejects O\n").unwrap();
    std::fs::write(p("bad-args.json"), "{\"learning_rate\": }").unwrap();
    // Models.
    let m_noweights = model_copy(dir, "m-noweights", |d| {
        std::fs::remove_file(d.join("model.safetensors")).unwrap()
    });
    let m_trunc = model_copy(dir, "m-trunc", |d| {
        let path = d.join("model.safetensors");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    });
    let m_badjson = model_copy(dir, "m-badjson", |d| {
        std::fs::write(d.join("config.json"), "{\"model_type\": ").unwrap()
    });
    let m_badtok = model_copy(dir, "m-badtok", |d| {
        std::fs::write(d.join("tokenizer.json"), "[1, 2, 3]").unwrap()
    });
    let m_nan = model_copy(dir, "m-nan", |d| {
        poke_safetensors(&d.join("model.safetensors"), "classifier.weight", f32::NAN)
    });
    let m_heads = model_copy(dir, "m-heads", |d| {
        edit_config(d, |c| c["encoder"]["num_attention_heads"] = 0.into())
    });
    let m_layers = model_copy(dir, "m-layers", |d| {
        edit_config(d, |c| {
            c["encoder"]["num_hidden_layers"] = 100_000_000.into()
        })
    });
    let m_hidden = model_copy(dir, "m-hidden", |d| {
        edit_config(d, |c| c["encoder"]["hidden_size"] = (-128).into())
    });
    let m_labels = model_copy(dir, "m-labels", |d| {
        edit_config(d, |c| c["id2label"] = serde_json::json!({}))
    });
    let m_entity = model_copy(dir, "m-entity", |d| {
        edit_config(d, |c| c["entity_max_length"] = 0.into())
    });
    let m_pickle = model_copy(dir, "m-pickle", |d| {
        std::fs::remove_file(d.join("model.safetensors")).unwrap();
        std::fs::write(d.join("pytorch_model.bin"), b"PK\x03\x04 not really").unwrap();
    });
    // Pipelines.
    let pl_syntax = pipeline(dir, "syntax.toml", "[training]", "[training");
    let pl_type = pipeline(dir, "type.toml", "learning_rate = 5e-3", "learning_rate = \"fast\"");
    let pl_key = pipeline(dir, "key.toml", "learning_rate = 5e-3", "lerning_rate = 5e-3");
    let pl_metric = pipeline(dir, "metric.toml", "\"overall_f1\"", "\"f2\"");
    let pl_lr = pipeline(dir, "lr.toml", "learning_rate = 5e-3", "learning_rate = -1.0");
    let pl_data = pipeline(dir, "data.toml", "examples/data/train.txt", "examples/data/nope.txt");
    let pl_entity = pipeline(dir, "entity.toml", "entity_max_length = 6", "entity_max_length = 0");
    let pl_model = pipeline(dir, "model.toml", "tests/fixtures/encoders/tiny-bert", "nope/enc");

    let mut cases = Vec::new();
    let mut add = |class: &'static str, args: &[&str], stdin: Option<&[u8]>, expect: Expect| {
        cases.push(Case {
            class,
            args: args.iter().map(|a| a.to_string()).collect(),
            stdin: stdin.map(<[u8]>::to_vec),
            expect,
        })
    };
    use Expect::*;

    // Numbers out of range or of the wrong type.
    let n = "out-of-range or mistyped numbers";
    add(n, &["predict", "--batch-size", "0", "x"], None, Fails(&["batch_size"]));
    add(n, &["predict", "--batch-size", "99999999999", "x"], None, Fails(&["batch_size", "65536"]));
    add(n, &["predict", "--batch-size", "-1", "x"], None, Fails(&[]));
    add(n, &["predict", "--batch-size", "abc", "x"], None, Fails(&["abc"]));
    add(n, &["predict", "--batch-size", "1e3", "x"], None, Fails(&["1e3"]));
    add(n, &["predict", "--threshold", "2", "x"], None, Fails(&["threshold"]));
    add(n, &["predict", "--threshold", "nan", "x"], None, Fails(&["threshold"]));
    add(n, &["predict", "--threshold=-0.5", "x"], None, Fails(&["threshold"]));
    add(n, &["predict", "--threshold", "inf", "x"], None, Fails(&["threshold"]));
    add(n, &["annotate", "--input", &p("corpus.parquet"), "--output", &p("o-chunk0.parquet"), "--chunk-rows", "0"], None, Fails(&["chunk_rows"]));
    add(n, &["annotate", "--input", &p("corpus.parquet"), "--output", &p("o-chunkbig.parquet"), "--chunk-rows", "99999999999999"], None, Fails(&["chunk_rows"]));
    add(n, &["annotate", "--input", &p("corpus.parquet"), "--output", &p("o-batch.parquet"), "--batch-size", "99999999999"], None, Fails(&["batch_size"]));
    add(n, &["annotate", "--input", &p("corpus.parquet"), "--output", &p("o-show.parquet"), "--show", "99999999999"], None, Runs);
    add(n, &["candidates", "--show", "99999999999"], None, Runs);
    add(n, &["candidates", "--show", "-3"], None, Fails(&[]));
    add(n, &["evaluate", "--data", "examples/data/test.txt", "--format", "conll", "--batch-size", "0"], None, Fails(&["batch_size"]));
    add(n, &["evaluate", "--data", "examples/data/test.txt", "--format", "conll", "--batch-size", "99999999999"], None, Fails(&["batch_size"]));
    add(n, &["train", "--train", "examples/data/train.txt", "--model", "tests/fixtures/encoders/tiny-bert", "--max-steps", "0", "--output-dir", &p("t-steps")], None, Fails(&["max_steps"]));
    add(n, &["train", "--train", "examples/data/train.txt", "--model", "tests/fixtures/encoders/tiny-bert", "--num-train-epochs", "nan", "--output-dir", &p("t-nan")], None, Fails(&["num_train_epochs"]));
    add(n, &["train", "--train", "examples/data/train.txt", "--model", "tests/fixtures/encoders/tiny-bert", "--num-train-epochs=-2", "--output-dir", &p("t-neg")], None, Fails(&["num_train_epochs"]));
    add(n, &["train", "--train", "examples/data/train.txt", "--model", "tests/fixtures/encoders/tiny-bert", "--entity-max-length", "0", "--output-dir", &p("t-e0")], None, Fails(&["entity_max_length"]));
    add(n, &["train", "--train", "examples/data/train.txt", "--model", "tests/fixtures/encoders/tiny-bert", "--marker-max-length", "99999999999", "--output-dir", &p("t-mbig")], None, Fails(&["marker_max_length"]));
    add(n, &["train", "--train", "examples/data/train.txt", "--model", "tests/fixtures/encoders/tiny-bert", "--model-max-length", "3", "--output-dir", &p("t-m3")], None, Fails(&["model_max_length"]));

    // Settings and arguments that name nothing valid.
    let s = "invalid names and settings";
    add(s, &["predict", "--precision", "int3", "x"], None, Fails(&["int3"]));
    add(s, &["predict", "--device", "tpu", "x"], None, Fails(&["tpu"]));
    add(s, &["predict", "--device", "cuda:99", "x"], None, Fails(&["cuda"]));
    add(s, &["predict", "--nonsense"], None, Fails(&["--nonsense"]));
    add(s, &["predict", "--batch-size"], None, Fails(&["--batch-size"]));
    add(s, &["predict", "--file", &p("empty.txt"), "also-an-argument"], None, Fails(&["not both"]));
    add(s, &["annotate"], None, Fails(&["--input"]));
    add(s, &["annotate", "--input", &p("corpus.parquet"), "--output", &p("o-col.parquet"), "--tokens-column", "nope"], None, Fails(&["nope"]));
    add(s, &["annotate", "--input", &p("corpus.parquet"), "--output", &p("o-type.parquet"), "--text-column", "tokens"], None, Fails(&["tokens"]));
    add(s, &["annotate", "--input", &p("corpus.parquet"), "--output", &p("o-outcol.parquet"), "--output-column", "tokens"], None, Fails(&["tokens", "already has"]));
    add(s, &["evaluate", "--data", "examples/data/test.txt", "--format", "exe"], None, Fails(&["exe"]));
    add(s, &["evaluate", "--data", &p("corpus.parquet"), "--tags-column", "nope"], None, Fails(&["nope"]));
    add(s, &["train", "--train", "examples/data/train.txt", "--model", "tests/fixtures/encoders/tiny-bert", "--labels", "O,B-PER,C-X", "--output-dir", &p("t-labels")], None, Fails(&["C-X"]));
    add(s, &["train", "--train", "examples/data/train.txt", "--model", "tests/fixtures/encoders/tiny-bert", "--resume", &p("no-checkpoint"), "--output-dir", &p("t-resume")], None, Fails(&["no-checkpoint"]));
    add(s, &["train"], None, Fails(&[]));

    // SQL statements and session settings.
    let q = "SQL statements and settings";
    add(q, &["sql", "SELEC 1"], None, Fails(&["SELEC"]));
    add(q, &["sql", "SET span_marker.batch_size = 'abc'"], None, Fails(&["batch_size", "abc"]));
    add(q, &["sql", "SET span_marker.batch_size = 0", "SELECT span_marker_predict(['Paris'])"], None, Fails(&["span_marker.batch_size"]));
    add(q, &["sql", "SET span_marker.batch_size = 99999999999", "SELECT span_marker_predict(['Paris'])"], None, Fails(&["span_marker.batch_size"]));
    add(q, &["sql", "SET span_marker.threshold = 5", "SELECT span_marker_predict(['Paris'])"], None, Fails(&["span_marker.threshold"]));
    add(q, &["sql", "SET span_marker.threshold = 'high'"], None, Fails(&["threshold", "high"]));
    add(q, &["sql", "SET span_marker.nope = 1"], None, Fails(&["nope"]));
    add(q, &["sql", "SET span_marker.precision = 'fp99'", "SELECT span_marker_predict(['Paris'])"], None, Fails(&["span_marker.precision", "fp99"]));
    add(q, &["sql", "SET span_marker.device = 'cuda:7'", "SELECT span_marker_predict(['Paris'])"], None, Fails(&["cuda"]));
    add(q, &["sql", "SET span_marker.model = '/nonexistent/model'", "SELECT span_marker_predict(['Paris'])"], None, Fails(&["/nonexistent/model"]));
    add(q, &["sql", "SELECT span_marker_predict(1)"], None, Fails(&["span_marker_predict"]));
    add(q, &["sql", "SELECT span_marker_predict()"], None, Fails(&["span_marker_predict"]));
    add(q, &["sql", "SELECT span_marker_predict_text(NULL)"], None, Runs);
    add(q, &["sql", "SELECT span_marker_predict([NULL, 'Paris'])"], None, Either);
    add(q, &["sql", "SELECT span_marker_candidates(['a', 'b'], 0)"], None, Fails(&["entity_max_length"]));
    add(q, &["sql", "SELECT span_marker_candidates(['a', 'b'], -3)"], None, Fails(&["entity_max_length"]));
    add(q, &["sql", "SELECT span_marker_candidates(['a', 'b'], 99999999999)"], None, Runs);
    add(q, &["sql", &format!("SELECT * FROM '{}'", p("missing.parquet"))], None, Fails(&["missing.parquet"]));
    // parquet 59.3's metadata push decoder (DataFusion's reader of file tables) slices out
    // of range on a footer claiming more metadata than the file holds; the sources of
    // pipelines, `evaluate` and `annotate` check footers first, SQL file tables cannot.
    add(q, &["sql", &format!("SELECT count(*) FROM '{}'", p("garbage.parquet"))], None, Upstream("parquet 59.3 push_decoder.rs:391, unchecked metadata length"));

    // Missing, unreadable and corrupt input files.
    let f = "missing, unreadable or corrupt input files";
    add(f, &["predict", "--file", &p("missing.txt")], None, Fails(&["missing.txt"]));
    add(f, &["predict", "--file", &p("")], None, Fails(&[]));
    add(f, &["predict", "--file", &p("latin1.txt")], None, Fails(&["latin1.txt", "UTF-8"]));
    add(f, &["predict", "-"], Some(b"Caf\xe9\n"), Fails(&["stdin"]));
    add(f, &["candidates", &p("missing.txt")], None, Fails(&["missing.txt"]));
    add(f, &["candidates", &p("latin1.txt")], None, Fails(&["latin1.txt"]));
    for name in ["missing", "garbage", "truncated", "empty", "flipped"] {
        let input = p(&format!("{name}.parquet"));
        let output = p(&format!("o-{name}.parquet"));
        let needle: &'static str = Box::leak(format!("{name}.parquet").into_boxed_str());
        let needles: &'static [&'static str] = Box::leak(vec![needle].into_boxed_slice());
        add(f, &["annotate", "--input", &input, "--output", &output], None, Fails(needles));
    }
    add(f, &["annotate", "--input", &p("corpus.parquet"), "--output", &p("corpus.parquet")], None, Fails(&["already exists"]));
    add(f, &["annotate", "--input", &p("corpus.parquet"), "--output", "/proc/no/such/out.parquet"], None, Fails(&["/proc/no/such"]));
    add(f, &["evaluate", "--data", &p("missing.conll")], None, Fails(&["missing.conll"]));
    add(f, &["evaluate", "--data", &p("bad.conll"), "--format", "conll"], None, Fails(&["bad.conll:2", "expected `word TAG`"]));
    add(f, &["evaluate", "--data", &p("unknown-tag.conll"), "--format", "conll"], None, Fails(&["B-FOO"]));
    add(f, &["evaluate", "--data", &p("truncated.parquet")], None, Fails(&["truncated.parquet"]));
    add(f, &["evaluate", "--data", &p("garbage.parquet")], None, Fails(&["garbage.parquet"]));
    add(f, &["evaluate", "--data", &p("flipped.parquet")], None, Fails(&["flipped.parquet"]));
    add(f, &["train", "--train", &p("missing.txt"), "--model", "tests/fixtures/encoders/tiny-bert", "--output-dir", &p("t-missing")], None, Fails(&["missing.txt"]));
    add(f, &["train", "--train", &p("bad.conll"), "--model", "tests/fixtures/encoders/tiny-bert", "--output-dir", &p("t-bad")], None, Fails(&["bad.conll"]));
    add(f, &["train", "--train", "examples/data/train.txt", "--model", "tests/fixtures/encoders/tiny-bert", "--args", &p("bad-args.json"), "--output-dir", &p("t-args")], None, Fails(&["bad-args.json"]));
    add(f, &["train", "--train", "examples/data/train.txt", "--model", "tests/fixtures/encoders/tiny-bert", "--output-dir", "/proc/no/such/run"], None, Fails(&["/proc/no/such/run"]));

    // Broken or hostile model directories.
    let m = "broken model directories";
    let mut model_case = |dir: String, needle: &'static [&'static str]| {
        add(m, &["predict", "--model", &dir, "Angela Merkel visited Paris."], None, Fails(needle));
    };
    model_case(p("no-such-model"), &["no-such-model"]);
    model_case(p("corpus.parquet"), &["corpus.parquet"]);
    model_case(m_noweights, &["no weights"]);
    model_case(m_trunc, &["model.safetensors"]);
    model_case(m_badjson, &["config.json"]);
    model_case(m_badtok, &["tokenizer"]);
    model_case(m_nan, &["classifier.weight", "non-finite"]);
    model_case(m_heads, &["num_attention_heads"]);
    model_case(m_layers, &["num_hidden_layers"]);
    model_case(m_hidden, &["hidden_size"]);
    model_case(m_labels, &["label"]);
    model_case(m_entity, &["entity_max_length"]);
    model_case(m_pickle, &["pytorch_model.bin"]);

    // Pipeline files.
    let l = "pipeline files";
    add(l, &["train", &p("missing.toml")], None, Fails(&["missing.toml"]));
    add(l, &["train", &pl_syntax], None, Fails(&["syntax.toml"]));
    add(l, &["train", &pl_type], None, Fails(&["type.toml", "learning_rate", "expected f64", "\"fast\""]));
    add(l, &["train", &pl_key], None, Fails(&["key.toml", "lerning_rate"]));
    add(l, &["train", &pl_metric], None, Fails(&["metric.toml", "metric_for_best_model", "f2"]));
    add(l, &["train", &pl_lr], None, Fails(&["lr.toml", "learning_rate"]));
    add(l, &["train", &pl_data], None, Fails(&["nope.txt"]));
    add(l, &["train", &pl_entity], None, Fails(&["entity_max_length"]));
    add(l, &["train", &pl_model], None, Fails(&["nope/enc"]));

    // Odd text: empty, blank, huge, control characters, scripts, invalid words.
    let t = "odd text";
    add(t, &["predict", ""], None, Runs);
    add(t, &["predict", "   \t  "], None, Runs);
    add(t, &["predict", "--file", &p("empty.txt")], None, Runs);
    add(t, &["predict", "--words", "a  b"], None, Either);
    add(t, &["predict", "--words", ""], None, Runs);
    add(t, &["predict", "--file", &p("long-word.txt")], None, Either);
    add(t, &["predict", "--file", &p("long-sentence.txt")], None, Runs);
    add(t, &["predict", "\u{1}\u{7}\u{1b}[31m Paris \u{feff}"], None, Either);
    add(t, &["predict", "مرحبا بكم في القاهرة 🎉 e\u{301}te\u{301} in Zürich"], None, Runs);
    add(t, &["predict", "--json", "Angela Merkel\u{2028}visited Paris."], None, Runs);
    add(t, &["predict", "-"], Some("Paris\r\nBerlin\r\n\r\n".as_bytes()), Runs);
    add(t, &["candidates", "--strict", &p("long-sentence.txt")], None, Fails(&["model_max_length"]));
    add(t, &["candidates", "--words", &p("long-word.txt")], None, Either);
    cases
}

#[test]
fn hostile_invocations_end_in_clear_errors_never_in_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let cases = cases(dir.path());
    let mut failures = Vec::new();
    let mut per_class: Vec<(&str, usize)> = Vec::new();
    for case in &cases {
        match per_class.iter_mut().find(|(class, _)| *class == case.class) {
            Some((_, count)) => *count += 1,
            None => per_class.push((case.class, 1)),
        }
        if let Err(why) = run(case) {
            failures.push(format!("span-marker {:?}: {why}", case.args));
        }
    }
    for (class, count) in &per_class {
        eprintln!("{count:4} cases: {class}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} hostile invocations went wrong:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// A reader that stops early (`span-marker predict --file big.txt | head -1`): the process
/// ends quietly, by SIGPIPE like other command-line tools, or successfully.
#[test]
fn a_closed_standard_output_ends_the_run_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.txt");
    std::fs::write(
        &big,
        "Angela Merkel visited Paris on Tuesday.\n".repeat(5000),
    )
    .unwrap();
    let mut child = Command::new(binary())
        .current_dir(common::repo())
        .args(["predict", "--file", big.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        FORBIDDEN.iter().all(|f| !stderr.contains(f)) && !stderr.contains("Broken pipe"),
        "{stderr}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert!(
            out.status.success() || out.status.signal() == Some(SIGPIPE),
            "{:?}: {stderr}",
            out.status
        );
    }
}

/// The signal a write to a closed pipe raises (Linux, macOS).
#[cfg(unix)]
const SIGPIPE: i32 = 13;
