# syntax=docker/dockerfile:1
# The export-service image: the release binaries and the reference plugins on a slim Debian base,
# running as a non-root user. Build: `docker build -t export-service .`
# The service's binary (the entrypoint) runs the service (`serve`, the default), the migrations
# (`migrate`), the cleaner (`clean`) and the plugin tools (`plugin …`); the demo's binary,
# /usr/local/bin/export-demo, runs the demo (`source|export`; docker-compose.yml sets it as the
# entrypoint of its demo services).

# --- build ---------------------------------------------------------------------------------------
FROM docker.io/library/rust:1.95-bookworm AS build
# librdkafka is built from source by rdkafka-sys: it needs a C toolchain, make and zlib.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential zlib1g-dev libssl-dev pkg-config python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add wasm32-wasip2
WORKDIR /src
ENV CARGO_TARGET_DIR=/src/target
COPY . .
RUN scripts/build-plugins.sh \
 && cargo build --locked --release --workspace --bins \
 && mkdir -p /out/plugins /out/demo-bindings \
 && cp plugins/dist/csv_json.wasm plugins/dist/schema_validator.wasm plugins/dist/required_fields.wasm plugins/dist/required_fields_py.wasm /out/plugins/ \
 && cp plugins/dist/csv_json.wasm /out/demo-bindings/exampleApp.wasm \
 && cp target/release/export-service target/release/export-demo /out/

# --- runtime -------------------------------------------------------------------------------------
FROM docker.io/library/debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin export-service
COPY --from=build /out/export-service /usr/local/bin/export-service
COPY --from=build /out/export-demo /usr/local/bin/export-demo
# The reference plugins (push them with `export-service plugin push`), and a bindings directory
# for the demo (PLUGINS_DIR): exampleApp's uploads go through the csv-json converter.
COPY --from=build /out/plugins/ /usr/share/export-service/plugins/
COPY --from=build /out/demo-bindings/ /usr/share/export-service/demo-bindings/
USER 10001:10001
EXPOSE 8000 9000 10000
ENTRYPOINT ["/usr/local/bin/export-service"]
CMD ["serve"]
