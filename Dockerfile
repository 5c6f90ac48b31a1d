# syntax=docker/dockerfile:1
#
# One image, two binaries: the simulator (`translation-sim`, the default command) and the
# harness (`loadtest`). Used by docker-compose.yml; on its own:
#
#   docker build -t translation-status:local .
#   docker run --rm -p 127.0.0.1:8080:8080 translation-status:local
#   docker run --rm translation-status:local loadtest --help
#
# Stages: `chef` (the build toolchain plus cargo-chef) -> `planner` (a recipe of the workspace's
# manifests) -> `builder` (compiles the dependencies from the recipe alone, a layer that stays
# cached until Cargo.toml or Cargo.lock change, then the real sources) -> `runtime` (Debian
# slim, non-root, the two binaries, config/ and a health check).
#
# cargo-chef rather than hand-written stub sources: the workspace has four members (the SDK at
# the root, server/, loadtest/, cli/) and explicit targets ([[test]], later [[bench]] and examples)
# whose paths must exist for Cargo to read a manifest; the recipe follows the manifests as they
# change, and cargo-chef makes sure the placeholder crates are rebuilt from the real sources.

FROM rust:1.95-slim-bookworm AS chef
WORKDIR /build
# make: the binaries' allocator (jemalloc) is built from source.
RUN apt-get update \
    && apt-get install -y --no-install-recommends make=4.3-4.1 \
    && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version 0.1.78

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
ENV CARGO_TERM_COLOR=never
COPY --from=planner /build/recipe.json recipe.json
# Dependencies only, for exactly the packages built below (same feature set, so the layer is
# reused by the real build).
RUN cargo chef cook --release --locked --recipe-path recipe.json \
        --package translation-sim --package loadtest
COPY . .
RUN cargo build --release --locked --package translation-sim --package loadtest \
    && install -D -m 0755 -t /out target/release/translation-sim target/release/loadtest

FROM debian:bookworm-slim AS runtime
LABEL org.opencontainers.image.title="translation-status" \
      org.opencontainers.image.description="translation-sim (video-translation backend simulator) and the loadtest harness" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"
WORKDIR /app
COPY --from=builder /out/ /usr/local/bin/
COPY --chmod=0755 deploy/docker/http-ok /usr/local/bin/http-ok
COPY config/ /app/config/
# config/default.toml is compiled in; SIM_ENV=docker layers config/docker.toml over it
# (bind 0.0.0.0:8080, short jobs, gentle faults). SIM__SECTION__KEY variables override both.
ENV SIM_ENV=docker \
    SIM_CONFIG_DIR=/app/config \
    RUST_LOG=info
USER 10001:10001
# 8080: the simulator; 9100: `loadtest traffic --metrics-addr 0.0.0.0:9100`.
EXPOSE 8080 9100
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["http-ok", "8080", "/healthz"]
CMD ["translation-sim"]
