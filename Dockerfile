# One image for all three services: `livecalc serve gateway|engine|data`.
# The WASM models are committed (models/wasm), so the image needs no C toolchain; the
# source tree is installed in place because the engine finds its models beside it.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gen gen
COPY services services
COPY models models
RUN pip install --no-cache-dir -e . && useradd --uid 10001 --create-home livecalc
USER 10001
WORKDIR /home/livecalc
ENV PYTHONUNBUFFERED=1 LIVECALC_HOST=0.0.0.0
EXPOSE 50051 50052 50053 9464 9465 9466
ENTRYPOINT ["livecalc"]
CMD ["up"]
