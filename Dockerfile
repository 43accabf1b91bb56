# One image for all three services: `livecalc serve gateway|engine|data`.
# The WASM models are committed (models/wasm), so the image needs no C toolchain.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gen gen
COPY services services
COPY models models
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
COPY models/wasm /opt/livecalc/models/wasm
RUN useradd --uid 10001 --create-home livecalc
USER 10001
ENV PYTHONUNBUFFERED=1 LIVECALC_HOST=0.0.0.0
EXPOSE 50051 50052 50053 9464 9465 9466
ENTRYPOINT ["livecalc"]
CMD ["up"]
