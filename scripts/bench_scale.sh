#!/usr/bin/env bash
# How bulk annotation scales past its client: the same 27,000-row CoNLL-2003-derived job
# (the train, dev and test sentences, cycled to 27,000 rows; one Parquet file for the local
# run, nine of 3,000 rows for the cluster) annotated
#
#   1. in one process (`span-marker annotate`, chunked, local files);
#   2. on a scheduler and EXECUTORS executors on this machine (`annotate --cluster`), local
#      files on the shared disk;
#   3. the same cluster job from and to s3:// on a moto server started here (needs
#      moto[server] in the venv: `bash scripts/setup.sh`);
#   and, with BEFORE_BIN set to an older `span-marker` binary, 2. again with it for every
#   process (before executors wrote their own outputs, the results came through the client).
#
# For each run it prints the wall time, rows/s, and the client process's CPU time (user +
# system, from wait4) and bytes read (its /proc/PID/io `rchar`: files and sockets, sampled
# every 20 ms until it exits), each per row.
#
#   CONLL2003_DIR=/data/conll2003 bash scripts/bench_scale.sh [MODEL] [EXECUTORS]
#   BEFORE_BIN=/path/to/old/span-marker CONLL2003_DIR=... bash scripts/bench_scale.sh
#
# MODEL defaults to `bundled` (MiniLM), EXECUTORS to 2. Builds the release binary first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

model="${1:-bundled}"
executors="${2:-2}"
rows="${ROWS:-27000}"
files=9
conll="${CONLL2003_DIR:?set CONLL2003_DIR to the directory of the CoNLL-2003 splits}"
cache_root="${SPAN_MARKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/span-marker}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache_root/target}"
bash scripts/setup.sh >/dev/null
cargo build --release -p span-marker-cli
bin="$CARGO_TARGET_DIR/release/span-marker"
python="$PWD/.venv-python"

work="$(mktemp -d)"
pids=()
stop_cluster() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
cleanup() {
  stop_cluster
  [ -n "${s3_pid:-}" ] && kill "$s3_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

cat "$conll/train.txt" "$conll/dev.txt" "$conll/test.txt" >"$work/all.txt"
"$python" scripts/gpu/data.py parquet "$work/all.txt" "$work/sentences.parquet"
mkdir -p "$work/parts"
"$python" - "$work" "$rows" "$files" <<'EOF'
import sys
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

work, rows, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sentences = pq.read_table(f"{work}/sentences.parquet")
take = pa.array([i % sentences.num_rows for i in range(rows)])
table = sentences.take(take).set_column(0, "id", pa.array(range(rows), pa.int64()))
pq.write_table(table, f"{work}/all.parquet")
step = -(-rows // files)
for i in range(files):
    pq.write_table(table.slice(i * step, step), f"{work}/parts/part-{i}.parquet")
words = pc.sum(pc.list_value_length(table["tokens"])).as_py()
print(f"{rows} rows ({words} words) from {sentences.num_rows} CoNLL-2003 sentences; "
      f"{files} files for the cluster")
EOF

# `measure NAME COMMAND...`: runs the client, prints its figures.
measure() {
  local name="$1"
  shift
  "$python" - "$name" "$rows" "$@" <<'EOF'
import os, subprocess, sys, time

name, rows, command = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
started = time.monotonic()
child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
rchar = 0
while True:
    pid, status, usage = os.wait4(child.pid, os.WNOHANG)
    if pid:
        break
    try:
        with open(f"/proc/{child.pid}/io") as io:
            rchar = int(dict(line.split(": ") for line in io.read().splitlines())["rchar"])
    except (OSError, ValueError, KeyError):
        pass
    time.sleep(0.02)
wall = time.monotonic() - started
if os.waitstatus_to_exitcode(status) != 0:
    sys.exit(f"{name} failed: {child.stderr.read().decode()[-2000:]}")
cpu = usage.ru_utime + usage.ru_stime
print(f"{name}: {wall:.1f} s, {rows / wall:.0f} rows/s; client CPU {cpu:.2f} s "
      f"({cpu / rows * 1e6:.0f} us/row, {cpu / wall:.0%} of a core), client read "
      f"{rchar / 1e6:.1f} MB ({rchar / rows:.0f} B/row)")
EOF
}

free_port() { "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# `start_cluster BIN`: a scheduler and the executors, all from BIN, with this environment.
start_cluster() {
  local program="$1"
  port=$(free_port)
  "$program" cluster scheduler --bind-host 127.0.0.1 --external-host 127.0.0.1 --port "$port" \
    2>"$work/scheduler.log" &
  pids+=($!)
  for i in $(seq 1 "$executors"); do
    "$program" cluster executor --bind-host 127.0.0.1 --port "$(free_port)" \
      --grpc-port "$(free_port)" --scheduler-host 127.0.0.1 --scheduler-port "$port" \
      --concurrent-tasks 1 2>"$work/executor-$i.log" &
    pids+=($!)
  done
  for _ in $(seq 1 150); do
    registered=$(curl -s "http://127.0.0.1:$port/api/executors" |
      "$python" -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo 0)
    [ "$registered" -ge "$executors" ] && break
    sleep 0.2
  done
  url="df://127.0.0.1:$port"
}

echo "model $model; $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); $executors executors of 1 task each"
measure "one process, local files" \
  "$bin" annotate --model "$model" --input "$work/all.parquet" --output "$work/local.parquet" --show 0

if [ -n "${BEFORE_BIN:-}" ]; then
  start_cluster "$BEFORE_BIN"
  measure "cluster, local files, before (results through the client)" \
    "$BEFORE_BIN" annotate --cluster "$url" --model "$model" --input "$work/parts" \
    --output "$work/before" --show 0
  stop_cluster
fi

start_cluster "$bin"
measure "cluster, local files (executors write)" \
  "$bin" annotate --cluster "$url" --model "$model" --input "$work/parts" \
  --output "$work/after" --show 0
stop_cluster

if "$python" -c 'import moto.server, boto3' 2>/dev/null; then
  # The server stops when its standard input (this script's end of a FIFO) closes.
  mkfifo "$work/s3.in"
  "$python" tests/fixtures/s3_server.py corpus <"$work/s3.in" >"$work/s3.json" 2>"$work/s3.log" &
  s3_pid=$!
  exec {s3_keep}>"$work/s3.in"
  for _ in $(seq 1 300); do [ -s "$work/s3.json" ] && break; sleep 0.1; done
  s3_info=$(head -n1 "$work/s3.json")
  field() { "$python" -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$s3_info" "$1"; }
  export AWS_ENDPOINT_URL AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION=us-east-1
  AWS_ENDPOINT_URL=$(field endpoint)
  AWS_ACCESS_KEY_ID=$(field access_key_id)
  AWS_SECRET_ACCESS_KEY=$(field secret_access_key)
  "$python" - "$work/parts" <<'EOF'
import os, sys, boto3
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
for name in sorted(os.listdir(sys.argv[1])):
    s3.upload_file(os.path.join(sys.argv[1], name), "corpus", f"in/{name}")
EOF
  start_cluster "$bin"
  measure "cluster, s3:// in and out (executors write)" \
    "$bin" annotate --cluster "$url" --model "$model" --input s3://corpus/in/ \
    --output s3://corpus/out/ --show 0
  stop_cluster
else
  echo "s3 run skipped: moto[server] is not in the venv (bash scripts/setup.sh)"
fi
