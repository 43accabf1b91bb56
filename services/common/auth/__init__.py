"""Authentication, authorization and audit for every LiveCalc service.

- `config`: the frozen `SecurityConfig` (bearer JWT settings, audit log, TLS, protected
  mode), resolved from flags, then environment, then defaults, in `main()` only.
- `tokens`: JWT validation (JWKS with RS256/ES256 and key rotation by `kid`, or an HS256
  secret) into a `Principal`.
- `roles`: the one table of which role each RPC needs.
- `interceptor`: the grpc.aio server interceptor that authenticates, authorizes and audits.
- `audit`: the append-only JSON-lines audit log and its Prometheus counter.
- `cli`: `livecalc auth dev-token`.
"""
