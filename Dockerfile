# One image for all three services: `livecalc serve gateway|engine|data`.
# The WASM models and assumption files are committed package data
# (services/valuation/reference_model), so the image needs no C toolchain and a plain,
# non-editable install carries everything the services load at run time.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gen gen
COPY clients/python/livecalc_client clients/python/livecalc_client
COPY services services
RUN pip install --no-cache-dir . && rm -rf build && useradd --uid 10001 --create-home livecalc
USER 10001
WORKDIR /home/livecalc
# Listening on 0.0.0.0 needs auth (docs/security.md): protected mode refuses it otherwise, in
# one line saying how. The default command runs the whole mesh with the embedded dev secret
# (made in ~/.livecalc/auth on first start; a token: `docker exec CONTAINER livecalc auth
# dev-token --tenant demo --role read,submit,upload`). On Kubernetes each Deployment runs
# `livecalc serve SERVICE` with HS256 auth from the Secret livecalc-auth instead
# (docs/deploy-kubernetes.md).
ENV PYTHONUNBUFFERED=1 LIVECALC_HOST=0.0.0.0
EXPOSE 50051 50052 50053 9464 9465 9466
ENTRYPOINT ["livecalc"]
CMD ["up", "--auth-dev"]
