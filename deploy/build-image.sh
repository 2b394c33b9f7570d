#!/usr/bin/env bash
# Builds the raftkv container image without Nix: a fully static binary (x86_64-unknown-linux-musl) in an image
# FROM scratch with the contents and conventions of the Nix image (`nix build .#docker`, nix/packages.nix):
#
#   /bin/raftkv            the entrypoint (command: serve)
#   /bin/sh ...            busybox (static): the Kubernetes command derives the node id in sh; a shell to debug
#   /share/raftkv/web      the dashboard (RAFTKV_WEB_DIR)
#   /etc/ssl/certs/ca-bundle.crt, /etc/passwd, /etc/group (user and group raftkv, 10001)
#   /data                  the volume, owned by 10001, mode 0700; the data directory is /data/raftkv
#   /tmp                   mode 1777
#
# and the same environment (RAFTKV_DATA_DIR, RAFTKV_LISTEN, RAFTKV_HTTP, RAFTKV_LISTEN_PEER, RAFTKV_WEB_DIR,
# SSL_CERT_FILE, TMPDIR, PATH) and ports (7001 client, 7101 HTTP, 7201 peer). The image is tagged raftkv:<version>,
# loaded into podman's local storage, and written as a `docker load`-able archive; the tag is the last line printed.
#
# Usage: deploy/build-image.sh [--binary PATH] [--web-dir DIR] [--archive FILE] [--no-load]
#   --binary PATH   a static raftkv binary to use instead of building one (cargo build --profile image --target
#                   x86_64-unknown-linux-musl)
#   --web-dir DIR   the built dashboard (default web/dist, built by web/build.sh if missing)
#   --archive FILE  where to write the docker-archive (default target/container/raftkv-<version>.tar)
#   --no-load       build and write the archive, but leave the image out of podman's storage afterwards
#
# Needs: podman (podman build of a FROM scratch Containerfile; nothing is pulled), busybox-static, ca-certificates,
# GNU tar, file, and for the build musl-tools (ring's C code) and the rustup target x86_64-unknown-linux-musl (added
# here; rustup downloads it).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-musl
UID_GID=10001
binary="" web_dir="web/dist" archive="" load=1
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --web-dir) web_dir="$2"; shift 2 ;;
    --archive) archive="$2"; shift 2 ;;
    --no-load) load=0; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' Cargo.toml)"
[ -n "$version" ] || { echo "build-image.sh: no workspace.package.version in Cargo.toml" >&2; exit 1; }
tag="raftkv:$version"
archive="${archive:-target/container/raftkv-$version.tar}"
say() { echo "build-image.sh: $*" >&2; }

if [ -z "$binary" ]; then
  rustup target add "$TARGET" >/dev/null
  command -v musl-gcc >/dev/null || { say "musl-gcc is missing: apt-get install musl-tools"; exit 1; }
  say "cargo build --profile image --target $TARGET"
  cargo build --locked --quiet --profile image --target "$TARGET" -p raftkv --bin raftkv
  binary="${CARGO_TARGET_DIR:-target}/$TARGET/image/raftkv"
fi
# A dynamically linked binary would start in no container FROM scratch: refuse it here, not at run time.
if ! file -L "$binary" | grep -Eq 'statically linked|static-pie linked'; then
  say "$binary is not statically linked: $(file -L "$binary")"
  exit 1
fi
if [ ! -f "$web_dir/index.html" ]; then
  [ "$web_dir" = web/dist ] || { say "$web_dir has no index.html (a dashboard build: web/build.sh)"; exit 1; }
  say "building the dashboard (web/build.sh)"
  bash web/build.sh >&2
fi
busybox="$(command -v busybox || true)"
if [ -z "$busybox" ] || ! file -L "$busybox" | grep -q 'statically linked'; then
  say "a static busybox is needed: apt-get install busybox-static"
  exit 1
fi
ca_bundle=/etc/ssl/certs/ca-certificates.crt
[ -f "$ca_bundle" ] || { say "$ca_bundle is missing: apt-get install ca-certificates"; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root"/{bin,etc/ssl/certs,share/raftkv,data,tmp}
install -m 0755 "$binary" "$root/bin/raftkv"
install -m 0755 "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
cp -r "$web_dir" "$root/share/raftkv/web"
install -m 0644 "$ca_bundle" "$root/etc/ssl/certs/ca-bundle.crt"
cat > "$root/etc/passwd" <<EOF
root:x:0:0:root:/root:/bin/false
raftkv:x:$UID_GID:$UID_GID:raftkv:/data:/bin/false
nobody:x:65534:65534:nobody:/var/empty:/bin/false
EOF
cat > "$root/etc/group" <<EOF
root:x:0:
raftkv:x:$UID_GID:
nobody:x:65534:
EOF
chmod 0644 "$root/etc/passwd" "$root/etc/group"

# One layer, as a tar with the ownership the image needs (no root needed to build it): everything root's, /data
# the raftkv user's and private, /tmp world-writable and sticky. Timestamps are the commit's, for reproducibility.
epoch="$(git log -1 --format=%ct 2>/dev/null || echo 0)"
tar_opts=(--numeric-owner --sort=name --mtime="@$epoch" -C "$root")
tar -cf "$work/rootfs.tar" "${tar_opts[@]}" --owner=0 --group=0 --exclude=./data --exclude=./tmp .
tar -rf "$work/rootfs.tar" "${tar_opts[@]}" --owner=$UID_GID --group=$UID_GID --mode=0700 --no-recursion ./data
tar -rf "$work/rootfs.tar" "${tar_opts[@]}" --owner=0 --group=0 --mode=1777 --no-recursion ./tmp

revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD 2>/dev/null || revision="$revision-dirty"
cat > "$work/Containerfile" <<EOF
FROM scratch
ADD rootfs.tar /
USER $UID_GID:$UID_GID
WORKDIR /data
ENV RAFTKV_DATA_DIR=/data/raftkv
ENV RAFTKV_LISTEN=0.0.0.0:7001
ENV RAFTKV_HTTP=0.0.0.0:7101
ENV RAFTKV_LISTEN_PEER=0.0.0.0:7201
ENV RAFTKV_WEB_DIR=/share/raftkv/web
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt
ENV TMPDIR=/tmp
ENV PATH=/bin
EXPOSE 7001/tcp 7101/tcp 7201/tcp
VOLUME /data
LABEL org.opencontainers.image.title=raftkv
LABEL org.opencontainers.image.version=$version
LABEL org.opencontainers.image.licenses=MIT
LABEL org.opencontainers.image.revision=$revision
ENTRYPOINT ["/bin/raftkv"]
CMD ["serve"]
EOF

say "podman build -t $tag"
podman build --quiet --timestamp "$epoch" --tag "$tag" --file "$work/Containerfile" "$work" >/dev/null
mkdir -p "$(dirname "$archive")"
rm -f "$archive"
podman save --quiet --format docker-archive --output "$archive" "$tag"
[ "$load" = 1 ] || podman rmi --force "$tag" >/dev/null
size="$(podman image inspect --format '{{.Size}}' "$tag" 2>/dev/null || stat -c %s "$archive")"
say "image $tag: $((size / 1000000)) MB ($size bytes), binary $(stat -c %s "$binary") bytes; archive $archive ($(stat -c %s "$archive") bytes)"
echo "$tag"
