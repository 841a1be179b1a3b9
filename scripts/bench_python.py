"""The Polars plugin of the Python package against the Rust Polars API, on the same sentences.

Both sides run in this process, on one model load, through the same compiled engine: the
plugin as Python users call it (`pl.col("tokens").span_marker.predict(...)` in an eager
`select` and in a streaming lazy plan) and the Rust API (`col("tokens").span_marker()
.predict_with(...)` in a Rust lazy plan, `span_marker_rs._native.rust_polars_predict`). Each
timing is the median of `--repeats` runs after a warm-up, the three paths interleaved; the
entities must be equal.

    .venv-python scripts/bench_python.py --data /data/conll2003/test.txt --model bundled

Run through `bash scripts/bench_python.sh`, which builds and installs the release wheel first.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import polars as pl
import torch

import span_marker_rs
from span_marker_rs import _native
from span_marker_rs.polars import _predict_kwargs


def read_conll(path: Path, limit: int) -> pl.DataFrame:
    sentences: list[list[str]] = []
    words: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if not parts or parts[0] == "-DOCSTART-":
            if words:
                sentences.append(words)
                words = []
            continue
        words.append(parts[0])
    if words:
        sentences.append(words)
    return pl.DataFrame({"tokens": sentences[:limit]}, schema={"tokens": pl.List(pl.String)})


def median_seconds(runs: dict, repeats: int) -> dict:
    """Median time of each run, the runs interleaved (in a rotating order) so that the
    machine's drift over the benchmark is shared by all of them."""
    for run in runs.values():
        run()  # warm-up: loads the model, fills caches
    times: dict = {name: [] for name in runs}
    names = list(runs)
    for repeat in range(repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="a CoNLL file (word first)")
    parser.add_argument("--model", default="bundled")
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=_native.DEFAULT_BATCH_SIZE)
    args = parser.parse_args()

    frame = read_conll(args.data, args.sentences)
    kwargs = _predict_kwargs(args.model, batch_size=args.batch_size)
    expr = pl.col("tokens").span_marker.predict(args.model, batch_size=args.batch_size)

    results = {}
    results["rust"] = _native.rust_polars_predict(frame, "tokens", False, kwargs)["tokens"]
    results["eager"] = frame.select(expr)["tokens"]
    results["streaming"] = frame.lazy().select(expr).collect(engine="streaming")["tokens"]
    assert results["eager"].to_list() == results["rust"].to_list(), "eager differs"
    # The streaming engine batches rows its own way: scores may differ in the last bit.
    strip = lambda rows: [[(e["start"], e["end"], e["label"]) for e in r] for r in rows]  # noqa: E731
    assert strip(results["streaming"].to_list()) == strip(results["rust"].to_list())

    timings = median_seconds(
        {
            "Rust Polars API": lambda: _native.rust_polars_predict(
                frame, "tokens", False, kwargs
            ),
            "plugin, eager select": lambda: frame.select(expr),
            "plugin, streaming lazy": lambda: frame.lazy().select(expr).collect(
                engine="streaming"
            ),
        },
        args.repeats,
    )
    rust = timings["Rust Polars API"]
    words = frame["tokens"].list.len().sum()
    print(
        f"{frame.height} sentences ({words} words) of {args.data.name}, model {args.model}, "
        f"batch size {args.batch_size}, span_marker_rs {span_marker_rs.__version__}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}"
    )
    print("entities equal on every path: yes (streaming: spans and labels)")
    for name, seconds in timings.items():
        print(
            f"{name:24} {frame.height / seconds:8.1f} sentences/s  "
            f"({seconds:.3f} s, {rust / seconds:.3f}x the Rust API)"
        )


if __name__ == "__main__":
    main()
