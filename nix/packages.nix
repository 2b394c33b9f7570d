# How raftkv is built (called once per system by flake.nix):
#   raftkv     the server/CLI (crate `raftkv`), with crane; its dependencies are built once (cargoArtifacts) and
#              shared with clippy and the test suite in nix/checks.nix
#   dashboard  the Leptos dashboard in web/, built by trunk (crane's buildTrunkPackage) for wasm32
#   docker     a layered image: raftkv + the dashboard, non-root, /data volume
#   cluster    the program behind `nix run .#cluster`
#   devShell   the toolchain from rust-toolchain.toml, trunk, wasm-bindgen-cli, grpcurl
{ pkgs, crane }:
let
  inherit (pkgs) lib;

  # The toolchain of rust-toolchain.toml (stable, rustfmt, clippy, the wasm32 target), from rust-overlay.
  craneLib = (crane.mkLib pkgs).overrideToolchain (p: p.rust-bin.fromRustupToolchainFile ../rust-toolchain.toml);

  root = ../.;

  # crane's default filter keeps Rust and Cargo files only; proto/build.rs also needs the .proto files (compiled
  # with protox, no protoc). The dashboard additionally needs trunk's inputs (web/index.html, Trunk.toml, CSS), kept
  # out of `src` so that editing the page does not rebuild the server.
  protoFiles = lib.fileset.fileFilter (file: file.hasExt "proto") (root + "/proto");
  src = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [
      (craneLib.fileset.commonCargoSources root)
      protoFiles
      (lib.fileset.maybeMissing (root + "/rustfmt.toml"))
      (lib.fileset.maybeMissing (root + "/.config/nextest.toml"))
    ];
  };
  webSrc = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [
      (craneLib.fileset.commonCargoSources root)
      protoFiles
      (lib.fileset.intersection (lib.fileset.maybeMissing (root + "/web"))
        (lib.fileset.fileFilter (file: file.name == "Trunk.toml" || lib.any file.hasExt [ "html" "css" "svg" "ico" ]) root))
      (lib.fileset.maybeMissing (root + "/web/public"))
    ];
  };

  # The workspace's version (server/Cargo.toml inherits it): also the image's tag.
  inherit (craneLib.crateNameFromCargoToml { cargoToml = ../Cargo.toml; }) version;

  commonArgs = {
    inherit src version;
    pname = "raftkv";
    strictDeps = true;
    # The native workspace: everything but the wasm-only dashboard crate.
    cargoExtraArgs = "--locked --workspace --exclude raftkv-web";
  };

  # Dependencies of the native workspace, built once and reused by the package, clippy and the tests.
  cargoArtifacts = craneLib.buildDepsOnly commonArgs;

  raftkv = craneLib.buildPackage (commonArgs // {
    inherit cargoArtifacts;
    cargoExtraArgs = "--locked --package raftkv";
    # The test suite runs once, as the nextest check (nix/checks.nix).
    doCheck = false;
    meta = {
      description = "A strongly consistent, replicated key-value store built on openraft";
      license = lib.licenses.mit;
      mainProgram = "raftkv";
    };
  });

  # trunk needs wasm-bindgen-cli of exactly the version of the wasm-bindgen crate in Cargo.lock (web/Cargo.toml pins
  # "=0.2.114"). Built from the crate if this nixpkgs does not carry that version.
  wasmBindgenCli = pkgs.wasm-bindgen-cli_0_2_114 or (pkgs.buildWasmBindgenCli rec {
    src = pkgs.fetchCrate {
      pname = "wasm-bindgen-cli";
      version = "0.2.114";
      hash = "sha256-xrCym+rFY6EUQFWyWl6OPA+LtftpUAE5pIaElAIVqW0=";
    };
    cargoDeps = pkgs.rustPlatform.fetchCargoVendor {
      inherit src;
      inherit (src) pname version;
      hash = "sha256-Z8+dUXPQq7S+Q7DWNr2Y9d8GMuEdSnq00quUR0wDNPM=";
    };
  });

  wasmArgs = commonArgs // {
    src = webSrc;
    pname = "raftkv-dashboard";
    cargoExtraArgs = "--locked --package raftkv-web";
    CARGO_BUILD_TARGET = "wasm32-unknown-unknown";
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
    # wasm-opt, for trunk's release builds (crane adds it too; named here because the build relies on it).
    nativeBuildInputs = [ pkgs.binaryen ];
    meta.description = "The raftkv dashboard (static files: index.html, wasm, CSS)";
  });

  # `nix run .#cluster`: `raftkv cluster` (3 nodes on 127.0.0.1:7001-7003, the dashboard on 127.0.0.1:8080)
  # serving the dashboard built above; every flag of `raftkv cluster` passes through.
  cluster = pkgs.writeShellApplication {
    name = "raftkv-cluster";
    text = ''
      export RAFTKV_WEB_DIR="''${RAFTKV_WEB_DIR:-${dashboard}}"
      exec ${lib.getExe raftkv} cluster "$@"
    '';
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
      # /bin/sh and wget: the Kubernetes entrypoint derives the node id from the pod name; health checks.
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
      };
    };
  };

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
  inherit craneLib commonArgs cargoArtifacts raftkv dashboard docker cluster devShell;
}
