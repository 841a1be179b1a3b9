#!/usr/bin/env bash
# The GPU run, from an unpacked bundle made by scripts/gpu/pack.sh (see scripts/gpu/README.md).
#
#   bash run.sh [DEVICE] [PART...]
#
# DEVICE is `cuda` (default) or `cpu` (the rehearsal: everything but mixed precision and the
# Python reference's GPU runs). PARTs, in order, default all: probe, tests, annotate, speed.
# Logs and a summary (`summary.txt`) go to $OUT (the device tool's folder) or ./out. Each part
# has its own time limit, so that one stuck part leaves the others their time.
#
# Environment: PYTHON (default python3; its torch's libraries are the libtorch the binaries
# use), SPEED_STEPS (training steps per speed run, default 200), SPEED_SHAPES (default
# "minilm base"), PART_TIMEOUT (seconds per part, default 240).
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
device="${1:-cuda}"
shift || true
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(probe tests annotate speed)
out="${OUT:-$here/out}"
mkdir -p "$out"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python="${PYTHON:-python3}"
steps="${SPEED_STEPS:-200}"
part_timeout="${PART_TIMEOUT:-240}"
summary="$out/summary.txt"
: >"$summary"
say() { echo "$*" | tee -a "$summary"; }

# libtorch: the torch wheel of this machine's Python, found through LD_LIBRARY_PATH alone (the
# bundle's binaries carry no rpath).
torch_lib="$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')" || {
  say "no torch importable by $python: set PYTHON"
  exit 1
}
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# The binaries travel compressed (xz); Python's lzma unpacks them where xz is missing.
mkdir -p "$work/bin"
for packed in "$here"/bin/*.xz; do
  name="$(basename "$packed" .xz)"
  "$python" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
    "$packed" "$work/bin/$name"
  chmod +x "$work/bin/$name"
done
cli="$work/bin/span-marker"
export SPAN_MARKER_REPO="$here" CONLL2003_DIR="$here/data" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
conll_tiny="$here/tests/fixtures/span-marker/conll-tiny"
precisions=(fp32)
[ "$device" != cpu ] && precisions=(fp32 bf16)

# Runs a part's command under its time limit, its output in $out/<log>.log; says how it ended.
step() {
  local log="$1"
  shift
  local start=$SECONDS
  timeout "$part_timeout" "$@" >"$out/$log.log" 2>&1
  local rc=$?
  say "[$log] exit $rc after $((SECONDS - start)) s"
  return $rc
}

# Seconds since the epoch, with fractions.
now() { date +%s.%N; }
rate() { "$python" -c "import sys; print(f'{float(sys.argv[1]) / (float(sys.argv[3]) - float(sys.argv[2])):.1f}')" "$@"; }

probe() {
  say "== probe"
  { nvidia-smi -L 2>&1 || echo "no nvidia-smi"; } | tee -a "$summary"
  "$python" - <<'EOF' 2>&1 | tee -a "$summary"
import importlib, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
for name in ["transformers", "span_marker", "datasets", "pyarrow", "accelerate"]:
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as e:
        print(name, "missing:", type(e).__name__, e)
EOF
  "$cli" --version | tee -a "$summary"
  step predict "$cli" predict --model "$conll_tiny" --device "$device" \
    "Angela Merkel visited the Louvre in Paris with Barack Obama." && cat "$out/predict.log" >>"$summary"
}

tests() {
  say "== tests (the checks of tests/gpu.rs, on $device)"
  SPAN_MARKER_TEST_DEVICE="$device" step tests "$work/bin/gpu-tests" --ignored --test-threads 1 --nocapture
  grep -E "^test |differ|F1|loss|test result" "$out/tests.log" | head -60 >>"$summary"
}

annotate() {
  say "== annotate: CoNLL-2003 test split as Parquet, conll-tiny model"
  for precision in "${precisions[@]}"; do
    local start
    start=$(now)
    step "annotate-$precision" "$cli" annotate --model "$conll_tiny" --device "$device" \
      --precision "$precision" --batch-size 128 --input "$here/data/test.parquet" \
      --output "$work/annotated-$precision.parquet" &&
      say "annotate $precision: $(rate 3453 "$start" "$(now)") rows/s (whole process, 3,453 rows)"
  done
}

# A random encoder of the shape's size, then for each precision: training (this crate, then the
# reference when `span_marker` imports) and prediction of the CoNLL test split.
speed() {
  local has_python=1
  "$python" -c 'import span_marker' 2>/dev/null || has_python=0
  [ $has_python = 0 ] && say "span_marker is not importable: Python reference runs left out"
  for shape in ${SPEED_SHAPES:-minilm base}; do
    case "$shape" in
      minilm) dims=(--hidden 384 --layers 6 --heads 12 --intermediate 1536) ;;
      base) dims=(--hidden 768 --layers 12 --heads 12 --intermediate 3072) ;;
      *) say "unknown shape $shape" && continue ;;
    esac
    say "== speed, $shape shape (random weights): $steps training steps of 16 CoNLL-2003 sentences, prediction of the 3,453 test sentences"
    "$python" "$here/scripts/gpu/random_encoder.py" "$work/$shape-encoder" \
      --tokenizer "$here/tests/fixtures/encoders/tiny-bert" "${dims[@]}" >>"$summary"
    for precision in "${precisions[@]}"; do
      local model="$work/$shape-$precision"
      local bf16=false
      [ "$precision" = bf16 ] && bf16=true
      printf '{"device": "%s", "bf16": %s, "per_device_train_batch_size": 16, "save_strategy": "no", "logging_steps": 50, "learning_rate": 5e-5}\n' \
        "$device" "$bf16" >"$work/args.json"
      # Both sides get the sentences the steps use, no more: preparing the data is part of the run.
      "$python" "$here/scripts/gpu/data.py" head "$here/data/train.txt" $((steps * 16)) "$work/train.txt"
      step "train-$shape-$precision" "$cli" train --model "$work/$shape-encoder" \
        --train "$work/train.txt" --max-steps "$steps" --output-dir "$model" \
        --args "$work/args.json" --model-max-length 256 --marker-max-length 128 --entity-max-length 8 &&
        say "rust   train $precision: $(grep -o '"train_samples_per_second":[0-9.]*' "$out/train-$shape-$precision.log" | cut -d: -f2 | xargs printf '%.1f') samples/s"
      [ -f "$model/config.json" ] || continue
      local start
      start=$(now)
      step "predict-$shape-$precision" "$cli" predict --model "$model" --device "$device" \
        --precision "$precision" --batch-size 64 --words --file "$here/data/test-words.txt" &&
        say "rust   predict $precision: $(rate 3453 "$start" "$(now)") sentences/s (whole process)"
      [ $has_python = 1 ] || continue
      "$python" "$here/scripts/gpu/data.py" train-json "$model" "$work/train.txt" "$work/train.json"
      step "python-train-$shape-$precision" "$python" "$here/scripts/bench_reference.py" --model "$model" \
        --sentences "$work/train.json" --batch-size 16 --threads 16 --device "$device" \
        --train-steps "$steps" --repeat 1 --precision "$precision" &&
        say "python train $precision: $(tail -1 "$out/python-train-$shape-$precision.log" | "$python" -c 'import json, sys; print(round(json.load(sys.stdin)["samples_per_second"], 1))') samples/s"
      [ "$precision" = fp32 ] || continue # the reference predicts in float32 only
      step "python-predict-$shape" "$python" "$here/scripts/bench_reference.py" --model "$model" \
        --sentences "$here/data/test.json" --batch-size 64 --threads 16 --device "$device" --repeat 2 &&
        say "python predict fp32: $(tail -1 "$out/python-predict-$shape.log" | "$python" -c 'import json, sys; print(round(json.load(sys.stdin)["sentences_per_second"], 1))') sentences/s (in process, median of 2 after a warm-up)"
    done
  done
}

for part in "${parts[@]}"; do
  case "$part" in
    probe | tests | annotate | speed) "$part" ;;
    *) say "unknown part $part (probe, tests, annotate, speed)" ;;
  esac
done
say "== done in $SECONDS s"
