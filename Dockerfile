# syntax=docker/dockerfile:1.7
#
# The mcp-tunnel image: one static binary that runs every role (SPEC §2, §11).
#
#   docker build -t mcp-tunnel:0.1.0 .
#
# is the whole build (BuildKit, the default builder since Docker 23). It needs nothing
# but this repository and network access to crates.io; Cargo.lock pins every crate
# (--locked). Pin the two base images by digest for a bit-for-bit repeatable build:
#
#   docker build \
#     --build-arg RUST_IMAGE=docker.io/library/rust:1.95-bookworm@sha256:<digest> \
#     --build-arg RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot@sha256:<digest> \
#     -t mcp-tunnel:0.1.0 .
#
# Run time: no shell, no package manager, no libc to load (the binary is linked
# statically against glibc), user 65532:65532, nothing in the image needs to be
# writable, so the container runs with a read-only root filesystem. The setup
# component is also reachable as /setup.

ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# The root filesystem comes from one script, also run without Docker by the tests:
# static glibc binary, /setup link, and a refusal of anything dynamically linked.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    deploy/image/build-static.sh /rootfs

FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="mcp-tunnel" \
      org.opencontainers.image.description="MCP tunnels: proxy, connector, setup, edge and control plane in one binary" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# Root-owned and not writable by the running user; /setup is a symlink to it.
COPY --from=build /rootfs/ /
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/mcp-tunnel"]
CMD ["proxy"]
