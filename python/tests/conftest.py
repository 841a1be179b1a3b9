"""Shared fixtures: the repository's models and sentences, and the Rust command line that the
Python results are compared with (``SPAN_MARKER_BIN``, set by scripts/test.sh)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import polars as pl
import pytest

REPO = Path(__file__).resolve().parents[2]
# A SpanMarker model trained on CoNLL-2003 (small and fast), and the bundled MiniLM model.
TINY_MODEL = str(REPO / "tests/fixtures/span-marker/conll-tiny")
TINY_ENCODER = str(REPO / "tests/fixtures/encoders/tiny-bert")


def read_conll(path: Path) -> pl.DataFrame:
    """Sentences of a CoNLL file (`word tag` lines, blank between sentences)."""
    sentences: list[tuple[list[str], list[str]]] = []
    words: list[str] = []
    tags: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if words:
                sentences.append((words, tags))
                words, tags = [], []
            continue
        word, tag = line.split()
        words.append(word)
        tags.append(tag)
    if words:
        sentences.append((words, tags))
    return pl.DataFrame(
        {
            "id": list(range(len(sentences))),
            "tokens": [w for w, _ in sentences],
            "ner_tags": [t for _, t in sentences],
        },
        schema={"id": pl.Int64, "tokens": pl.List(pl.String), "ner_tags": pl.List(pl.String)},
    )


@pytest.fixture(scope="session")
def sentences() -> pl.DataFrame:
    """The toy test split: 250 sentences with their tags, ids in order."""
    return read_conll(REPO / "examples/data/test.txt")


@pytest.fixture(scope="session")
def train_rows() -> pl.DataFrame:
    return read_conll(REPO / "examples/data/train.txt")


@pytest.fixture(scope="session")
def span_marker_bin() -> str:
    path = os.environ.get("SPAN_MARKER_BIN")
    if not path or not Path(path).is_file():
        pytest.fail(
            "SPAN_MARKER_BIN must name the span-marker binary (run the tests with "
            "`bash scripts/test.sh`, which builds it)"
        )
    return path


def run_cli(binary: str, *args: str, cwd: Path | None = None) -> str:
    """Runs the Rust command line; a failure shows its standard error."""
    done = subprocess.run(
        [binary, *args], capture_output=True, text=True, cwd=cwd, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"span-marker {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def rust_annotate(
    binary: str, frame: pl.DataFrame, tmp_path: Path, *args: str, column: str = "tokens"
) -> list:
    """The entity column that `span-marker annotate` (the Rust engine) writes for ``frame``."""
    source = tmp_path / "rust-in.parquet"
    output = tmp_path / "rust-out.parquet"
    frame.write_parquet(source)
    flag = "--tokens-column" if column == "tokens" else "--text-column"
    run_cli(
        binary, "annotate", "--input", str(source), "--output", str(output), flag, column, *args
    )
    annotated = pl.read_parquet(output)
    assert annotated["id"].to_list() == frame["id"].to_list()
    output.unlink()
    return annotated["entities"].to_list()


def assert_same_entities(actual: list, expected: list) -> None:
    """Row by row: the same spans and labels, scores equal to float32 rounding."""
    assert len(actual) == len(expected)
    for row, (got, want) in enumerate(zip(actual, expected)):
        if want is None:
            assert got is None, f"row {row}"
            continue
        assert got is not None, f"row {row}"
        strip = lambda entities: [{k: v for k, v in e.items() if k != "score"} for e in entities]  # noqa: E731
        assert strip(got) == strip(want), f"row {row}"
        for g, w in zip(got, want):
            assert g["score"] == pytest.approx(w["score"], abs=1e-5), f"row {row}"
