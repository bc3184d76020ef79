# syntax=docker/dockerfile:1
# keyhook: a glibc binary, built with the `dist` profile (fat LTO), in a
# distroless, non-root image. glibc rather than a static musl binary: under
# load musl's memcpy and friends cost ~16% of keyhook's throughput (42k vs 50k
# pod reviews/s at 64 HTTP/2 streams, same profile, same machine).
# Build: docker buildx build --platform linux/amd64,linux/arm64 -t IMAGE .
# Without a container engine (and without pulling these bases),
# image/build-oci.py assembles the same shape from a built binary as an OCI
# layout; the test suite builds and checks that one (tests/it/image.rs).

# Debian 12, like the runtime image below: the binary links against the
# glibc it will run on.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist --locked --bin keyhook \
 && install -D -m 0755 target/dist/keyhook /out/keyhook

# cc-debian12: glibc and libgcc_s (all keyhook links besides the kernel's
# vDSO; ring and mimalloc are linked in), CA certificates, and /etc/passwd
# with `nonroot` (65532).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/keyhook /usr/local/bin/keyhook
USER 65532:65532
EXPOSE 9443 8081
ENTRYPOINT ["/usr/local/bin/keyhook"]
CMD ["serve"]
