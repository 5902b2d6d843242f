# poolwatch's container image, after the convention of Prometheus' own
# images: the Makefile builds a static binary (CGO_ENABLED=0) and this file
# only copies it in. Build it with `make docker` (buildah, offline) and check
# it with `make docker-test`; do not run it by hand without the staged
# context, which `make docker` prepares under .build/:
#
#   .build/linux-$ARCH/poolwatch   the static binary (a copy of `make build`'s)
#   .build/ca-certificates.crt     the build host's CA bundle, for TLS to
#                                  targets (sslmode=verify-full)
#
# FROM scratch: no shell, no libc, no package manager, nothing to patch but
# poolwatch itself. The configuration is not baked in: mount it at
# /etc/poolwatch/poolwatch.yml (and secrets, e.g. under /run/secrets/), as in
# examples/docker/.
FROM scratch

ARG ARCH="amd64"
ARG OS="linux"

LABEL org.opencontainers.image.title="poolwatch" \
      org.opencontainers.image.description="Prometheus exporter that watches database connection pools and pages before a pool runs dry." \
      org.opencontainers.image.source="https://github.com/poolwatch/poolwatch"

COPY .build/ca-certificates.crt       /etc/ssl/certs/ca-certificates.crt
COPY .build/${OS}-${ARCH}/poolwatch   /bin/poolwatch

# nobody:nogroup. A scratch image has no /etc/passwd, so use numbers.
USER       65534:65534
EXPOSE     9648
ENTRYPOINT [ "/bin/poolwatch" ]
CMD        [ "--config.file=/etc/poolwatch/poolwatch.yml" ]
