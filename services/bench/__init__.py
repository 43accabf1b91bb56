"""Benchmarks that drive the whole mesh (``livecalc bench mesh``: services.bench.mesh).

A service's own benchmarks live beside it (services/engine/bench.py, services/data/bench.py).
"""
