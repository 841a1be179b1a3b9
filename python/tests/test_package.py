"""The installed package: one libtorch shared with torch, its documented examples.

Reads the extension's dynamic section with `readelf` (binutils, which Rust's linker needs too).
"""

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

# The extension is loaded before torch here (by its path, so that the package's own
# `import torch` does not come first): its rpath must find the torch wheel's libtorch and OpenMP
# runtime (the extension's attention kernel runs on libtorch's OpenMP threads; a second runtime
# would bring a second thread team), and torch must then use the same copies.
EXTENSION_FIRST = """
import ctypes, importlib.util, os, pathlib
package = pathlib.Path(importlib.util.find_spec("span_marker_rs").origin).parent
ctypes.CDLL(str(next(package.glob("_native*.so"))))
import torch
import polars as pl
import span_marker_rs
out = pl.DataFrame({"t": [["Paris", "is", "nice"]]}).select(
    pl.col("t").span_marker.predict("bundled"))
assert out["t"][0][0]["label"] == "LOC", out
assert torch.ones(2, 2).matmul(torch.ones(2, 2)).sum().item() == 8.0
libraries = {os.path.realpath(line.split()[-1])
             for line in open("/proc/self/maps") if "libtorch_cpu.so" in line}
assert len(libraries) == 1, libraries
openmp = {os.path.realpath(line.split()[-1])
          for line in open("/proc/self/maps") if "libgomp" in line}
assert len(openmp) == 1, openmp
assert os.path.dirname(next(iter(openmp))) == os.path.dirname(next(iter(libraries))), openmp
print(next(iter(libraries)))
"""


def test_torch_and_the_package_share_one_libtorch():
    done = subprocess.run(
        [sys.executable, "-c", EXTENSION_FIRST], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    import torch

    torch_lib = Path(torch.__file__).parent.resolve() / "lib"
    assert Path(done.stdout.strip()).parent == torch_lib


def test_the_extension_finds_libtorch_beside_it_not_on_the_build_machine():
    extension = next(Path(span_marker_rs.__file__).parent.glob("_native*.so"))
    dynamic = subprocess.run(
        ["readelf", "-d", str(extension)], capture_output=True, text=True, check=True
    ).stdout
    paths = re.findall(r"\((?:RPATH|RUNPATH)\)\s+Library (?:rpath|runpath): \[(.*)\]", dynamic)
    assert paths == ["$ORIGIN/../torch/lib"], dynamic
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.*)\]", dynamic)
    assert "libtorch_cpu.so" in needed, needed
    # A CPU-only torch wheel must load it too: CUDA comes from `import torch` where torch has it.
    assert not [n for n in needed if "cuda" in n], needed


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
