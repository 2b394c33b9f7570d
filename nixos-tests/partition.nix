# VM test: block() the leader's network; the majority elects a new leader and accepts writes, the isolated old
# leader cannot commit, and after unblock() it rejoins as a follower and converges. The steps are in partition.py;
# the same steps run on every `cargo test` against real processes (server/tests/vm_mirror.rs).
{ pkgs, module }:
pkgs.testers.runNixOSTest {
  name = "raftkv-partition";
  nodes = import ./nodes.nix { inherit module; };
  testScript = builtins.readFile ./helpers.py + builtins.readFile ./partition.py;
  # Well above a normal run (minutes), well below the driver's default hour.
  globalTimeout = 1800;
}
