"""The valuation domain, defined once: what more than one service needs to agree on.

- ``policy_schema``: the term_life policy record (docs/datasets.md "term_life"), its row rules and the
  coercion of raw cells, used by the data service's ValidateDataset and the engine's inputs;
- ``policies``, ``assumptions``, ``scenarios``: the validated model inputs;
- ``blocks``: the block size B, the block plan and the exact fold in block order;
- ``statistics``: the statistics of a scenario vector and the result hash.

Nothing here talks to the network or knows a service: services import this package, never
each other.
"""
