# One image, both binaries: `shadowcat` (the sidecar) and `shadowcat-operator`.
# Build: docker build -t shadowcat:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p shadowcat-proxy -p shadowcat-operator \
 && mkdir /out \
 && cp target/release/shadowcat target/release/shadowcat-operator /out/

# Distroless: glibc and CA certificates, no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/shadowcat /out/shadowcat-operator /usr/local/bin/
USER 65532:65532
EXPOSE 8080 8081 9090
ENTRYPOINT ["/usr/local/bin/shadowcat"]
