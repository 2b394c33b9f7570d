# The three VMs of the raftkv VM tests: node1, node2, node3, each running services.raftkv (the flake's module) with
# the same initial cluster, by peer address (port 7201; clients use 7001). Every VM's hostname resolves on the
# others.
{ module }:
let
  initialCluster = {
    "1" = "node1:7201";
    "2" = "node2:7201";
    "3" = "node3:7201";
  };

  node = id: { config, ... }: {
    imports = [ module ];
    services.raftkv = {
      enable = true;
      nodeId = id;
      inherit initialCluster;
      openFirewall = true;
      # Peers authenticate with the peer secret (a test secret: in the Nix store, which a real one must not be).
      environmentFile = "/etc/raftkv.env";
      # The partition test's old leader must not keep a client waiting longer than the test does.
      extraArgs = [ "--request-timeout" "3s" ];
    };
    environment.etc."raftkv.env".text = "RAFTKV_PEER_SECRET=vm-test-peer-secret\n";
    # The CLI, for the test script.
    environment.systemPackages = [ config.services.raftkv.package ];
    virtualisation.memorySize = 1024;
  };
in
{
  node1 = node 1;
  node2 = node 2;
  node3 = node 3;
}
