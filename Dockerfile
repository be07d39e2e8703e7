# butler-agent image: two static binaries on an empty base, nothing else.
#
# No image is pulled: scripts/build-image builds the binaries on the host
# (static glibc, stripped) and prepares the build context this file expects:
#   butler-agent   the agent (ENTRYPOINT)
#   healthcheck    the HEALTHCHECK probe (no std, no C library: a few tens of KB)
#   sbom/          a CycloneDX SBOM of each binary (<binary>.cdx.json)
#   data/          an empty directory, becomes /data owned by the runtime user
# Both binaries are built with `cargo auditable`: each carries its own
# dependency list, which image scanners (Trivy, Grype, Syft) read.
# Build with:  scripts/build-image   (tags butler-agent:latest)
#
# CA certificates are compiled into the agent (webpki-roots), so no /etc/ssl is
# needed; name resolution reads /etc/hosts and /etc/resolv.conf, which Docker
# and Kubernetes mount into every container.
FROM scratch

ARG VERSION=unknown
ARG REVISION=unknown
ARG CREATED=unknown

LABEL org.opencontainers.image.title="butler-agent" \
      org.opencontainers.image.description="Anonymous telemetry and health endpoint for Butler, the Qlik Sense companion" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.vendor="butler-agent" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"

COPY butler-agent healthcheck /
COPY sbom /sbom
# The state directory (instance ID seed, audit log) must be writable by the
# runtime user; a named volume mounted here copies this ownership on first use.
COPY --chown=10001:10001 data /data

# Butler's layout: `-v ./config:/nodeapp/config` with NODE_ENV=production reads
# /nodeapp/config/production.yaml, exactly as for Butler itself.
WORKDIR /nodeapp
ENV BUTLER_STATE_DIR=/data \
    NODE_ENV=production

# Any non-root UID works (Kubernetes runAsUser, docker run --user).
USER 10001:10001
VOLUME ["/data"]
EXPOSE 12398

# Butler's timings. This engine (20.10) has no --start-interval (Docker 25+);
# on newer engines add --start-interval=1s to report healthy within a second.
HEALTHCHECK --interval=12s --timeout=12s --start-period=30s --retries=3 \
    CMD ["/healthcheck"]

ENTRYPOINT ["/butler-agent"]
CMD ["run"]
