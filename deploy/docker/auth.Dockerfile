# syntax=docker/dockerfile:1.7
# The auth service: users, teams, roles, tokens, API keys.
# Build from the workspace root: docker build -f deploy/docker/auth.Dockerfile -t godel-auth .
# Multi-stage: the Rust builder (with cargo registry and target caches) compiles
# `godel-auth`; the runtime is distroless (no shell, no package manager), runs as a
# non-root uid and needs no writable root filesystem. No HEALTHCHECK: Kubernetes
# probes /livez, /readyz and gRPC health instead.

ARG RUST_VERSION=1.94
FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p godel-auth --bin godel-auth \
    && mkdir -p /out \
    && cp target/release/godel-auth /out/

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.source="https://github.com/godel-dev/godel" \
      org.opencontainers.image.title="godel-auth" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build --chown=0:0 /out/godel-auth /usr/local/bin/godel-auth
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/godel-auth"]
