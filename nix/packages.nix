# How raftkv is built (called once per system by flake.nix, and by its overlays.default with the user's nixpkgs):
#   raftkv        the server/CLI (crate `raftkv`), with crane; its dependencies are built once (cargoArtifacts) and
#                 shared with clippy, the docs and the test suite in nix/checks.nix
#   raftkv-chaos  the chaos suite's runner, with the raftkv binary it drives next to it
#   dashboard     the Leptos dashboard in web/, built by trunk (crane's buildTrunkPackage) for wasm32
#   docker        a layered image: raftkv + the dashboard, non-root, /data volume
#   cluster       the program behind `nix run .#cluster`
#   devShell      the toolchain from rust-toolchain.toml, trunk, wasm-bindgen-cli, grpcurl
#
# `revision` (the flake's git revision) labels the image.
{ pkgs, crane, revision ? "dirty" }:
let
  inherit (pkgs) lib;

  # The toolchain of rust-toolchain.toml (stable, rustfmt, clippy, the wasm32 target), from rust-overlay.
  craneLib = (crane.mkLib pkgs).overrideToolchain (p: p.rust-bin.fromRustupToolchainFile ../rust-toolchain.toml);

  root = ../.;

  # The repository URL, once (Cargo.toml): the packages' homepage and the image's source label.
  inherit (lib.importTOML ../Cargo.toml) workspace;
  homepage = workspace.package.repository;

  # crane's default filter keeps Rust and Cargo files only; proto/build.rs also needs the .proto files (compiled
  # with protox, no protoc).
  protoFiles = lib.fileset.fileFilter (file: file.hasExt "proto") (root + "/proto");
  src = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [
      (craneLib.fileset.cargoTomlAndLock root)
      (craneLib.fileset.rust root)
      (craneLib.fileset.configToml root)
      protoFiles
      # The only other TOML the checks read (not every *.toml: editing nixos-tests/ruff.toml rebuilds nothing).
      (lib.fileset.maybeMissing (root + "/rustfmt.toml"))
      (lib.fileset.maybeMissing (root + "/.config/nextest.toml"))
    ];
  };
  # The dashboard: cargo loads every member's manifest but compiles only web/ and proto/, so the server's and the
  # chaos suite's sources stay out (editing them does not rebuild the dashboard); trunk's inputs (index.html,
  # Trunk.toml, CSS) stay out of `src`, so editing the page does not rebuild the server.
  webSrc = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [
      (craneLib.fileset.cargoTomlAndLock root)
      (craneLib.fileset.rust (root + "/web/src"))
      (craneLib.fileset.rust (root + "/proto"))
      protoFiles
      (lib.fileset.intersection (lib.fileset.maybeMissing (root + "/web"))
        (lib.fileset.fileFilter (file: file.name == "Trunk.toml" || lib.any file.hasExt [ "html" "css" "svg" "ico" ]) root))
      (lib.fileset.maybeMissing (root + "/web/public"))
    ];
  };

  # The workspace's version (server/Cargo.toml inherits it): also the image's tag.
  inherit (workspace.package) version;

  commonArgs = {
    inherit src version;
    pname = "raftkv";
    strictDeps = true;
    # The native workspace: everything but the wasm-only dashboard crate.
    cargoExtraArgs = "--locked --workspace --exclude raftkv-web";
  };

  # Dependencies of the native workspace, built once and reused by the packages, clippy, the docs and the tests.
  cargoArtifacts = craneLib.buildDepsOnly commonArgs;

  raftkv = craneLib.buildPackage (commonArgs // {
    inherit cargoArtifacts;
    cargoExtraArgs = "--locked --package raftkv";
    # The test suite runs once, as the nextest check (nix/checks.nix).
    doCheck = false;
    meta = {
      description = "A strongly consistent, replicated key-value store built on openraft";
      inherit homepage;
      license = lib.licenses.mit;
      # `raftkv cluster` and the etcd benchmark use prctl(PR_SET_PDEATHSIG).
      platforms = lib.platforms.linux;
      mainProgram = "raftkv";
    };
  });

  # raftkv-chaos looks for the raftkv binary next to its own (the real path, symlinks resolved): both are built
  # and installed here.
  raftkv-chaos = craneLib.buildPackage (commonArgs // {
    inherit cargoArtifacts;
    pname = "raftkv-chaos";
    cargoExtraArgs = "--locked --package raftkv-chaos --package raftkv";
    doCheck = false;
    meta = {
      description = "raftkv's chaos suite: faults while clients run, recorded histories, a linearizability checker";
      inherit homepage;
      license = lib.licenses.mit;
      platforms = lib.platforms.linux;
      mainProgram = "raftkv-chaos";
    };
  });

  # trunk needs wasm-bindgen-cli of exactly the version of the wasm-bindgen crate in Cargo.lock (web/Cargo.toml pins
  # it). Always built from this expression rather than nixpkgs' wasm-bindgen-cli_X_Y_Z attribute: that attribute
  # may be missing or a `throw` alias at a given pin, and `or` does not catch a throw. The arguments are those of
  # nixpkgs' package for this version, so where nixpkgs carries it this is normally the same derivation (a binary
  # cache hit).
  wasmBindgenCli =
    let
      crate = pkgs.fetchCrate {
        pname = "wasm-bindgen-cli";
        version = "0.2.114";
        hash = "sha256-xrCym+rFY6EUQFWyWl6OPA+LtftpUAE5pIaElAIVqW0=";
      };
    in
    pkgs.buildWasmBindgenCli {
      src = crate;
      cargoDeps = pkgs.rustPlatform.fetchCargoVendor {
        src = crate;
        inherit (crate) pname version;
        hash = "sha256-Z8+dUXPQq7S+Q7DWNr2Y9d8GMuEdSnq00quUR0wDNPM=";
      };
    };

  # One vendor directory for the dashboard and its dependencies, named in the rustflags below.
  wasmVendorDir = craneLib.vendorCargoDeps { src = webSrc; };

  wasmArgs = commonArgs // {
    src = webSrc;
    pname = "raftkv-dashboard";
    cargoExtraArgs = "--locked --package raftkv-web";
    CARGO_BUILD_TARGET = "wasm32-unknown-unknown";
    cargoVendorDir = wasmVendorDir;
    # Panic locations of vendored crates name their store path. crane rewrites such paths after the build, which
    # would leave the wasm's bytes different from the sha384 that trunk wrote into index.html (integrity=): remap
    # them at compile time instead, so trunk hashes the final bytes. Set on the dependencies too (same flags, so
    # their artifacts are reused; they carry most of those strings).
    CARGO_BUILD_RUSTFLAGS = "--remap-path-prefix=${wasmVendorDir}=/cargo-vendor";
  };

  dashboard = craneLib.buildTrunkPackage (wasmArgs // {
    # web/index.html has trunk build the wasm with the workspace's `wasm-release` profile; its dependencies too.
    cargoArtifacts = craneLib.buildDepsOnly (wasmArgs // {
      doCheck = false;
      CARGO_PROFILE = "wasm-release";
    });
    # trunk runs in the crate's directory; its dist/ is installed from the workspace root.
    preBuild = ''
      cd web
    '';
    postBuild = ''
      mv dist ..
      cd ..
    '';
    wasm-bindgen-cli = wasmBindgenCli;
    # crane's reference-stripping hooks stay on: with the remapping above they find nothing to rewrite, and should
    # they ever rewrite a file, the dashboard-sri check (nix/checks.nix) fails.
    meta = {
      description = "The raftkv dashboard (static files: index.html, wasm, CSS)";
      inherit homepage;
      license = lib.licenses.mit;
    };
  });

  # `nix run .#cluster`: `raftkv cluster` (3 nodes on 127.0.0.1:7001-7003, the dashboard on 127.0.0.1:8080)
  # serving the dashboard built above; every flag of `raftkv cluster` passes through.
  cluster = pkgs.writeShellApplication {
    name = "raftkv-cluster";
    text = ''
      web_dir="''${RAFTKV_WEB_DIR:-${dashboard}}"
      # `raftkv cluster` passes its environment on to the nodes it starts, and `raftkv serve` reads RAFTKV_WEB_DIR
      # too: hand the directory over as a flag, so that only the dashboard on 127.0.0.1:8080 serves it (as under
      # `cargo run -- cluster`).
      unset RAFTKV_WEB_DIR
      prev=""
      for arg in "$@"; do
        # The caller's own --web-dir wins (giving it twice is an error); a --serve-arg value is not the flag.
        if [ "$prev" != "--serve-arg" ]; then
          case "$arg" in
            --web-dir | --web-dir=*) exec ${lib.getExe raftkv} cluster "$@" ;;
          esac
        fi
        prev="$arg"
      done
      exec ${lib.getExe raftkv} cluster --web-dir "$web_dir" "$@"
    '';
    meta = {
      description = "A local 3-node raftkv cluster with the dashboard";
      platforms = lib.platforms.linux;
      mainProgram = "raftkv-cluster";
    };
  };

  uid = "10001";

  # The dashboard at /share/raftkv/web inside the image.
  webRoot = pkgs.runCommand "raftkv-web-root" { } ''
    mkdir -p $out/share/raftkv
    ln -s ${dashboard} $out/share/raftkv/web
  '';

  docker = pkgs.dockerTools.buildLayeredImage {
    name = "raftkv";
    # A fixed tag (not the store hash), so compose.yaml and the Kubernetes manifests can name it.
    tag = version;
    contents = [
      raftkv
      webRoot
      pkgs.dockerTools.caCertificates
      # /bin/sh: the Kubernetes entrypoint derives the node id from the pod name (health checks are `raftkv probe`).
      pkgs.busybox
      (pkgs.dockerTools.fakeNss.override {
        extraPasswdLines = [ "raftkv:x:${uid}:${uid}:raftkv:/data:/bin/false" ];
        extraGroupLines = [ "raftkv:x:${uid}:" ];
      })
    ];
    fakeRootCommands = ''
      mkdir -p data tmp
      chown ${uid}:${uid} data
      chmod 0700 data
      chmod 1777 tmp
    '';
    # `created` stays at the epoch (the default) so that the image is reproducible.
    config = {
      User = "${uid}:${uid}";
      Entrypoint = [ (lib.getExe raftkv) ];
      Cmd = [ "serve" ];
      WorkingDir = "/data";
      Env = [
        # A sub-directory of the volume, so a filesystem's lost+found at its root does no harm.
        "RAFTKV_DATA_DIR=/data/raftkv"
        "RAFTKV_LISTEN=0.0.0.0:7001"
        "RAFTKV_HTTP=0.0.0.0:7101"
        "RAFTKV_LISTEN_PEER=0.0.0.0:7201"
        "RAFTKV_WEB_DIR=/share/raftkv/web"
        "SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt"
        "TMPDIR=/tmp"
        "PATH=/bin"
      ];
      ExposedPorts = {
        "7001/tcp" = { };
        "7101/tcp" = { };
        "7201/tcp" = { };
      };
      Volumes = { "/data" = { }; };
      Labels = {
        "org.opencontainers.image.title" = "raftkv";
        "org.opencontainers.image.version" = version;
        "org.opencontainers.image.licenses" = "MIT";
        "org.opencontainers.image.source" = homepage;
        "org.opencontainers.image.revision" = revision;
      };
    };
  };

  # The dashboard crate compiled natively, as CI's clippy, docs and tests do (its view-model tests need no browser).
  webNativeArgs = commonArgs // {
    pname = "raftkv-web";
    cargoExtraArgs = "--locked --package raftkv-web";
  };
  webNativeArtifacts = craneLib.buildDepsOnly webNativeArgs;

  devShell = craneLib.devShell {
    packages = [
      pkgs.trunk
      wasmBindgenCli
      pkgs.binaryen
      pkgs.grpcurl
      pkgs.cargo-nextest
    ];
  };
in
{
  inherit craneLib commonArgs cargoArtifacts webNativeArgs webNativeArtifacts;
  inherit raftkv raftkv-chaos dashboard docker cluster devShell;
}
