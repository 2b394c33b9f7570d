# The VMs of the raftkv VM tests: node1, node2, node3, each running services.raftkv (the flake's module) with the
# same initial cluster, by peer address (port 7201; clients use 7001); with `withJoiner`, also node4, which joins
# that cluster. Every VM's hostname resolves on the others. nixos-tests/local_driver.py mirrors these settings
# for its local processes: keep the two in step.
{ module, withJoiner ? false }:
let
  initialCluster = {
    "1" = "node1:7201";
    "2" = "node2:7201";
    "3" = "node3:7201";
  };

  common = { config, pkgs, ... }: {
    imports = [ module ];
    services.raftkv = {
      enable = true;
      openFirewall = true;
      # Peers authenticate with the peer secret (a test secret: in the Nix store, which a real one must not be).
      environmentFile = "/etc/raftkv.env";
      # The partition test's old leader must not keep a client waiting longer than the test does.
      extraArgs = [ "--request-timeout" "3s" ];
    };
    environment.etc."raftkv.env".text = "RAFTKV_PEER_SECRET=vm-test-peer-secret\n";
    # The CLI, for the test script; curl for the dashboard.
    environment.systemPackages = [ config.services.raftkv.package pkgs.curl ];
    virtualisation.memorySize = 1024;
  };

  member = id: {
    imports = [ common ];
    services.raftkv = {
      nodeId = id;
      inherit initialCluster;
    };
  };

  # The join test's fourth node: no initialCluster; it joins the running cluster through its client endpoints,
  # as a learner, advertising its own name (the listen address is the wildcard). Its data lives in `dataDir`,
  # whose root holds a lost+found as a fresh filesystem's would; it serves the dashboard.
  joiner = {
    imports = [ common ];
    services.raftkv = {
      nodeId = 4;
      join = "node1:7001,node2:7001,node3:7001";
      advertiseAddress = "node4:7001";
      dataDir = "/srv/raftkv";
      dashboard.enable = true;
    };
    systemd.tmpfiles.rules = [ "d /srv/raftkv/lost+found 0700 root root -" ];
  };
in
{
  node1 = member 1;
  node2 = member 2;
  node3 = member 3;
} // (if withJoiner then { node4 = joiner; } else { })
