# syntax=docker/dockerfile:1
# The Shoal image: one `shoal` binary and the built dashboard, run as a non-root user on a
# distroless base (no shell, no package manager). One image for every role; the command picks
# the role (`serve`, `orchestrator`, `projector run`, `worker`, `migrate`), see
# infra/deploy/k8s/base. The build steps live in infra/deploy/build.sh, which CI runs outside
# Docker (scripts/deploy-check.sh).
#
#   docker build -t shoal:dev .

# --- the dashboard (Vite build; Node 20 as web/package.json requires) ---
FROM node:20.19-bookworm-slim AS web
WORKDIR /src
COPY infra/deploy/build.sh infra/deploy/build.sh
COPY web web
# npm's download cache survives between builds (BuildKit cache mount).
RUN --mount=type=cache,target=/root/.npm infra/deploy/build.sh web /out

# --- the binary, with the toolchain pinned in rust-toolchain.toml and Cargo.lock (--locked) ---
FROM rust:1.95.0-slim-bookworm AS build
# jemalloc (the binary's allocator, docs/adr/0025-jemalloc.md) is built from source with make.
RUN apt-get update \
    && apt-get install -y --no-install-recommends make=4.3-4.1 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY rust-toolchain.toml Cargo.toml Cargo.lock ./
COPY .cargo .cargo
COPY domain domain
COPY infra infra
COPY command-api command-api
COPY projector projector
COPY query-api query-api
COPY worker worker
COPY src src
# Downloaded crates and the target directory survive between builds (BuildKit cache mounts);
# the binary is copied out of the cache into /out by build.sh.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    infra/deploy/build.sh binary release /out

# --- the runtime image ---
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/usr/local/bin/shoal /usr/local/bin/shoal
COPY --from=web /out/usr/share/shoal/web /usr/share/shoal/web
ENV SHOAL_WEB_DIR=/usr/share/shoal/web \
    RUST_LOG=info,sqlx=warn
# distroless's `nonroot` user (65532); numeric, so that runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 8080 9464
# Kubernetes probes the roles itself (infra/deploy/k8s); the image has no shell or curl for a
# Docker HEALTHCHECK, and `shoal serve` answers GET /health for whoever wants one.
#checkov:skip=CKV_DOCKER_2:Kubernetes ignores HEALTHCHECK and probes each role (infra/deploy/k8s); one image runs roles with different health endpoints
ENTRYPOINT ["/usr/local/bin/shoal"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
