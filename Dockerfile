# syntax=docker/dockerfile:1
#
# The `starling` binary in a small runtime image.
#
#   docker build -t starling:dev .
#   docker run --rm -p 7400:7400 \
#     -e STARLING_DATABASE__URL=postgres://starling:…@db/starling \
#     -e STARLING_AUTH__OPERATOR_TOKEN=… -e STARLING_AUTH__KEY_HASH_SECRET=… \
#     starling:dev control-plane
#
# The process is chosen by the command (`control-plane`, `data-plane`, `migrate`, `standalone`);
# every setting comes from STARLING_<SECTION>__<KEY> variables (docs/CONFIGURATION.md).
# tests/e2e/image.rs starts the binary with exactly this file's ENV (and the Terraform modules'
# variables), so a renamed setting fails the tests rather than a deployment.

ARG RUST_VERSION=1.95.0

# --- build -----------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-bookworm AS build
# protoc: the `pulsar` crate compiles Pulsar's protobuf definitions at build time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler=3.21.* \
    && rm -rf /var/lib/apt/lists/*
ENV PROTOC=/usr/bin/protoc
WORKDIR /src
COPY . .
# Cache the registry and the target dir between builds (BuildKit); copy the binary out of the
# cache mount so the next stage can take it.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p starling --bin starling \
    && install -D -m 0755 target/release/starling /out/starling \
    && install -d -m 0750 /out/data

# --- runtime ---------------------------------------------------------------------------------
# glibc, libgcc, CA certificates and tzdata, no shell; runs as uid/gid 65532 ("nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /out/starling /usr/local/bin/starling
# Listen on every interface inside the container; JSON logs for a log pipeline.
ENV STARLING_SERVER__LISTEN=0.0.0.0:7400 \
    STARLING_TELEMETRY__LOG_FORMAT=json
# `standalone` keeps its SQLite data here (mount a volume); the other processes write nothing.
COPY --from=build --chown=65532:65532 /out/data /var/lib/starling
ENV STARLING_DATA_DIR=/var/lib/starling
WORKDIR /var/lib/starling
USER 65532:65532
EXPOSE 7400
# The binary probes itself (no shell, no curl in the image): GET /readyz on server.listen's port.
HEALTHCHECK --interval=10s --timeout=4s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/starling", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/starling"]
CMD ["standalone"]
