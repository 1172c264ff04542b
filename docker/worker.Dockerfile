# The audit worker: CUDA when the host has a GPU (run with --gpus all), CPU otherwise.
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04
FROM ${CUDA_IMAGE}

# Any torch release in the project's range, built for this CUDA version.
ARG TORCH_SPEC="torch>=2.6,<2.14"
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu126
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_BREAK_SYSTEM_PACKAGES=1 \
    DJANGO_SETTINGS_MODULE=auditsvc.settings AUDITSVC_VAR=/var/lib/auditsvc AUDITSVC_DEVICE=auto
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3 python3-pip python3-venv libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz0b fonts-dejavu-core bubblewrap \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --create-home --uid 10001 auditsvc
WORKDIR /app
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install "${TORCH_SPEC}" --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md manage.py ./
COPY auditsvc ./auditsvc
COPY tasks ./tasks
RUN pip install ".[prod]" && mkdir -p /var/lib/auditsvc && chown auditsvc /var/lib/auditsvc
USER auditsvc
# One audit at a time per GPU; scale with more containers. Audits are acknowledged late and
# re-queued when a worker dies (see tasks/audits.py).
CMD ["celery", "-A", "auditsvc.celery", "worker", "-Q", "gpu", "--concurrency", "1", "--prefetch-multiplier", "1", "-l", "info"]
