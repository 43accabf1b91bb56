#!/usr/bin/env bash
# Scaling on a many-core machine (the device some sessions are lent; BENCHMARKS.md "Scaling"):
# - engine: the engine's WASM threads 1..16 on 16,384 model points (`bench engine`);
# - mesh: the mesh with 1, 2, 4 and 8 engines of 2 threads each on 300K policies × 1K scenarios
#   (`bench mesh`), the guided plan beside equal chunks, same inputs, hashes compared;
# - me: the public benchmark, lifelib's BasicTerm_ME points ×ME_MULTIPLIER (default 10,000: 100M
#   points, one base scenario) in process and through 1, 2, 4 and 8 engines (`bench me`), its
#   totals against ×ME_MULTIPLIER lifelib's, written as one JSON document (me.json).
# PARTS picks them (default "engine mesh me"; one command on the lent machine has 10 minutes).
#
# That machine has Python but not every package and no network: carry the missing ones as
# wheels in .whl/ and the committed tree as .devtree/tree.tar (`git archive HEAD`, so edits in
# progress in the working copy do not travel), then run this from the repository root:
#   scripts/device_scaling.sh "$OUT"
# lifelib need not travel: `bench me` reads lifelib's results from ME_CACHE (default
# .devtree/bench-me), a copy of the cache a run here made (~/.cache/livecalc/bench-me/*.json).
# Without .devtree/tree.tar it runs the working tree in place with $PYTHON, e.g. a cheap try here:
#   PYTHON=.venv/bin/python PARTS=me ME_MULTIPLIER=2 ME_ENGINES=1,2 scripts/device_scaling.sh /tmp/scaling
set -euo pipefail
out=$(mkdir -p "${1:-/tmp/livecalc-scaling}" && cd "${1:-/tmp/livecalc-scaling}" && pwd)
parts=" ${PARTS:-engine mesh me} "
me_cache=$(realpath -m "${ME_CACHE:-.devtree/bench-me}")
if [ -f .devtree/tree.tar ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  rm -rf /tmp/tree && mkdir -p /tmp/tree && tar -xf .devtree/tree.tar -C /tmp/tree
  cd /tmp/tree
  export PYTHONPATH=/tmp/site:/tmp/tree:/tmp/tree/gen
fi
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
echo "cores: $(nproc)"; "$py" --version
lscpu | grep -E "^(Model name|Thread|Core|Socket|NUMA node\(s\)|CPU\(s\)|L3)" || true
"$py" -c "import grpc, numpy, pyarrow, wasmtime; print('grpc', grpc.__version__, 'numpy', numpy.__version__, 'pyarrow', pyarrow.__version__)"
if [[ $parts == *" engine "* ]]; then
  "$py" -m services.cli bench engine --threads 1,2,4,8,16 --policies 16384 --cache-dir /tmp/engine-cache \
    >"$out/engine.txt" 2>"$out/engine.err" || echo "bench engine failed: $(tail -3 "$out/engine.err")"
  cat "$out/engine.txt"
fi
if [[ $parts == *" mesh "* ]]; then
  # text, not --json: its progress lines (stderr) show how far a run that hits the time limit got
  # and a time limit of its own (MESH_SECONDS) so the services' logs can still be collected
  timeout "${MESH_SECONDS:-400}" "$py" -m services.cli bench mesh --engines 1,2,4,8 --threads 2 --size 300Kx1K \
    --repeats 1 --compare-equal --dir /tmp/bench-mesh >"$out/mesh.txt" 2> >(tee "$out/mesh.err" >&2) \
    || echo "bench mesh exit $?"
  cat "$out/mesh.txt"
  for log in /tmp/bench-mesh/logs/*.log; do echo "== $log"; tail -n 40 "$log"; done >"$out/service-logs.txt" 2>&1 || true
fi
if [[ $parts == *" me "* ]]; then
  # the JSON on stdout, progress on stderr (saved, and shown as it comes); its own time limit
  # (ME_SECONDS) so the services' logs can still be collected; the 100M-row Parquet file goes to
  # /tmp/bench-me and is kept for a rerun's inspection
  status=0
  timeout "${ME_SECONDS:-540}" "$py" -m services.cli bench me --multiplier "${ME_MULTIPLIER:-10000}" \
    --engines "${ME_ENGINES:-1,2,4,8}" --repeats "${ME_REPEATS:-1}" --cache-dir "$me_cache" --dir /tmp/bench-me --json \
    >"$out/me.json" 2> >(tee "$out/me.err" >&2) || status=$?
  echo "bench me exit $status"
  "$py" - "$out/me.json" <<'PY' || true
import json, sys
doc = json.load(open(sys.argv[1]))
print(doc["benchmark"], "|", doc["policies"], "policies |", doc["steps"], "steps | ok:", doc["ok"])
for run in [dict(doc["in_process"], engines="in process"), *doc["mesh"]]:
    name, s, steps, pols = run["engines"], run["seconds"], run["steps_per_s"], run["policies_per_s"]
    print(f"  {name!s:>10}: {s:8.3f} s {steps:10.3g} steps/s {pols:10.3g} policies/s")
for p in doc["published"]:
    print(f"  {p['name']}: {p['seconds']} s {p['steps_per_s']:10.3g} steps/s")
PY
  for log in /tmp/bench-me/logs/*.log; do echo "== $log"; tail -n 40 "$log"; done >"$out/me-service-logs.txt" 2>&1 || true
fi
