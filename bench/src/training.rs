//! Training runs of both sides from the same checkpoint, and the F1 each reaches.

use span_marker::device::{matmul_peak_gflops, Precision};
use span_marker::metrics::{score_entities, EntityScores};
use span_marker::train::{IntervalStrategy, NerDataset, Trainer, TrainingArguments};
use span_marker::{Entity, Labels, PredictOptions, SentenceInput, SpanMarkerModel};
use std::io::Write;

use crate::python::run_python;
use crate::system::{device_name, median, peak_rss_mb};
use crate::BenchOptions;
use crate::{borrowed_words, triples, Entities};

/// Entity precision, recall and F1 of `predicted` against the gold entities of `eval` (all of
/// them, however long), by the scorer of this crate's evaluation: both implementations are
/// scored by the same code.
pub(crate) fn eval_scores(
    labels: &Labels,
    eval: &NerDataset,
    predicted: &Entities,
) -> Result<EntityScores, Box<dyn std::error::Error>> {
    let names = labels.reduced();
    let gold = eval
        .examples
        .iter()
        .enumerate()
        .map(|(row, e)| labels.tags_to_entities(&e.tags, row))
        .collect::<Result<Vec<_>, _>>()?;
    let predicted = predicted
        .iter()
        .map(|sentence| {
            sentence
                .iter()
                .map(|(start, end, label)| {
                    let id = names
                        .iter()
                        .position(|name| name == label)
                        .ok_or_else(|| format!("predicted label {label:?} is not the model's"))?;
                    Ok(Entity::new(id, *start, *end))
                })
                .collect::<Result<Vec<_>, String>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let num_words: Vec<usize> = eval.examples.iter().map(|e| e.tokens.len()).collect();
    Ok(score_entities(&gold, &predicted, &num_words, names))
}

/// Trains `options.train_steps` steps here and, when asked, in Python from the same checkpoint,
/// `options.repeat` times each with seeds 0, 1, ... (which order the batches and draw the
/// dropout masks); with `eval`, scores every trained model on it, to compare the F1 that both
/// reach along with the speed.
pub(crate) fn bench_training(
    labels: &Labels,
    data: &NerDataset,
    eval: Option<&NerDataset>,
    options: &BenchOptions,
) -> Result<(), Box<dyn std::error::Error>> {
    let runs = options.repeat.max(1);
    let peak = matmul_peak_gflops(options.device)?;
    let mut rates = Vec::with_capacity(runs);
    let mut flop_rates = Vec::with_capacity(runs);
    let mut scores = Vec::with_capacity(runs);
    let eval_sentences: Vec<Vec<String>> = eval
        .map(|eval| eval.examples.iter().map(|e| e.tokens.clone()).collect())
        .unwrap_or_default();
    let eval_words = borrowed_words(&eval_sentences);
    let eval_inputs: Vec<SentenceInput<'_>> =
        eval_words.iter().map(|w| SentenceInput::Words(w)).collect();
    let eval_options = PredictOptions {
        batch_size: options.batch_size,
        ..Default::default()
    };
    for seed in 0..runs {
        let mut model = SpanMarkerModel::from_pretrained(&options.model)?;
        let out = tempfile::tempdir()?;
        let args = TrainingArguments {
            output_dir: out.path().join("run"),
            max_steps: Some(options.train_steps),
            per_device_train_batch_size: options.batch_size,
            learning_rate: options.learning_rate,
            seed: seed as u64,
            shuffle: !options.in_order,
            group_by_length: options.group_by_length,
            save_strategy: IntervalStrategy::No,
            logging_strategy: IntervalStrategy::No,
            device: device_name(options.device),
            bf16: options.precision == Precision::BFloat16,
            fp16: options.precision == Precision::Float16,
            ..Default::default()
        };
        let output = Trainer::new(&mut model, args)?.train(data, None, None)?;
        rates.push(
            output.metrics["train_samples_per_second"]
                .as_f64()
                .unwrap_or(f64::NAN),
        );
        // Forward passes counted, backward passes taken as twice a forward's.
        flop_rates.push(
            3.0 * model.flops_executed() as f64
                / output.metrics["train_runtime"].as_f64().unwrap_or(f64::NAN),
        );
        if let Some(eval) = eval {
            let predicted = triples(model.predict(&eval_inputs, &eval_options)?);
            scores.push(eval_scores(labels, eval, &predicted)?);
        }
    }
    let rust_rate = median(&mut rates);
    writeln!(span_marker_cli::stdout(), "rust:   {rust_rate:10.1} samples/s over {} steps of {} samples (median of {runs} seeds), peak RSS {:.0} MB{}",
        options.train_steps,
        options.batch_size,
        peak_rss_mb().unwrap_or(f64::NAN),
        scores_note(&scores))?;
    let flop_rate = median(&mut flop_rates) / 1e9;
    writeln!(span_marker_cli::stdout(), "        roofline: {flop_rate:.1} GFLOP/s of model FLOPs (forward passes as run, backward as twice a forward) = {:.0}% of the float32 matmul peak measured in this run ({peak:.0} GFLOP/s)",
        100.0 * flop_rate / peak)?;
    let Some(python) = &options.python else {
        return Ok(());
    };
    let records = |data: &NerDataset| {
        serde_json::json!({
            "tokens": data.examples.iter().map(|e| &e.tokens).collect::<Vec<_>>(),
            "ner_tags": data.examples.iter().map(|e| &e.tags).collect::<Vec<_>>(),
        })
    };
    let input = serde_json::json!({"train": records(data), "eval": eval.map(records)});
    let value = run_python(python, options, &input)?;
    let rate = value["samples_per_second"].as_f64().unwrap_or(f64::NAN);
    let mut python_scores = Vec::new();
    if let Some(eval) = eval {
        let runs = serde_json::from_value::<Vec<Entities>>(value["eval_entities"].clone())?;
        for entities in &runs {
            python_scores.push(eval_scores(labels, eval, entities)?);
        }
    }
    writeln!(span_marker_cli::stdout(), "python: {rate:10.1} samples/s (median of {runs} seeds), peak RSS {:.0} MB (torch threads {}){}",
        value["peak_rss_mb"].as_f64().unwrap_or(f64::NAN),
        value["torch_threads"],
        scores_note(&python_scores))?;
    writeln!(
        span_marker_cli::stdout(),
        "ratio:  {:10.2}x",
        rust_rate / rate
    )?;
    Ok(())
}

/// `; eval P/R mean 0.xxxx/0.xxxx, F1 mean 0.xxxx, median 0.xxxx, min 0.xxxx (0.xxxx, ...)`
/// over the runs (F1 of each in seed order), when the models were evaluated.
pub(crate) fn scores_note(scores: &[EntityScores]) -> String {
    if scores.is_empty() {
        return String::new();
    }
    let mean_of =
        |get: fn(&EntityScores) -> f64| scores.iter().map(get).sum::<f64>() / scores.len() as f64;
    let f1s: Vec<f64> = scores.iter().map(|s| s.f1).collect();
    let mean = mean_of(|s| s.f1);
    let each: Vec<String> = f1s.iter().map(|f1| format!("{f1:.4}")).collect();
    let mut sorted = f1s;
    let median = median(&mut sorted);
    format!(
        "; eval P/R mean {:.4}/{:.4}, F1 mean {mean:.4}, median {median:.4}, min {:.4} ({})",
        mean_of(|s| s.precision),
        mean_of(|s| s.recall),
        sorted[0],
        each.join(", ")
    )
}
