"""Model packages: the format every service and the CLI agree on (docs/packages.md).

A package is a zip of ``manifest.json``, ``livecalc.config.json``, ``wasm/*.wasm``,
``assumptions/*``, and optionally ``python/*`` (documentation, never executed) and ``data/*``.
It lives in the shared domain rather than in the gateway because three parties read it the
same way: the CLI (init, build, validate, inspect), the gateway (validating uploads before they
become visible) and the engine (verifying and unpacking a downloaded package); services may
not import each other's modules. docs/packages.md is the model author's description.

- `canonical`: canonical JSON and the packageHash;
- `manifest`: the manifest and its assets;
- `report`: issues (errors and warnings, each with its JSON path or file) and `PackageInvalid`;
- `config`: the ``livecalc.config.json`` schema and its validation (pipeline graph included);
- `wasm_checks`: the static checks of the pipeline's WASM binaries (via services.common.wasm_facts);
- `archive`: the byte-reproducible zip writer and the safe reader with its caps;
- `package`: building from a directory, and verifying an archive end to end;
- `reference`: the reference model (esg → term_life, lifelib's sample assumptions).
"""
