"""A model's declared interface (``livecalc.config.json`` key ``interface``, docs/model-interface.md).

The declaration says what the model reads and writes: policy columns and their rules,
assumption tables, parameters, scenario inputs and outputs. Everything generic in the mesh —
the engine's layout, dataset validation, the result protos' output names — is derived from it.
"""
