# syntax=docker/dockerfile:1.7
# The orchestrator service: agent sessions, runtimes, LLM proxy.
# Build from the workspace root: docker build -f deploy/docker/orchestrator.Dockerfile -t godel-orchestrator .
# Multi-stage: the Rust builder (with cargo registry and target caches) compiles
# `godel-orchestrator`; the runtime is Debian slim with git, runs as a
# non-root uid and needs no writable root filesystem. No HEALTHCHECK: Kubernetes
# probes /livez, /readyz and gRPC health instead.

ARG RUST_VERSION=1.94
FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p godel-orchestrator --bin godel-orchestrator --bin godel-sim-agent \
    && mkdir -p /out \
    && cp target/release/godel-orchestrator target/release/godel-sim-agent /out/

# Debian slim rather than distroless: sessions run `git` (worktrees) and agent
# processes, so the image carries git and CA certificates — nothing else.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends git=1:2.39.* ca-certificates=20230311* \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 65532 nonroot \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /var/lib/godel --shell /usr/sbin/nologin nonroot
LABEL org.opencontainers.image.source="https://github.com/godel-dev/godel" \
      org.opencontainers.image.title="godel-orchestrator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build --chown=0:0 /out/godel-orchestrator /usr/local/bin/godel-orchestrator
COPY --from=build --chown=0:0 /out/godel-sim-agent /usr/local/bin/godel-sim-agent
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/godel-orchestrator"]
