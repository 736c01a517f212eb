# The service as production runs it. The entry point is scripts/serve, the same script as
# the README's quick start; CI exercises it through the tests and the quick start.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TAPS_NO_VENV=1 \
    HOST=0.0.0.0 \
    PORT=8000

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN useradd --system --home /app taps && mkdir -p /app/var /app/staticfiles \
    && chown -R taps /app/var /app/staticfiles
USER taps

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"
CMD ["scripts/serve"]
