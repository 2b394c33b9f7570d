# `nix flake check`: what CI checks with cargo (clippy, rustfmt, the docs, the whole workspace's tests, the
# dashboard crate natively), the Nix builds (packages, image, cluster app, the dashboard's integrity hashes), the
# Nix files' lint, and the NixOS VM tests (they need KVM).
{ pkgs, build, module }:
let
  inherit (pkgs) lib;
  inherit (build) craneLib commonArgs cargoArtifacts webNativeArgs webNativeArtifacts;

  # A check's output is its verdict: no copy of target/ for a later build to start from.
  leaf = args: args // { doInstallCargoArtifacts = false; };

  clippyArgs = "--all-targets -- --deny warnings";
  # As CI's `RUSTDOCFLAGS="-D warnings" cargo doc --no-deps`.
  docArgs = { RUSTDOCFLAGS = "-D warnings"; };

  nixFiles = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.fileFilter (file: file.hasExt "nix") ../.;
  };
in
{
  clippy = craneLib.cargoClippy (leaf (commonArgs // {
    inherit cargoArtifacts;
    cargoClippyExtraArgs = clippyArgs;
  }));

  # The dashboard crate, natively (as CI lints it; its wasm build is the dashboard check).
  clippy-web = craneLib.cargoClippy (leaf (webNativeArgs // {
    cargoArtifacts = webNativeArtifacts;
    cargoClippyExtraArgs = clippyArgs;
  }));

  fmt = craneLib.cargoFmt (leaf {
    inherit (commonArgs) src pname version;
    cargoExtraArgs = "--all";
  });

  doc = craneLib.cargoDoc (commonArgs // docArgs // { inherit cargoArtifacts; });
  doc-web = craneLib.cargoDoc (webNativeArgs // docArgs // { cargoArtifacts = webNativeArtifacts; });

  # The native workspace's tests (raftkv: unit tests, the storage suite, the cluster tests, which start the real
  # `raftkv` binary on loopback addresses inside the build sandbox; raftkv-proto; the chaos suite) and their
  # doctests. Tests that need etcd, etcdctl or Python's etcd3 skip themselves here, saying so.
  nextest = craneLib.cargoNextest (leaf (commonArgs // {
    inherit cargoArtifacts;
    # The cluster tests' elections run on sub-second timeouts, and `nix flake check` builds clippy, the wasm and
    # the VMs next to them: a test that fails is run again, up to twice, before it counts (nextest reports it as
    # flaky).
    cargoNextestExtraArgs = "--no-fail-fast --retries 2";
    # nextest does not run doctests; cargo does, with the libraries just built.
    postCheck = ''
      cargoWithProfile test --doc ${commonArgs.cargoExtraArgs}
    '';
  }));

  # The dashboard's view-model tests, natively (no browser), and its doctests.
  test-web = craneLib.cargoTest (leaf (webNativeArgs // { cargoArtifacts = webNativeArtifacts; }));

  # Built, not just evaluated: a broken package, image or app wrapper (shellcheck runs when it is built) fails.
  inherit (build) raftkv dashboard docker cluster;

  # Every integrity="sha…" that trunk wrote into index.html matches the file as installed.
  dashboard-sri = pkgs.runCommand "raftkv-dashboard-sri" { nativeBuildInputs = [ pkgs.python3 ]; } ''
    python3 ${./check-sri.py} ${build.dashboard}
    touch $out
  '';

  # .ci/nix-checks' lint of the Nix files (deadnix, nixpkgs-fmt), with nixpkgs' builds of the tools.
  nix-lint = pkgs.runCommand "raftkv-nix-lint" { nativeBuildInputs = [ pkgs.deadnix pkgs.nixpkgs-fmt ]; } ''
    cd ${nixFiles}
    deadnix --fail .
    nixpkgs-fmt --check .
    touch $out
  '';

  # NixOS VM tests (need KVM).
  vm-failover = import ../nixos-tests/failover.nix { inherit pkgs module; };
  vm-partition = import ../nixos-tests/partition.nix { inherit pkgs module; };
  vm-join = import ../nixos-tests/join.nix { inherit pkgs module; };
}
