# One image for every role of a node: `python -m wizard node` runs the
# supervisor, which starts the API (producer), the workers (consumers) and
# the scheduler. Used by docker-compose.yml (3 replicas) and ops/k8s/.
#
#   docker build -t math-wizard:0.1.0 .
#   docker run --rm -e VALKEY_URL=valkey://valkey-host:6379/0 -p 8000:8000 math-wizard:0.1.0

# Debian slim, pinned to a patch release so a rebuild gets the same Python.
FROM python:3.11.14-slim-bookworm

# No .pyc files written at run time (the code is read-only for the app user);
# unbuffered output, so each JSON log line reaches `docker logs` at once.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WIZARD_PORT=8000

# The node runs as this unprivileged user; it owns no file in the image.
RUN groupadd --system --gid 10001 wizard \
 && useradd --system --uid 10001 --gid wizard --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin wizard

WORKDIR /app

# .dockerignore lets through only pyproject.toml, setup.cfg, README.md,
# wizard/ and static/.
COPY . /app

# Runtime dependencies (valkey with its C reply parser libvalkey, waitress:
# setup.cfg install_requires) and the `public` extra (PyJWT, to verify
# Cloudflare Access tokens when WIZARD_ACCESS_AUD is set). Installed in
# place (-e), like `make run` does: the package finds the
# dashboard at /app/static and its OpenAPI file at /app/wizard/openapi.json
# next to its own source, so nothing has to be copied into site-packages.
RUN pip install --no-cache-dir -e '/app[public]'

# Numeric, so Kubernetes' runAsNonRoot can check it without /etc/passwd.
USER 10001:10001

EXPOSE 8000

# Liveness only: is the API process answering? (/readyz, which also checks
# Valkey and the workers, is what compose and Kubernetes use for readiness.)
# The slim image has no curl, so Python's own urllib asks; a non-200 answer
# or no answer raises, and the non-zero exit marks the container unhealthy.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ['WIZARD_PORT'], timeout=2)"]

# SIGTERM (docker stop, a rolling update) lets each worker finish its task
# within WIZARD_GRACE_SECONDS; the orchestrator must wait longer than that.
CMD ["python", "-m", "wizard", "node"]
