"""The installed package: one libtorch with torch in any import order, its documented examples."""

from __future__ import annotations

import doctest
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

import span_marker_rs
import span_marker_rs.datafusion
import span_marker_rs.polars

USE_BOTH = """
import {first}, {second}
import polars as pl
import torch
import span_marker_rs
out = pl.DataFrame({{"t": [["Paris", "is", "nice"]]}}).select(
    pl.col("t").span_marker.predict("bundled"))
assert out["t"][0][0]["label"] == "LOC", out
assert torch.ones(2, 2).matmul(torch.ones(2, 2)).sum().item() == 8.0
libraries = {{line.split()[-1] for line in open("/proc/self/maps") if "libtorch_cpu.so" in line}}
assert len(libraries) == 1, libraries
print(next(iter(libraries)))
"""


@pytest.mark.parametrize("first,second", [("torch", "span_marker_rs"), ("span_marker_rs", "torch")])
def test_torch_and_the_package_share_one_libtorch(first, second):
    done = subprocess.run(
        [sys.executable, "-c", USE_BOTH.format(first=first, second=second)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    import torch

    assert done.stdout.strip().startswith(str(Path(torch.__file__).parent))


def test_the_extension_finds_libtorch_beside_it_not_on_the_build_machine():
    extension = next(Path(span_marker_rs.__file__).parent.glob("_native*.so"))
    dynamic = subprocess.run(
        ["readelf", "-d", str(extension)], capture_output=True, text=True, check=True
    ).stdout
    paths = re.findall(r"\((?:RPATH|RUNPATH)\)\s+Library (?:rpath|runpath): \[(.*)\]", dynamic)
    assert paths == ["$ORIGIN/../torch/lib"], dynamic
    assert "libtorch_cpu.so" in dynamic


@pytest.mark.parametrize(
    "module", [span_marker_rs, span_marker_rs.polars, span_marker_rs.datafusion]
)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_readme_python_examples_run(tmp_path, monkeypatch):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) >= 2, "the README's Python section shows a Polars and a SQL example"
    monkeypatch.chdir(REPO)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "__readme__"})
