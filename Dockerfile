# The kurator controller image: one statically linked binary on an empty base, no shell, no
# package manager, a non-root UID. Build it with `docker build -t kurator .`,
# `podman build -t kurator .` or `buildah build -t kurator .` (docs/image.md).
#
# CI builds the final stage below without this build stage (no registry is reachable there):
# scripts/build-image builds the same static binary and hands it to `buildah build
# --build-context build=DIR`, so the final stage is this file's and cannot drift.

ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# glibc linked statically (+crt-static): `scratch` has no libc to load. getrandom calls libc's
# getrandom(2) directly: by default it looks the function up with dlsym, which finds nothing in
# a static binary, and falls back to reading /dev/urandom. The explicit --target keeps build
# scripts and proc macros dynamic: they run here and a proc macro cannot be static.
# --no-default-features leaves out the playground and its test environment.
RUN target="$(rustc -vV | sed -n 's/^host: //p')" \
 && RUSTFLAGS='-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom"' \
    cargo build --release --locked -p kurator-cli --no-default-features --target "$target" \
 && mkdir -p /out \
 && cp "target/$target/release/kurator" /out/kurator \
 && if readelf --program-headers /out/kurator | grep -q INTERP; then echo "kurator is dynamic" >&2; exit 1; fi

FROM scratch
COPY --from=build /out/kurator /kurator
# 65532: the non-root UID/GID distroless images use ("nonroot"); no /etc/passwd is needed.
USER 65532:65532
ENTRYPOINT ["/kurator"]
CMD ["controller"]
