#!/usr/bin/env bash
# Policies per second of a deterministic (1-scenario) job, end to end, this working tree beside
# another revision, back to back on the same machine: `livecalc bench mesh --size SIZE --engines 1`
# run from each tree (in process, one engine alone, the mesh of one engine), then a table of both.
#
# Usage: scripts/bench_rows.sh [REV] [SIZE]   (REV default HEAD~1, SIZE default 800Kx1)
# THREADS (default: cores) and REPEATS (default 3) pass through to the bench.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
rev=${1:-HEAD~1}
size=${2:-800Kx1}
py="$root/.venv/bin/python"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/before"
git -C "$root" archive "$rev" | tar -x -C "$work/before"
args=(bench mesh --size "$size" --engines 1 --repeats "${REPEATS:-3}" --json)
if [ -n "${THREADS:-}" ]; then args+=(--threads "$THREADS"); fi
for side in after before; do
  tree=$root
  if [ "$side" = before ]; then tree=$work/before; fi
  echo "running $side ($([ "$side" = before ] && echo "$rev" || echo "this tree")) ..." >&2
  # the services (and the processes the bench starts) import from the tree on PYTHONPATH; run
  # from inside it, because `python -m` puts the working directory first on sys.path, so from the
  # repository's root the "before" side would import this tree's code
  (cd "$tree" && PYTHONPATH="$tree" "$py" -m services.cli "${args[@]}") >"$work/$side.json"
done
"$py" - "$work/after.json" "$work/before.json" "$rev" <<'EOF'
import json
import sys

after, before = (json.load(open(p, encoding="utf-8")) for p in sys.argv[1:3])
print(f"{'':<28}{'after (this tree)':>22}{'before (' + sys.argv[3] + ')':>22}{'after/before':>14}")
for a, b in zip(after["sizes"], before["sizes"], strict=True):
    n = a["policies"]
    print(f"{n:,} policies × {a['scenarios']:,} scenarios; result hashes equal: {a['result_hash'] == b['result_hash']}")
    ways = [("in process", "in_process"), ("one engine alone", "engine_alone")]
    for label, key in [*ways, *((f"mesh, {e} engine", ("mesh", e)) for e in a["mesh"])]:
        fa = a[key[0]][key[1]] if isinstance(key, tuple) else a[key]
        fb = b[key[0]][key[1]] if isinstance(key, tuple) else b[key]
        pa, pb = n / fa["seconds"], n / fb["seconds"]
        print(f"  {label:<26}{pa:>14.3e} pol/s{pb:>16.3e} pol/s{pa / pb:>14.2f}")
print("machine:", after["machine"])
EOF
