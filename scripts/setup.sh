#!/usr/bin/env bash
# Sets up libtorch for `tch` (see README "Set-up"): a venv with torch==2.11.0 from PyPI,
# kept outside the clone so every checkout and CI run shares it, and a `.libtorch`
# symlink in the repository that `.cargo/config.toml` points `LIBTORCH` at.
#
# The same venv gets the Python reference implementation (span_marker 1.8.1 with the
# transformers release its fixtures were made with): the compatibility tests load models
# saved here in Python. `.venv-python` in the repository runs that interpreter.
#
# It also gets what the Python package (python/) is built and tested with: maturin, the Polars
# and DataFusion releases the wheel's plugin ABI and FFI match, and pytest; and the servers the
# object-store tests start: moto's S3-compatible server (tests/fixtures/s3_server.py), and Azurite
# from npm under <venv>/azurite with azure-storage-blob for its set-up
# (tests/fixtures/azure_server.py). Without Node.js and npm the Azure tests say so and skip.
#
# Idempotent: a second run only checks the venv and the links.
# Environment:
#   SPAN_MARKER_CACHE   cache root (default: ${XDG_CACHE_HOME:-$HOME/.cache}/span-marker)
#   PYTHON              interpreter used to create the venv (default: python3)
set -euo pipefail

TORCH_VERSION="2.11.0" # tch =0.24.0 is generated for exactly this release
REFERENCE_PACKAGES=("span_marker==1.8.1" "transformers==4.57.6" "datasets" "seqeval" "tensorboard" "torch==$TORCH_VERSION")
PACKAGE_TOOLS=("maturin==1.16.0" "polars==1.43.2" "datafusion==55.0.0" "pytest==9.2.0")
TEST_SERVERS=("moto[server]==5.2.6" "azure-storage-blob==12.27.1") # udfs/tests/object_store.rs, cli/tests/object_store.rs
AZURITE_VERSION="3.37.0" # Azure Blob Storage for the same tests (npm)
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache_root="${SPAN_MARKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/span-marker}"
venv="$cache_root/torch-$TORCH_VERSION"
python="${PYTHON:-python3}"

die() { echo "setup: error: $*" >&2; exit 1; }

command -v "$python" >/dev/null 2>&1 ||
  die "'$python' not found. Install Python 3.9+ (with the venv and pip modules) or set PYTHON=/path/to/python3."
"$python" -c 'import venv, ensurepip' 2>/dev/null ||
  die "'$python' lacks the venv/ensurepip modules (on Debian/Ubuntu: apt-get install python3-venv)."

installed_version() {
  [ -x "$venv/bin/python" ] || return 1
  "$venv/bin/python" - <<'PY' 2>/dev/null
import importlib.metadata as m
print(m.version("torch"))
PY
}

if [ "$(installed_version || true)" != "$TORCH_VERSION" ]; then
  echo "setup: installing torch==$TORCH_VERSION into $venv (about 5 GB, once)"
  mkdir -p "$cache_root"
  tmp="$venv.partial.$$"
  rm -rf "$tmp"
  "$python" -m venv "$tmp" || die "could not create a venv with $python"
  "$tmp/bin/python" -m pip --version >/dev/null 2>&1 || die "pip is missing in the new venv (install python3-pip)"
  "$tmp/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir "torch==$TORCH_VERSION" ||
    die "pip could not install torch==$TORCH_VERSION (is PyPI reachable?)"
  # A venv records its own path, so build it in place of the final one: move by rename.
  rm -rf "$venv"
  mv "$tmp" "$venv"
  # Scripts in bin/ name the temporary path; only `python` is used afterwards.
fi

torch_dir="$("$venv/bin/python" - <<'PY'
import importlib.util, os
spec = importlib.util.find_spec("torch")
print(os.path.dirname(spec.origin))
PY
)" || die "torch is installed in $venv but its package directory could not be found"
[ -f "$torch_dir/lib/libtorch_cpu.so" ] || die "$torch_dir/lib/libtorch_cpu.so is missing: remove $venv and run again"

ln -sfn "$torch_dir" "$repo_root/.libtorch"

if ! "$venv/bin/python" -c 'import span_marker, transformers, tensorboard, sys; sys.exit(span_marker.__version__ != "1.8.1" or transformers.__version__ != "4.57.6")' 2>/dev/null; then
  echo "setup: installing the Python reference (${REFERENCE_PACKAGES[*]}) into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir "${REFERENCE_PACKAGES[@]}" ||
    die "pip could not install the Python reference packages (is PyPI reachable?)"
fi
if ! "$venv/bin/python" - "${PACKAGE_TOOLS[@]}" <<'PY' 2>/dev/null; then
import importlib.metadata as m, sys
sys.exit(any(m.version(name) != version for name, version in (p.split("==") for p in sys.argv[1:])))
PY
  echo "setup: installing the Python package's build and test tools (${PACKAGE_TOOLS[*]}) into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir "${PACKAGE_TOOLS[@]}" ||
    die "pip could not install the Python package's tools (is PyPI reachable?)"
fi
if ! "$venv/bin/python" - "${TEST_SERVERS[@]}" <<'PY' 2>/dev/null; then
import importlib.metadata as m, sys
import moto.server, boto3, azure.storage.blob  # noqa: F401 (servers' helper scripts' imports)
sys.exit(any(m.version(name.split("[")[0]) != version for name, version in (p.split("==") for p in sys.argv[1:])))
PY
  echo "setup: installing the object-store tests' servers and clients (${TEST_SERVERS[*]}) into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir "${TEST_SERVERS[@]}" ||
    die "pip could not install the object-store test servers (is PyPI reachable?)"
fi
azurite="$venv/azurite"
if [ "$(cat "$azurite/.version" 2>/dev/null)" != "$AZURITE_VERSION" ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "setup: installing Azurite $AZURITE_VERSION (npm) into $azurite"
    rm -rf "$azurite.partial"
    npm install --silent --no-audit --no-fund --prefix "$azurite.partial" "azurite@$AZURITE_VERSION" >/dev/null ||
      die "npm could not install Azurite (is the npm registry reachable?)"
    echo "$AZURITE_VERSION" > "$azurite.partial/.version"
    rm -rf "$azurite"
    mv "$azurite.partial" "$azurite"
  else
    echo "setup: npm not found: the Azure object-store tests will skip (install Node.js 18+ and npm, then rerun)"
  fi
fi
printf '#!/bin/sh\nexec "%s" "$@"\n' "$venv/bin/python" > "$repo_root/.venv-python"
chmod +x "$repo_root/.venv-python"
echo "setup: libtorch $TORCH_VERSION ready at $torch_dir (linked as .libtorch)"
