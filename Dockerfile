# One image, both binaries: `shadowcat` (the sidecar) and `shadowcat-operator`.
# Build: docker build -t shadowcat:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Stripped binaries: the workspace's release profile keeps line tables for
# local profiling; an image has no use for them. Set before the first build:
# a profile change would rebuild every dependency.
ENV CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_PROFILE_RELEASE_DEBUG=false

# Dependencies first, in a layer of their own that only a manifest or
# Cargo.lock change rebuilds: every workspace member's manifest, and stubs for
# every target path they declare or imply (cargo loads all members, even the
# ones not built here).
COPY Cargo.toml Cargo.lock ./
COPY crds/Cargo.toml crds/
COPY proxy/Cargo.toml proxy/
COPY operator/Cargo.toml operator/
COPY tests/Cargo.toml tests/
COPY benches/Cargo.toml benches/
RUN for lib in crds proxy operator tests benches; do \
      mkdir -p "$lib/src" && : > "$lib/src/lib.rs"; \
    done \
 && mkdir -p benches/src/bin \
 && for main in proxy/src/main.rs operator/src/main.rs benches/src/main.rs \
      benches/src/bin/shadowcat-flood.rs benches/src/bin/shadowcat-scale.rs \
      benches/src/bin/shadowcat-bench-upstream.rs; do \
      echo 'fn main() {}' > "$main"; \
    done \
 && cargo build --release --locked -p shadowcat-proxy -p shadowcat-operator

# The real sources. COPY keeps their modification times, which can be older
# than the stub build, and cargo would then take the stubs' output as fresh:
# clean the workspace's own crates so they are compiled again.
COPY . .
RUN cargo clean --release -p shadowcat-crds -p shadowcat-proxy -p shadowcat-operator \
 && cargo build --release --locked -p shadowcat-proxy -p shadowcat-operator \
 && mkdir /out \
 && cp target/release/shadowcat target/release/shadowcat-operator /out/

# Distroless: glibc and CA certificates, no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/shadowcat /out/shadowcat-operator /usr/local/bin/
USER 65532:65532
# 8080: the sidecar's MCP listener; 15201 and 15202: the injected sidecar's
# admin and peer ports (the operator's defaults); 9443: the operator's
# admission webhook; 9090: the operator's admin port (health, readiness,
# metrics).
EXPOSE 8080 15201 15202 9443 9090
ENTRYPOINT ["/usr/local/bin/shadowcat"]
