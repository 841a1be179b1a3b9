"""Hugging Face Hub datasets from Python, against the stand-in Hub (``span-marker-hub-standin``,
built by ``cargo test``; ``SPAN_MARKER_HUB_STANDIN_BIN``): a CoNLL-2003-shaped dataset made by
Python ``datasets`` (``tests/fixtures/make_hub_dataset.py``) is read by id with its ``ClassLabel``
names, offline from the cache, and the README's tutorial runs as written: it trains from the
dataset id, logs to TensorBoard, saves, pushes to the stand-in and tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO

import span_marker_rs

CONLL_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
TUTORIAL = "eriktks/conll2003"


def make_dataset(out: Path, layout: str) -> Path:
    subprocess.run(
        [
            sys.executable,
            str(REPO / "tests/fixtures/make_hub_dataset.py"),
            str(out),
            f"train={REPO / 'examples/data/train.txt'}",
            f"validation={REPO / 'examples/data/test.txt'}",
            f"test={REPO / 'examples/data/test.txt'}",
            "--layout",
            layout,
        ],
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The stand-in Hub's address; it serves the toy corpus as ``user/toy-ner`` (Parquet files)
    and as ``eriktks/conll2003`` (a loading script and the Hub's Parquet conversion), and the tiny
    RoBERTa fixture as ``FacebookAI/roberta-base``."""
    binary = os.environ.get("SPAN_MARKER_HUB_STANDIN_BIN")
    if not binary or not Path(binary).is_file():
        pytest.fail(
            "SPAN_MARKER_HUB_STANDIN_BIN must name the stand-in Hub binary (run the tests with "
            "`bash scripts/test.sh`, which builds it)"
        )
    work = tmp_path_factory.mktemp("hub")
    data = make_dataset(work / "data", "data")
    converted = make_dataset(work / "converted", "converted")
    script = work / "script"
    script.mkdir()
    (script / "conll2003.py").write_text("# a loading script\n")
    process = subprocess.Popen(
        [
            binary,
            "--token", "hf_tutor:tutor:write",
            "--token", "hf_fb:FacebookAI:write",
            "--dataset", f"user/toy-ner={data}",
            "--dataset", f"{TUTORIAL}={script}",
            "--dataset", f"{TUTORIAL}@refs/convert/parquet={converted}",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    endpoint = process.stdout.readline().strip()
    assert endpoint.startswith("http://127.0.0.1:"), endpoint
    # huggingface_hub reads HF_ENDPOINT when imported: it seeds the encoder in a process of its own.
    seed = (
        "from huggingface_hub import HfApi\n"
        "api = HfApi()\n"
        "api.create_repo('FacebookAI/roberta-base')\n"
        f"api.upload_folder(folder_path={str(REPO / 'tests/fixtures/encoders/tiny-roberta')!r},"
        " repo_id='FacebookAI/roberta-base')\n"
    )
    env = dict(os.environ, HF_ENDPOINT=endpoint, HF_TOKEN="hf_fb", HF_HUB_OFFLINE="0")
    subprocess.run([sys.executable, "-c", seed], env=env, check=True, capture_output=True)
    yield endpoint
    assert process.stdin is not None
    process.stdin.close()
    process.wait(timeout=30)


@pytest.fixture()
def hf_env(hub: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_ENDPOINT", hub)
    monkeypatch.setenv("HF_HOME", str(home))
    for name in ["HF_HUB_CACHE", "HF_TOKEN", "HF_TOKEN_PATH", "HF_HUB_OFFLINE"]:
        monkeypatch.delenv(name, raising=False)
    return home


def test_a_split_is_read_with_its_label_names_and_then_offline(
    hf_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    split = span_marker_rs.load_dataset("user/toy-ner", "train", rows=10)
    assert split.labels == CONLL_LABELS
    assert split.frame.height == 10
    assert split.frame.columns == ["id", "tokens", "ner_tags"]
    assert split.frame["tokens"][0].to_list()[0] == "Ingrid"
    converted = span_marker_rs.load_dataset(TUTORIAL, "test")
    assert converted.labels == CONLL_LABELS
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again = span_marker_rs.load_dataset("user/toy-ner", "train", rows=10)
    assert again.frame.equals(split.frame)
    with pytest.raises(span_marker_rs.SpanMarkerError, match="offline"):
        span_marker_rs.load_dataset("user/toy-ner", "validation")


def test_missing_splits_and_conflicting_labels_are_clear_errors(hf_env: Path) -> None:
    with pytest.raises(span_marker_rs.SpanMarkerError, match="the splits are: test, train, validation"):
        span_marker_rs.load_dataset("user/toy-ner", "other")
    with pytest.raises(span_marker_rs.SpanMarkerError, match="user/absent"):
        span_marker_rs.load_dataset("user/absent", "train")
    split = span_marker_rs.load_dataset("user/toy-ner", "train", rows=8)
    with pytest.raises(span_marker_rs.SpanMarkerError, match=r"differ from the labels"):
        span_marker_rs.train(
            split,
            encoder=str(REPO / "tests/fixtures/encoders/tiny-bert"),
            labels=["O", "B-PER", "I-PER"],
            args={"output_dir": str(hf_env / "refused"), "max_steps": 1},
        )


def readme_tutorial() -> str:
    """The Python block of the README's tutorial, as written there."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("### The tutorial, three ways", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert block, "the README's tutorial has a Python block"
    return block.group(1)


def test_the_readme_tutorial_trains_logs_pushes_and_tests(hf_env: Path, tmp_path: Path) -> None:
    env = dict(os.environ, HF_USER="tutor", HF_TOKEN="hf_tutor")
    done = subprocess.run(
        [sys.executable, "-c", readme_tutorial()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    output = tmp_path / "models/span-marker-roberta-base-conll03"
    assert (output / "model.safetensors").is_file()
    assert "0." in done.stdout or "1.0" in done.stdout
    events = list((output / "runs").rglob("events.out.tfevents.*"))
    assert events, "TensorBoard event files"
    listing = (
        "from huggingface_hub import HfApi\n"
        "print('\\n'.join(HfApi().list_repo_files('tutor/span-marker-roberta-base-conll03')))\n"
    )
    files = subprocess.run(
        [sys.executable, "-c", listing], env=env, check=True, capture_output=True, text=True
    ).stdout.split()
    assert "model.safetensors" in files and "config.json" in files
