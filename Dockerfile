# syntax=docker/dockerfile:1
#
# The payment-service image (docker-compose.yml builds it as `build: .`).
#
#   docker build -t payment-service .
#   docker run --rm -p 8087:8087 -e PAYMENT__DATABASE__URL=… -e PAYMENT__KAFKA__BROKERS=… payment-service
#
# Two stages: the workspace is compiled in the official Rust image (rdkafka
# builds its bundled librdkafka there with gcc + make and links the system
# zlib), and only the binary moves to a slim Debian runtime. The migrations
# are embedded in the binary; `serve` applies pending ones at start-up.

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
    cargo build --release --locked -p payment-service --bin payment-service \
    && install -D -m 0755 target/release/payment-service /out/payment-service

FROM debian:bookworm-slim AS runtime
# ca-certificates for outbound TLS (Toss); zlib1g is what librdkafka links.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 payment \
    && useradd --system --uid 10001 --gid payment --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin payment
COPY --from=builder /out/payment-service /usr/local/bin/payment-service
USER payment:payment
ENV PAYMENT__HTTP__ADDR=0.0.0.0:8087
EXPOSE 8087
# The slim image has no curl: bash's /dev/tcp sends the request and the
# status line must say 200.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8087 && printf 'GET /health/live HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && read -r _ status _ <&3 && [[ $status == 200 ]]"]
ENTRYPOINT ["payment-service"]
CMD ["serve"]
