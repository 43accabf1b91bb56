#!/usr/bin/env bash
# Scaling on a many-core machine (the device some sessions are lent; BENCHMARKS.md "Scaling"):
# the engine's WASM threads 1..16 on 16,384 model points (`bench engine`) and the mesh with 1,
# 2, 4 and 8 engines of 2 threads each on 300K policies × 1K scenarios (`bench mesh`), the
# guided plan beside equal chunks, same inputs, hashes compared.
#
# That machine has Python but not every package and no network: carry the missing ones as
# wheels in .whl/ and the committed tree as .devtree/tree.tar (`git archive HEAD`, so edits in
# progress in the working copy do not travel), then run this from the repository root:
#   scripts/device_scaling.sh "$OUT"
set -euo pipefail
out=${1:-/tmp/livecalc-scaling}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
rm -rf /tmp/tree && mkdir -p /tmp/tree && tar -xf .devtree/tree.tar -C /tmp/tree
cd /tmp/tree
export PYTHONPATH=/tmp/site:/tmp/tree:/tmp/tree/gen PYTHONUNBUFFERED=1
echo "cores: $(nproc)"; python3 --version
lscpu | grep -E "^(Model name|Thread|Core|Socket|NUMA node\(s\)|CPU\(s\)|L3)" || true
python3 -c "import grpc, numpy, pyarrow, wasmtime; print('grpc', grpc.__version__, 'numpy', numpy.__version__, 'pyarrow', pyarrow.__version__)"
python3 -m services.cli bench engine --threads 1,2,4,8,16 --policies 16384 --cache-dir /tmp/engine-cache >"$out/engine.txt" 2>"$out/engine.err" || echo "bench engine failed: $(tail -3 "$out/engine.err")"
cat "$out/engine.txt"
# text, not --json: its progress lines (stderr) show how far a run that hits the time limit got
# and a time limit of its own (MESH_SECONDS) so the services' logs can still be collected
timeout "${MESH_SECONDS:-400}" python3 -m services.cli bench mesh --engines 1,2,4,8 --threads 2 --size 300Kx1K \
  --repeats 1 --compare-equal --dir /tmp/bench-mesh >"$out/mesh.txt" 2> >(tee "$out/mesh.err" >&2) \
  || echo "bench mesh exit $?"
cat "$out/mesh.txt"
for log in /tmp/bench-mesh/logs/*.log; do echo "== $log"; tail -n 40 "$log"; done >"$out/service-logs.txt" 2>&1 || true
