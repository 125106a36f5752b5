# syntax=docker/dockerfile:1
#
# The payment-service image (docker-compose.yml builds it as `build: .`) and
# the fake Toss image (target fake-toss).
#
#   docker build -t payment-service .
#   docker build -t fake-toss --target fake-toss .
#   docker run --rm -p 8087:8087 -e PAYMENT__DATABASE__URL=… -e PAYMENT__KAFKA__BROKERS=… payment-service
#
# The workspace is compiled once in the official Rust image (rdkafka builds
# its bundled librdkafka there with gcc + make and links the system zlib);
# only the binaries move to a slim Debian runtime. The migrations are
# embedded in the binary; `serve` applies pending ones at start-up. The
# service image also carries `sample-orders` (publishes OrderPlacedEvents:
# `docker compose exec payment-service sample-orders --brokers kafka:9092`).
# docker/app/Dockerfile is the same runtime for machines without a registry,
# fed with binaries built on the host.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
# sqlx's checked macros (if any are added) read .sqlx/ instead of a live database.
ENV SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never
COPY . .
# The registry and target/ live in BuildKit cache mounts, so a rebuild only
# recompiles what changed; the binary is copied out of the mount in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p payment-service -p fake-toss \
    && install -D -m 0755 -t /out target/release/payment-service \
        target/release/sample-orders target/release/fake-toss

FROM debian:bookworm-slim AS runtime-base
# ca-certificates for outbound TLS (Toss); zlib1g is what librdkafka links.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 payment \
    && useradd --system --uid 10001 --gid payment --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin payment
USER payment:payment

FROM runtime-base AS fake-toss
COPY --from=builder /out/fake-toss /usr/local/bin/fake-toss
ENV FAKE_TOSS_ADDR=0.0.0.0:18080
EXPOSE 18080
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/18080 && printf 'GET /__fake/health HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && read -r _ status _ <&3 && [[ $status == 200 ]]"]
ENTRYPOINT ["fake-toss"]

# The service: the last stage, so `docker build .` builds it.
FROM runtime-base AS runtime
COPY --from=builder /out/payment-service /out/sample-orders /usr/local/bin/
ENV PAYMENT__HTTP__ADDR=0.0.0.0:8087
EXPOSE 8087
# The slim image has no curl: bash's /dev/tcp sends the request and the
# status line must say 200.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8087 && printf 'GET /health/live HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && read -r _ status _ <&3 && [[ $status == 200 ]]"]
ENTRYPOINT ["payment-service"]
CMD ["serve"]
