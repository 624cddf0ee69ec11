# ICU Monitor application image: web server, consumer and emulator all run from it.
#   docker build -t icu-monitor .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STATIC_ROOT=/app/var/static

WORKDIR /app

# Dependencies first: this layer is reused until requirements.txt changes.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
# Hashed, compressed static files for WhiteNoise, made once at build time. The key only lets
# the settings load; nothing signed at build time survives into the running image.
# var/media: the export files (MEDIA_ROOT), made here so that a volume mounted there starts
# owned by the application's user.
RUN SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput \
    && mkdir -p /app/var/media \
    && useradd --system --uid 10001 --home-dir /app icu \
    && chown -R icu /app/var
USER icu

EXPOSE 8000 2575
# Health checks are per service in docker-compose.yml: the consumer and the emulator run from
# this image too, without a web server.
CMD ["gunicorn", "-c", "gunicorn.conf.py", "icu.wsgi"]
