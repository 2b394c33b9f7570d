# VM test: crash() the leader's VM (power loss); the survivors elect a new leader, no acknowledged write is lost,
# new writes succeed, and the old leader boots again and catches up. The steps are in failover.py; the same steps
# run on every `cargo test` against real processes on loopback addresses (server/tests/vm_mirror.rs).
{ pkgs, module }:
pkgs.testers.runNixOSTest {
  name = "raftkv-failover";
  nodes = import ./nodes.nix { inherit module; };
  testScript = builtins.readFile ./helpers.py + builtins.readFile ./failover.py;
  # Well above a normal run (minutes), well below the driver's default hour.
  globalTimeout = 1800;
}
