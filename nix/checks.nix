# `nix flake check`: clippy, rustfmt, the test suite (nextest), the dashboard build, and the NixOS VM tests.
{ pkgs, build, module }:
let
  inherit (build) craneLib commonArgs cargoArtifacts;
in
{
  clippy = craneLib.cargoClippy (commonArgs // {
    inherit cargoArtifacts;
    cargoClippyExtraArgs = "--all-targets -- --deny warnings";
  });

  fmt = craneLib.cargoFmt {
    inherit (commonArgs) src pname version;
    cargoExtraArgs = "--all";
  };

  # The raftkv package's tests: unit tests, the storage suite and the cluster tests, which start the real `raftkv`
  # binary (built by cargo for the tests) on loopback addresses inside the build sandbox.
  nextest = craneLib.cargoNextest (commonArgs // {
    inherit cargoArtifacts;
    cargoExtraArgs = "--locked";
    cargoNextestExtraArgs = "--package raftkv --no-fail-fast";
  });

  inherit (build) dashboard;

  # NixOS VM tests (need KVM): three VMs running services.raftkv.
  vm-failover = import ../nixos-tests/failover.nix { inherit pkgs module; };
  vm-partition = import ../nixos-tests/partition.nix { inherit pkgs module; };
}
