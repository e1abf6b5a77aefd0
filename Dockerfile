# syntax=docker/dockerfile:1
# citygate and citygate-sim in a small Debian image, run as a non-root user.
#   docker build -t citygate .
#   docker run --rm -p 127.0.0.1:8080:8080 -p 127.0.0.1:1883:1883 -v citygate-data:/var/lib/citygate citygate
# docker-compose.yml builds this image for the gateway and the simulator fleet.

# --- build ------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# The cargo registry and target/ are BuildKit cache mounts: a rebuild after a source change
# recompiles citygate, not its 300-odd dependencies. The binaries are copied out of the cache
# mount because it is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p citygate -p citygate-sim \
    && mkdir -p /out \
    && cp target/release/citygate target/release/citygate-sim /out/

# --- run --------------------------------------------------------------------------------
FROM debian:bookworm-slim
# ca-certificates: https:// InfluxDB and mqtts:// brokers; tzdata: rule schedules in local
# time (gateway.timezone).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tzdata \
    && rm -rf /var/lib/apt/lists/*
# A fixed uid, so that a volume or a bind mount can be chowned to it before the first start.
RUN groupadd --system --gid 10001 citygate \
    && useradd --system --uid 10001 --gid citygate --home-dir /var/lib/citygate \
       --no-create-home --shell /usr/sbin/nologin citygate \
    && mkdir -p /var/lib/citygate /etc/citygate \
    && chown citygate:citygate /var/lib/citygate
COPY --from=builder /out/citygate /out/citygate-sim /usr/local/bin/
COPY deploy/citygate/container.toml /etc/citygate/citygate.toml
USER citygate:citygate
WORKDIR /var/lib/citygate
# The SQLite store: alert state, dead letters, the outbox, and readings unless
# sqlite.store_readings = false.
VOLUME ["/var/lib/citygate"]
# 8080: HTTP API, console, /metrics. 1883: the embedded MQTT broker (the image's default config).
EXPOSE 8080 1883
ENTRYPOINT ["citygate"]
CMD ["run", "-c", "/etc/citygate/citygate.toml"]
