# services.raftkv: one raftkv node as a hardened systemd service.
#
# Every node of a cluster gets the same `initialCluster` and its own `nodeId`:
#
#   services.raftkv = {
#     enable = true;
#     nodeId = 1;
#     initialCluster = { "1" = "kv1:7001"; "2" = "kv2:7001"; "3" = "kv3:7001"; };
#     openFirewall = true;
#     environmentFile = "/run/secrets/raftkv";   # RAFTKV_PEER_SECRET=...
#   };
#
# The flake's nixosModules.default sets `package` to the flake's raftkv.
{ config, lib, ... }:
let
  cfg = config.services.raftkv;
  inherit (lib) mkEnableOption mkIf mkOption types;

  # "0.0.0.0:7001" and "[::]:7001" -> 7001
  portOf = address: lib.toInt (lib.last (lib.splitString ":" address));

  dataDir = "/var/lib/${cfg.stateDirectory}";

  advertise =
    if cfg.advertiseAddress != null then cfg.advertiseAddress
    else cfg.initialCluster.${toString cfg.nodeId} or null;

  clusterSpec = lib.concatStringsSep "," (lib.mapAttrsToList (id: address: "${id}=${address}") cfg.initialCluster);
in
{
  options.services.raftkv = {
    enable = mkEnableOption "a raftkv node (replicated key-value store)";

    package = mkOption {
      type = types.package;
      description = "The raftkv package (the flake's nixosModules.default sets it to the flake's raftkv).";
    };

    nodeId = mkOption {
      type = types.ints.positive;
      example = 1;
      description = "This node's id: unique in the cluster, never reused for another data directory.";
    };

    initialCluster = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = { "1" = "kv1:7001"; "2" = "kv2:7001"; "3" = "kv3:7001"; };
      description = ''
        The members that bootstrap a new cluster, node id to the gRPC address peers reach it at (this node
        included). The same on every node. Only read the first time a node starts with an empty data directory;
        later membership changes go through `raftkv members add/promote/remove`. Leave empty together with
        `join` to add a node to a running cluster.
      '';
    };

    join = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "kv1:7001";
      description = "Join a running cluster through this endpoint (as a learner; promote it with `raftkv members promote`).";
    };

    listenAddress = mkOption {
      type = types.str;
      default = "0.0.0.0:7001";
      description = "gRPC and gRPC-Web listen address (clients and peers).";
    };

    advertiseAddress = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "kv1.example.org:7001";
      description = "The address other nodes and clients use to reach this node (default: this node's entry in `initialCluster`).";
    };

    httpAddress = mkOption {
      type = types.str;
      default = "0.0.0.0:7101";
      description = "HTTP listen address: /metrics, /healthz, /readyz, /status (and the dashboard when `webDir` is set).";
    };

    webDir = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = lib.literalExpression "raftkv.packages.\${pkgs.system}.dashboard";
      description = "Serve these dashboard files on the HTTP port (the flake's `dashboard` package).";
    };

    stateDirectory = mkOption {
      type = types.str;
      default = "raftkv";
      description = "The node's data directory (WAL, snapshots) is /var/lib/<stateDirectory>, managed by systemd (StateDirectory=).";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the gRPC and HTTP ports in the firewall.";
    };

    environmentFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/run/secrets/raftkv.env";
      description = ''
        An environment file read by systemd, outside the Nix store: put `RAFTKV_PEER_SECRET=...` (the same on every
        node) here so that only nodes that know it can speak the Raft protocol on the shared port.
      '';
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "--log-json" "--snapshot-every" "50000" ];
      description = "Extra arguments for `raftkv serve` (see `raftkv serve --help`).";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = (cfg.initialCluster != { }) != (cfg.join != null);
        message = "services.raftkv: set exactly one of initialCluster (bootstrap) and join.";
      }
      {
        assertion = cfg.initialCluster == { } || cfg.initialCluster ? ${toString cfg.nodeId};
        message = "services.raftkv: initialCluster must contain this node (nodeId ${toString cfg.nodeId}).";
      }
    ];

    networking.firewall.allowedTCPPorts = mkIf cfg.openFirewall [ (portOf cfg.listenAddress) (portOf cfg.httpAddress) ];

    systemd.services.raftkv = {
      description = "raftkv node ${toString cfg.nodeId}";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];

      environment = {
        RAFTKV_ID = toString cfg.nodeId;
        RAFTKV_LISTEN = cfg.listenAddress;
        RAFTKV_HTTP = cfg.httpAddress;
        RAFTKV_DATA_DIR = dataDir;
      }
      // lib.optionalAttrs (advertise != null) { RAFTKV_ADVERTISE = advertise; }
      // lib.optionalAttrs (cfg.initialCluster != { }) { RAFTKV_INITIAL_CLUSTER = clusterSpec; }
      // lib.optionalAttrs (cfg.join != null) { RAFTKV_JOIN = cfg.join; }
      // lib.optionalAttrs (cfg.webDir != null) { RAFTKV_WEB_DIR = "${cfg.webDir}"; };

      serviceConfig = {
        ExecStart = "${lib.getExe cfg.package} serve ${lib.escapeShellArgs cfg.extraArgs}";
        EnvironmentFile = lib.optional (cfg.environmentFile != null) cfg.environmentFile;
        Restart = "on-failure";
        RestartSec = "2s";
        # SIGTERM is a clean shutdown; give it time before systemd escalates.
        TimeoutStopSec = "30s";
        LimitNOFILE = 65536;

        DynamicUser = true;
        StateDirectory = cfg.stateDirectory;
        StateDirectoryMode = "0700";
        UMask = "0077";

        # Hardening: the node needs its state directory, TCP sockets and nothing else.
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        PrivateUsers = true;
        ProtectHostname = true;
        ProtectClock = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectProc = "invisible";
        ProcSubset = "pid";
        CapabilityBoundingSet = "";
        AmbientCapabilities = "";
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        RemoveIPC = true;
        DevicePolicy = "closed";
        SystemCallArchitectures = "native";
        SystemCallFilter = [ "@system-service" "~@privileged" ];
      };
    };
  };
}
