# VM test: a fourth VM joins the running three-node cluster (services.raftkv.join with advertiseAddress), is
# promoted to a voter and catches up; clean restarts (`systemctl restart`) of the leader and of the joined node
# lose nothing; the joined node serves the dashboard (services.raftkv.dashboard) and keeps its data in `dataDir`.
# The steps are in join.py (not mirrored by server/tests/vm_mirror.rs; nixos-tests/local_driver.py runs them).
{ pkgs, module }:
pkgs.testers.runNixOSTest {
  name = "raftkv-join";
  nodes = import ./nodes.nix { inherit module; withJoiner = true; };
  testScript = builtins.readFile ./helpers.py + builtins.readFile ./join.py;
  # Well above a normal run (minutes), well below the driver's default hour.
  globalTimeout = 1800;
}
