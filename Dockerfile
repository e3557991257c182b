# syntax=docker/dockerfile:1
#
# creditd container image.
#
#   docker build -t creditd:0.1.0 .
#   docker run --rm -p 50051:50051 -p 8080:8080 creditd:0.1.0            # SQLite in /data
#   docker run --rm -e CREDITD_DATABASE_URL=postgres://… creditd:0.1.0 migrate
#
# Build stage: the official Rust image. No system protoc is needed (build.rs compiles proto/
# with protox); SQLite is bundled and built with the image's gcc; there is no OpenSSL.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
WORKDIR /build
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0

# 1. Dependencies only. The manifests and the lock file, with stub sources, build every
#    third-party crate (and the build-dependencies, through a stub build script) into a layer
#    that is reused until Cargo.toml, migrations/Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
COPY migrations/Cargo.toml migrations/Cargo.toml
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    mkdir -p src migrations/src \
 && echo 'fn main() {}' > src/main.rs \
 && echo 'fn main() {}' > build.rs \
 && touch src/lib.rs migrations/src/lib.rs \
 && cargo build --release --locked --bin creditd \
 && rm -rf src migrations/src build.rs \
           target/release/creditd target/release/creditd.d \
           target/release/.fingerprint/creditd-* target/release/.fingerprint/migrations-* \
           target/release/build/creditd-* \
           target/release/deps/creditd-* target/release/deps/libcreditd-* \
           target/release/deps/migrations-* target/release/deps/libmigrations-*

# 2. The project itself. Sources are touched so that cargo never mistakes them for the stubs
#    (COPY keeps the build context's modification times, which may be older).
COPY build.rs ./
COPY proto proto
COPY migrations migrations
COPY src src
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    find build.rs proto migrations src -type f -exec touch {} + \
 && cargo build --release --locked --bin creditd \
 && install -D -m 0755 target/release/creditd /out/creditd \
 && mkdir -p /out/data

# Runtime stage: distroless glibc image (same Debian release as the builder, so the same glibc),
# no shell, no package manager; only the binary and an empty, writable /data for SQLite.
FROM gcr.io/distroless/cc-debian12:latest AS runtime

LABEL org.opencontainers.image.title="creditd" \
      org.opencontainers.image.description="Customers' credit balances over gRPC and a Stripe-compatible REST shim" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /out/creditd /creditd
COPY --from=builder --chown=10001:10001 /out/data /data

# Listen on every interface inside the container (the binary's own defaults are loopback).
ENV CREDITD_GRPC_ADDR=0.0.0.0:50051 \
    CREDITD_HTTP_ADDR=0.0.0.0:8080 \
    CREDITD_LOG_FORMAT=json

# Two glibc malloc arenas instead of one per thread: after a burst of large batches the freed
# memory is reused instead of held per arena (peak RSS 62 instead of 67 MiB in BENCHMARKS.md's
# "Batches in a handful of statements"), at no measured CPU cost.
ENV MALLOC_ARENA_MAX=2

# The default database URL is sqlite:creditd.sqlite, relative to this directory.
WORKDIR /data
USER 10001:10001
EXPOSE 50051 8080
STOPSIGNAL SIGTERM

ENTRYPOINT ["/creditd"]
CMD ["serve"]
