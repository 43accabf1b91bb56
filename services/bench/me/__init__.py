"""``livecalc bench me``: the public benchmark — lifelib's BasicTerm_ME model points ×K through the mesh.

lifelib basiclife BasicTerm_ME's own 10,000 model points (future new business and policies
maturing at t = 0 among them; lifelib's premium per policy given), tiled ×K with policy ids
renumbered, one base scenario (lifelib's flat discount curve), valued by the reference package
with BasicTerm_ME's tables — in this process and through a mesh of real processes (a data
service, N engines, a gateway per engine count; services.common.processes). Every total must
equal K × lifelib's to 1e-12 relative and every result hash the in-process one; the figures
(steps/s in active policy-months, policies/s, seconds) are printed beside the published JAX
figures for 100M points.

lifelib is optional: without it the command says how to install it. It runs once per lifelib and
numpy version and is cached (a few seconds the first time).

The modules: `lifelib_oracle` (lifelib run once, cached), `inputs` (assumptions, package, the tiled
Parquet file), `measure` (the services started, every run timed), `report` (the JSON document and
its text), `command` (``livecalc bench me``).
"""
