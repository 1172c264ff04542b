# The web service: portal, REST API, upload checks (which load models, so torch is needed, CPU build).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    DJANGO_SETTINGS_MODULE=auditsvc.settings AUDITSVC_VAR=/var/lib/auditsvc
# WeasyPrint renders the PDF reports with Pango; DejaVu is the report font.
RUN apt-get update && apt-get install -y --no-install-recommends \
        libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz0b fonts-dejavu-core bubblewrap \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --create-home --uid 10001 auditsvc
WORKDIR /app
RUN pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md manage.py ./
COPY auditsvc ./auditsvc
COPY tasks ./tasks
RUN pip install ".[prod]" && mkdir -p /var/lib/auditsvc && chown auditsvc /var/lib/auditsvc
USER auditsvc
RUN DJANGO_DEBUG=1 python manage.py collectstatic --noinput
EXPOSE 8000
CMD ["gunicorn", "auditsvc.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--timeout", "300"]
