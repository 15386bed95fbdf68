# syntax=docker/dockerfile:1
# The four services and loadgen in one image; the entrypoint takes the service name:
#   docker run --rm hourly-analytics:0.1.0 query --help
# Build: `make image` (Docker or Podman). Dependencies are compiled in a layer of their own
# (cargo-chef), so a change to the code rebuilds only the workspace crates. librdkafka is
# compiled in (rdkafka's bundled build); nothing is fetched at run time.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS chef
RUN cargo install cargo-chef --locked --version 0.1.71
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json \
      -p command -p processor -p materializer -p query -p loadgen
COPY . .
RUN cargo build --release --locked --bins -p command -p processor -p materializer -p query -p loadgen \
 && mkdir -p /out \
 && cp target/release/command target/release/processor target/release/materializer \
       target/release/query target/release/loadgen /out/

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# curl: the healthchecks of deploy/compose; ca-certificates: rediss:// and TLS to Kafka.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin analytics
COPY --from=builder /out/ /usr/local/libexec/analytics/
COPY deploy/docker/entrypoint.sh /usr/local/bin/analytics
USER 10001:10001
ENV LOG_FORMAT=json
ENTRYPOINT ["/usr/local/bin/analytics"]
CMD ["--help"]
