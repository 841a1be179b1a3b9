#!/usr/bin/env bash
# One process against a Ballista cluster (a scheduler and N executors on this machine):
# annotation rows/s on CoNLL-2003 sentences, and the fixed cost of a query.
#
#   CONLL2003_DIR=/data/conll2003 bash scripts/bench_cluster.sh [MODEL] [EXECUTORS]
#
# MODEL defaults to `bundled` (MiniLM), EXECUTORS to 2. The test split goes into one Parquet
# file (for `span-marker annotate`, one process) and into four (for `annotate --cluster`,
# one task per file). Per-query cost: 21 statements minus 1, over 20, locally and on the
# cluster. Builds the release binary first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

model="${1:-bundled}"
executors="${2:-2}"
conll="${CONLL2003_DIR:?set CONLL2003_DIR to the directory of the CoNLL-2003 splits}"
cache_root="${SPAN_MARKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/span-marker}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache_root/target}"
bash scripts/setup.sh
cargo build --release -p span-marker-cli
bin="$CARGO_TARGET_DIR/release/span-marker"
python=./.venv-python

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

"$python" scripts/gpu/data.py parquet "$conll/test.txt" "$work/all.parquet"
mkdir -p "$work/parts"
"$python" - "$work/all.parquet" "$work/parts" <<'EOF'
import sys
import pyarrow.parquet as pq

table = pq.read_table(sys.argv[1])
step = -(-table.num_rows // 4)
for i in range(4):
    pq.write_table(table.slice(i * step, step), f"{sys.argv[2]}/part-{i}.parquet")
print(f"{table.num_rows} sentences, 4 files")
EOF

free_port() { "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
"$bin" cluster scheduler --bind-host 127.0.0.1 --external-host 127.0.0.1 --port "$port" 2>"$work/scheduler.log" &
pids+=($!)
for i in $(seq 1 "$executors"); do
  "$bin" cluster executor --bind-host 127.0.0.1 --port "$(free_port)" --grpc-port "$(free_port)" \
    --scheduler-host 127.0.0.1 --scheduler-port "$port" 2>"$work/executor-$i.log" &
  pids+=($!)
done
for _ in $(seq 1 100); do
  registered=$(curl -s "http://127.0.0.1:$port/api/executors" | "$python" -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo 0)
  [ "$registered" -ge "$executors" ] && break
  sleep 0.2
done
url="df://127.0.0.1:$port"
echo "cluster: scheduler and $registered executors at $url; model $model; $(nproc) CPUs"

seconds() { "$python" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$2"; }
now() { date +%s.%N; }
rows=$("$python" -c "import pyarrow.parquet as pq, sys; print(pq.read_metadata(sys.argv[1]).num_rows)" "$work/all.parquet")

start=$(now)
"$bin" annotate --model "$model" --input "$work/all.parquet" --output "$work/local.parquet" --show 0 2>/dev/null
local_s=$(seconds "$start" "$(now)")
start=$(now)
"$bin" annotate --cluster "$url" --model "$model" --input "$work/parts" --output "$work/cluster" --show 0 2>/dev/null
cluster_s=$(seconds "$start" "$(now)")
"$python" - "$rows" "$local_s" "$cluster_s" <<'EOF'
import sys
rows, local, cluster = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
print(f"annotate, {rows} rows: one process {local:.1f} s ({rows / local:.1f} rows/s), "
      f"cluster {cluster:.1f} s ({rows / cluster:.1f} rows/s), cluster/local = {local / cluster:.2f}x")
EOF

query="SELECT span_marker_predict(['Angela', 'Merkel', 'visited', 'Paris'])"
many=()
for _ in $(seq 1 21); do many+=("$query"); done
for where in local cluster; do
  flags=(--model "$model")
  [ "$where" = cluster ] && flags+=(--cluster "$url")
  start=$(now)
  "$bin" sql "${flags[@]}" "$query" >/dev/null 2>&1
  one=$(seconds "$start" "$(now)")
  start=$(now)
  "$bin" sql "${flags[@]}" "${many[@]}" >/dev/null 2>&1
  all=$(seconds "$start" "$(now)")
  "$python" -c "import sys; one, all = float(sys.argv[2]), float(sys.argv[3]); print(f'{sys.argv[1]}: one query {one:.2f} s per process, then {(all - one) / 20 * 1000:.0f} ms per query')" "$where" "$one" "$all"
done
