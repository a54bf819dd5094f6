# syntax=docker/dockerfile:1
# Orion's image: one binary for every role (`orion gateway`, `orion node`, `orion migrate`).
#
#   docker build -t orion .
#
# The build stage caches the cargo registry and the target directory between builds (BuildKit
# cache mounts), so a source change rebuilds Orion's crates, not the dependencies.

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin orion \
 && install -m 0755 target/release/orion /usr/local/bin/orion

FROM debian:bookworm-slim
# git: the agents clone and push; ca-certificates: HTTPS to model APIs and forges;
# bubblewrap: the sandbox a repository's tests run in (docs/security.md).
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates tini bubblewrap \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 orion \
 && useradd --uid 10001 --gid orion --home-dir /var/lib/orion --create-home orion
COPY --from=build /usr/local/bin/orion /usr/local/bin/orion
USER 10001:10001
WORKDIR /var/lib/orion
ENV ORION__DATA_DIR=/var/lib/orion \
    ORION__SERVER__LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/orion"]
CMD ["up"]
