# syntax=docker/dockerfile:1.7
# The scheduler service: plans, tasks, queue, leases, dispatch.
# Build from the workspace root: docker build -f deploy/docker/scheduler.Dockerfile -t godel-scheduler .
# Multi-stage: the Rust builder (with cargo registry and target caches) compiles
# `godel-scheduler`; the runtime is distroless (no shell, no package manager), runs as a
# non-root uid and needs no writable root filesystem. No HEALTHCHECK: Kubernetes
# probes /livez, /readyz and gRPC health instead.

ARG RUST_VERSION=1.94
FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p godel-scheduler --bin godel-scheduler \
    && mkdir -p /out \
    && cp target/release/godel-scheduler /out/

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.source="https://github.com/godel-dev/godel" \
      org.opencontainers.image.title="godel-scheduler" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build --chown=0:0 /out/godel-scheduler /usr/local/bin/godel-scheduler
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/godel-scheduler"]
