"""Whole-process training against the Python reference, with where the time goes.

Trains one epoch of the same SpanMarker checkpoint on the first N sentences of a CoNLL file
twice: `span-marker train` as a whole process (start-up, data reading, model loading, training,
the final save), timed from outside, and Python `span_marker` 1.8.1 inside `trainer.train()`
only (as transformers times it), with the same settings and threads. Prints both wall times,
their ratio, the Rust run's phases (`time:` line of `span-marker train`) and its model FLOP rate
(the matrix products as run) against the float32 matmul peak measured here. With `--eval`, every
trained model (Rust's and Python's, one per seed) is scored by the same evaluator
(`span-marker evaluate`, at parity with Python's) on the first `--eval-sentences` sentences of
that file, and the F1 of each seed is printed per side.

Run from the repository root with the project's venv (`bash scripts/setup.sh`) and a release
build of the command line:

    .venv-python scripts/bench_train.py --model MODEL_DIR --data $CONLL2003_DIR/train.txt \
        --sentences 4000 --batch-size 16 [--bin target/release/span-marker] [--seeds 1] \
        [--eval $CONLL2003_DIR/dev.txt --eval-sentences 1000]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def first_sentences(path: Path, count: int, out: Path) -> int:
    """Writes the first `count` sentences of the CoNLL file `path` to `out`; returns the count."""
    sentences, lines = [], []
    for line in path.read_text().splitlines() + [""]:
        if line.startswith("-DOCSTART-"):
            continue
        if line.strip():
            lines.append(line)
        elif lines:
            sentences.append("\n".join(lines) + "\n")
            lines = []
            if len(sentences) == count:
                break
    out.write_text("\n".join(sentences))
    return len(sentences)


def python_run(args, data: Path, seed: int) -> dict:
    import torch
    from span_marker import SpanMarkerModel, Trainer
    from datasets import Dataset
    from transformers import TrainingArguments

    model = SpanMarkerModel.from_pretrained(args.model)
    # The tags as ids into the IOB label list the model was made with (the encoder config's).
    names = {name: int(i) for i, name in model.config.encoder["id2label"].items()}
    tokens, tags, words, sentence_tags = [], [], [], []
    for line in data.read_text().splitlines():
        if not line.strip():
            if words:
                tokens.append(words)
                tags.append(sentence_tags)
                words, sentence_tags = [], []
            continue
        parts = line.split()
        words.append(parts[0])
        sentence_tags.append(names[parts[-1]])
    if words:
        tokens.append(words)
        tags.append(sentence_tags)
    dataset = Dataset.from_dict({"tokens": tokens, "ner_tags": tags})
    with tempfile.TemporaryDirectory() as tmp:
        training_args = TrainingArguments(
            output_dir=tmp,
            num_train_epochs=1,
            per_device_train_batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            seed=seed,
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",
            report_to="none",
            use_cpu=True,
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=training_args, train_dataset=dataset)
        started = time.perf_counter()
        result = trainer.train()
        wall = time.perf_counter() - started
        out = Path(tmp) / "out"
        model.save_pretrained(out)
        f1 = evaluate(args, out)
    return {
        "wall": wall,
        "train_runtime": result.metrics["train_runtime"],
        "threads": torch.get_num_threads(),
        "optim": training_args.optim,
        "f1": f1,
    }


def evaluate(args, model: Path):
    """The overall F1 of `model` on the evaluation sentences, or None without `--eval`."""
    if args.eval_data is None:
        return None
    command = [args.bin, "evaluate", "--model", str(model), "--data", str(args.eval_data)]
    command += ["--format", "conll"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"span-marker evaluate failed:\n{done.stderr}")
    return json.loads(done.stdout)["test_overall_f1"]


def rust_run(args, data: Path, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        settings = {
            "num_train_epochs": 1,
            "per_device_train_batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "seed": seed,
            "save_strategy": "no",
            "logging_strategy": "no",
            "report_to": "none",
        }
        arguments = Path(tmp) / "args.json"
        arguments.write_text(json.dumps(settings))
        command = [args.bin, "train", "--model", args.model, "--train", str(data)]
        command += ["--args", str(arguments), "--output-dir", str(Path(tmp) / "out")]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            sys.exit(f"span-marker train failed:\n{done.stderr}")
        f1 = evaluate(args, Path(tmp) / "out")
    time_line = next(
        (line[len("time: ") :] for line in done.stderr.splitlines() if line.startswith("time: ")),
        "",
    )
    phases, _, flops = time_line.partition("; ")
    return {"wall": wall, "phases": phases, "model_flops": float(flops.split()[0]), "f1": f1}


def peak_gflops() -> float:
    """The float32 matmul rate of this machine's cores as libtorch runs it (square 1024)."""
    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _ in range(3):
        a @ b
    runs, started = 20, time.perf_counter()
    for _ in range(runs):
        a @ b
    return 2 * 1024**3 * runs / (time.perf_counter() - started) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a SpanMarker model directory")
    parser.add_argument("--data", required=True, type=Path, help="a CoNLL training file")
    parser.add_argument("--sentences", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--bin", default=os.environ.get("SPAN_MARKER_BIN", "target/release/span-marker"))
    parser.add_argument("--label", default="")
    parser.add_argument("--rust-only", action="store_true", help="skip the Python run")
    parser.add_argument("--eval", type=Path, help="a CoNLL file to score every trained model on")
    parser.add_argument("--eval-sentences", type=int, default=1000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.txt"
        count = first_sentences(args.data, args.sentences, data)
        args.eval_data = None
        if args.eval is not None:
            args.eval_data = Path(tmp) / "eval.txt"
            eval_count = first_sentences(args.eval, args.eval_sentences, args.eval_data)
        rust = [rust_run(args, data, seed) for seed in range(args.seeds)]
        python = [] if args.rust_only else [python_run(args, data, seed) for seed in range(args.seeds)]
    rust_wall = statistics.median(r["wall"] for r in rust)
    peak = peak_gflops()
    # The matrix products as run (forward counted, backward as twice the forward).
    flops = rust[0]["model_flops"]
    import torch

    print(f"== training, {args.label or args.model}, first {count} sentences of {args.data.name}, "
          f"1 epoch, batch {args.batch_size}, {torch.get_num_threads()} threads")
    print(f"rust:   {rust_wall:8.1f} s whole `span-marker train` process (median of {args.seeds})")
    print(f"        time: {rust[0]['phases']}")
    if python:
        python_wall = statistics.median(p["wall"] for p in python)
        print(f"python: {python_wall:8.1f} s inside trainer.train() (optim {python[0]['optim']})")
        print(f"ratio:  {python_wall / rust_wall:8.2f}x")
    if args.eval_data is not None:
        scores = lambda runs: ", ".join(f"{r['f1']:.4f}" for r in runs)  # noqa: E731
        print(f"F1 on the first {eval_count} sentences of {args.eval.name}, seeds 0..{args.seeds - 1}:")
        print(f"        rust   {scores(rust)} (mean {statistics.mean(r['f1'] for r in rust):.4f})")
        if python:
            print(f"        python {scores(python)} (mean {statistics.mean(p['f1'] for p in python):.4f})")
    print(f"        roofline: {flops / rust_wall / 1e9:.1f} GFLOP/s of model FLOPs (matrix products "
          f"as run, backward as twice the forward) over the whole process = "
          f"{100 * flops / rust_wall / 1e9 / peak:.0f}% of the float32 matmul peak measured here "
          f"({peak:.0f} GFLOP/s)")


if __name__ == "__main__":
    main()
