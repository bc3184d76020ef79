# syntax=docker/dockerfile:1
# keyhook: a static (musl) binary, built with the `dist` profile (fat LTO), in a distroless, non-root image.
# Build: docker buildx build --platform linux/amd64,linux/arm64 -t IMAGE .

FROM rust:1-bookworm AS build
ARG TARGETARCH
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# ring's and mimalloc's C build with musl-gcc; rustls reads the image's CA roots.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    case "$TARGETARCH" in \
      amd64) target=x86_64-unknown-linux-musl ;; \
      arm64) target=aarch64-unknown-linux-musl ;; \
      *) echo "unsupported TARGETARCH $TARGETARCH" >&2; exit 1 ;; \
    esac \
 && rustup target add "$target" \
 && cargo build --profile dist --locked --target "$target" --bin keyhook \
 && install -D -m 0755 "target/$target/dist/keyhook" /out/keyhook

# static-debian12 carries CA certificates and /etc/passwd with `nonroot` (65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/keyhook /usr/local/bin/keyhook
USER 65532:65532
EXPOSE 9443 8081
ENTRYPOINT ["/usr/local/bin/keyhook"]
CMD ["serve"]
