# services.raftkv: one raftkv node as a hardened systemd service.
#
# Every node of a cluster gets the same `initialCluster` and its own `nodeId`:
#
#   services.raftkv = {
#     enable = true;
#     nodeId = 1;
#     initialCluster = { "1" = "kv1:7201"; "2" = "kv2:7201"; "3" = "kv3:7201"; };   # peer addresses
#     openFirewall = true;
#     environmentFile = "/run/secrets/raftkv";   # RAFTKV_PEER_SECRET=...
#   };
#
# `package` defaults to `pkgs.raftkv` (the flake's overlays.default); the flake's nixosModules.default falls back to
# the flake's own package when nixpkgs has none.
{ config, lib, pkgs, utils, ... }:
let
  cfg = config.services.raftkv;
  inherit (lib) mkEnableOption mkIf mkOption types;

  # "0.0.0.0:7001" and "[::]:7001" -> 7001
  portOf = address: lib.toInt (lib.last (lib.splitString ":" address));
  # "kv1:7201" -> "kv1", "[::1]:7201" -> "[::1]"
  hostOf = address: lib.concatStringsSep ":" (lib.init (lib.splitString ":" address));

  wildcardHosts = [ "" "0.0.0.0" "[::]" "::" ];

  ports = map portOf [ cfg.listenAddress cfg.httpAddress cfg.listenPeerAddress ];
  privilegedPort = lib.any (port: port < 1024) ports;

  # raftkv's own directory inside `dataDir`: a fresh filesystem's lost+found at the mount point's root is then no
  # foreign file in raftkv's directory (which raftkv refuses to adopt).
  dataDir = if cfg.dataDir != null then "${cfg.dataDir}/data" else "/var/lib/${cfg.stateDirectory}";

  clusterEntry = cfg.initialCluster.${toString cfg.nodeId} or null;

  # The peer address: set, or this node's entry in initialCluster, or the client address's host with the peer port.
  advertisePeer =
    if cfg.advertisePeerAddress != null then cfg.advertisePeerAddress
    else if clusterEntry != null then clusterEntry
    else if cfg.advertiseAddress != null then "${hostOf cfg.advertiseAddress}:${toString (portOf cfg.listenPeerAddress)}"
    else null;

  # The client address: set, or the peer address's host with the client port.
  advertise =
    if cfg.advertiseAddress != null then cfg.advertiseAddress
    else if advertisePeer != null then "${hostOf advertisePeer}:${toString (portOf cfg.listenAddress)}"
    else null;

  # The dashboard files served on the HTTP port, if any.
  webDir = if cfg.webDir != null then cfg.webDir else if cfg.dashboard.enable then cfg.dashboard.package else null;

  # TLS files are handed to the service by systemd (LoadCredential=): read as root wherever they are, copied for
  # the dynamic user at every start.
  credentials = "/run/credentials/raftkv.service";
  tlsFiles = lib.filterAttrs (_: file: file != null) {
    "cert.pem" = cfg.certFile;
    "key.pem" = cfg.keyFile;
    "ca.pem" = cfg.trustedCaFile;
    "peer-cert.pem" = cfg.peerCertFile;
    "peer-key.pem" = cfg.peerKeyFile;
    "peer-ca.pem" = cfg.peerTrustedCaFile;
  };
  tlsFileOption = file: what: mkOption {
    type = types.nullOr types.str;
    default = null;
    example = "/run/secrets/raftkv/${file}";
    description = ''
      ${what} (PEM), a path outside the Nix store, read by systemd as root when the service starts. raftkv
      reloads changed certificate files by itself, but here it sees systemd's copies: restart the service after
      renewing them.
    '';
  };

  # Secrets are named by a string, not a Nix path: a path literal (./key.pem) would be copied into the
  # world-readable store. A string that still points into the store is refused too.
  secretFiles = lib.filterAttrs (_: file: file != null) {
    inherit (cfg) certFile keyFile trustedCaFile peerCertFile peerKeyFile peerTrustedCaFile environmentFile;
  };
  outsideStore = path: lib.hasPrefix "/" path && !lib.hasPrefix "${builtins.storeDir}/" path;

  # `pkgs.NAME`, which the flake's overlays.default provides (built with the system's nixpkgs); the flake's
  # nixosModules.default falls back to the flake's own `packages.<system>.FLAKE_NAME`.
  packageOption = name: flakeName: mkOption {
    type = types.package;
    default = pkgs.${name} or (throw ''
      services.raftkv: pkgs has no ${name}. Add raftkv's overlays.default to nixpkgs.overlays, or import raftkv's
      nixosModules.default (which falls back to the flake's packages.<system>.${flakeName}), or set this option.
    '');
    defaultText = lib.literalExpression "pkgs.${name}";
    description = "The ${name} package (`pkgs.${name}` from the flake's overlays.default, or the flake's own `${flakeName}` package).";
  };

  clusterSpec = lib.concatStringsSep "," (lib.mapAttrsToList (id: address: "${id}=${address}") cfg.initialCluster);
in
{
  options.services.raftkv = {
    enable = mkEnableOption "a raftkv node (replicated key-value store)";

    package = packageOption "raftkv" "raftkv";

    nodeId = mkOption {
      type = types.ints.positive;
      example = 1;
      description = "This node's id: unique in the cluster, never reused for another data directory.";
    };

    initialCluster = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = { "1" = "kv1:7201"; "2" = "kv2:7201"; "3" = "kv3:7201"; };
      description = ''
        The members that bootstrap a new cluster, node id to the PEER address other members reach it at (this
        node included; its entry is its advertised peer address). The same on every node. Only read when a node
        starts with an empty data directory, and then refused if the cluster already counts this node as a member
        that has run (its data was lost: `raftkv members remove ID`, then start it with `join`); later membership
        changes go through `raftkv members add/promote/remove`. Leave empty together with `join` to add a node to
        a running cluster.
      '';
    };

    join = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "kv1:7001,kv2:7001";
      description = ''
        Join a running cluster through these client endpoints (comma-separated), as a learner; promote it with
        `raftkv members promote`. Needs `advertiseAddress`.
      '';
    };

    listenAddress = mkOption {
      type = types.str;
      default = "[::]:7001";
      example = "0.0.0.0:7001";
      description = ''
        Client port: gRPC and gRPC-Web listen address (the KV and Cluster services). The default `[::]` takes
        IPv4 connections too (unless `net.ipv6.bindv6only` is set); use `0.0.0.0:7001` on a kernel without IPv6.
        A port below 1024 gives the service CAP_NET_BIND_SERVICE (and no private user namespace).
      '';
    };

    advertiseAddress = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "kv1.example.org:7001";
      description = ''
        The client address other members and clients use to reach this node (default: the host of its peer
        address with the port of `listenAddress`). Required with `join`.
      '';
    };

    listenPeerAddress = mkOption {
      type = types.str;
      default = "[::]:7201";
      example = "0.0.0.0:7201";
      description = "Peer port: the Raft service only, never served on the client port (see `listenAddress`).";
    };

    advertisePeerAddress = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "kv1.example.org:7201";
      description = ''
        The peer address other members use to reach this node (default: its entry in `initialCluster`, else the
        host of `advertiseAddress` with the port of `listenPeerAddress`).
      '';
    };

    certFile = tlsFileOption "server.pem" "The certificate of the client and HTTP ports (--cert-file)";
    keyFile = tlsFileOption "server-key.pem" "The private key of certFile (--key-file)";
    trustedCaFile = tlsFileOption "ca.pem" "The CA of client certificates and of the other members' certFile (--trusted-ca-file)";
    clientCertAuth = mkOption {
      type = types.bool;
      default = false;
      description = "Refuse clients on the client port without a certificate signed by `trustedCaFile` (--client-cert-auth).";
    };
    peerCertFile = tlsFileOption "peer.pem" "The certificate of the peer port (--peer-cert-file); peers then use mutual TLS";
    peerKeyFile = tlsFileOption "peer-key.pem" "The private key of peerCertFile (--peer-key-file)";
    peerTrustedCaFile = tlsFileOption "peer-ca.pem" "The CA of every member's peer certificate (--peer-trusted-ca-file)";

    httpAddress = mkOption {
      type = types.str;
      default = "[::]:7101";
      example = "0.0.0.0:7101";
      description = ''
        HTTP listen address: /metrics, /healthz, /readyz, /status (and the dashboard, see `dashboard.enable`);
        see `listenAddress`.
      '';
    };

    dashboard = {
      enable = mkEnableOption "the dashboard (`dashboard.package`) on the HTTP port";
      package = packageOption "raftkv-dashboard" "dashboard";
    };

    webDir = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = lib.literalExpression "raftkv.packages.\${pkgs.stdenv.hostPlatform.system}.dashboard";
      description = "Serve these dashboard files on the HTTP port instead of `dashboard.package` (implies serving one).";
    };

    stateDirectory = mkOption {
      type = types.str;
      default = "raftkv";
      description = ''
        Unless `dataDir` is set, the node's data (WAL, snapshots) is /var/lib/<stateDirectory>, managed by systemd
        (StateDirectory=) for the service's dynamic user. Do not mount a filesystem there (its lost+found would be
        a foreign file in raftkv's directory): use `dataDir` for a dedicated disk.
      '';
    };

    dataDir = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/srv/raftkv";
      description = ''
        Keep the node's data under this directory instead of /var/lib/<stateDirectory>, e.g. the mount point of
        a dedicated disk (the service waits for its mount). raftkv's files go into its `data` sub-directory, so a
        filesystem's lost+found at the root does no harm. The service then runs as the static user and group
        `raftkv`, which own this directory (created if missing, mode 0700).
      '';
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the client, HTTP and peer ports in the firewall.";
    };

    environmentFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/secrets/raftkv.env";
      description = ''
        An environment file read by systemd, outside the Nix store (a string, not a Nix path, so that it is not
        copied into the store): put `RAFTKV_PEER_SECRET=...` (at least 8 printable characters, the same on every
        node) here so that only nodes that know it can speak the Raft protocol on the peer port (without peer TLS
        the only peer authentication; with it, checked as well).
      '';
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "--log-json" "--snapshot-every" "50000" ];
      description = "Extra arguments for `raftkv serve` (see `raftkv serve --help`); passed verbatim (no systemd % or $ expansion).";
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
      {
        assertion = cfg.join == null || cfg.advertiseAddress != null;
        message = "services.raftkv: join needs advertiseAddress (the client address members and clients reach this node at; the listen address is a wildcard).";
      }
      {
        # Members would send this node's traffic to their own wildcard address, i.e. to themselves.
        assertion = lib.all (address: address == null || !lib.elem (hostOf address) wildcardHosts) [ advertise advertisePeer ];
        message = "services.raftkv: the advertised addresses (${toString advertise}, ${toString advertisePeer}) must name this node, not a wildcard; set advertiseAddress / advertisePeerAddress.";
      }
      {
        assertion = cfg.advertisePeerAddress == null || clusterEntry == null || clusterEntry == cfg.advertisePeerAddress;
        message = "services.raftkv: initialCluster.\"${toString cfg.nodeId}\" must equal advertisePeerAddress (initialCluster lists peer addresses).";
      }
      {
        assertion = (cfg.certFile == null) == (cfg.keyFile == null) && (cfg.certFile == null) == (cfg.trustedCaFile == null);
        message = "services.raftkv: set certFile, keyFile and trustedCaFile together.";
      }
      {
        assertion = !cfg.clientCertAuth || cfg.certFile != null;
        message = "services.raftkv: clientCertAuth needs certFile, keyFile and trustedCaFile.";
      }
      {
        assertion = (cfg.peerCertFile == null) == (cfg.peerKeyFile == null) && (cfg.peerCertFile == null) == (cfg.peerTrustedCaFile == null);
        message = "services.raftkv: set peerCertFile, peerKeyFile and peerTrustedCaFile together.";
      }
      {
        assertion = cfg.dataDir == null || outsideStore cfg.dataDir;
        message = "services.raftkv: dataDir must be an absolute path outside the Nix store.";
      }
    ] ++ lib.mapAttrsToList
      (name: file: {
        assertion = outsideStore file;
        message = "services.raftkv: ${name} (${file}) must be an absolute path outside the Nix store, which anyone can read.";
      })
      secretFiles;

    warnings = lib.optional (cfg.openFirewall && cfg.peerCertFile == null && cfg.environmentFile == null)
      "services.raftkv: openFirewall opens the peer port, but peers are not authenticated (no peerCertFile, no environmentFile with RAFTKV_PEER_SECRET).";

    networking.firewall.allowedTCPPorts = mkIf cfg.openFirewall ports;

    # With dataDir: a static user (a dynamic user's uid cannot own a directory systemd does not manage).
    users.users.raftkv = mkIf (cfg.dataDir != null) {
      isSystemUser = true;
      group = "raftkv";
      description = "raftkv node";
    };
    users.groups.raftkv = mkIf (cfg.dataDir != null) { };
    systemd.tmpfiles.settings."10-raftkv" = mkIf (cfg.dataDir != null) {
      ${cfg.dataDir}.d = {
        user = "raftkv";
        group = "raftkv";
        mode = "0700";
      };
    };

    systemd.services.raftkv = {
      description = "raftkv node ${toString cfg.nodeId}";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      unitConfig = lib.optionalAttrs (cfg.dataDir != null) { RequiresMountsFor = [ cfg.dataDir ]; };
      # A node that cannot start (a configuration error, a refused data directory) ends up `failed` after a few
      # tries instead of restarting forever; `systemctl restart raftkv` starts it again.
      startLimitBurst = 5;
      startLimitIntervalSec = 60;

      environment = {
        RAFTKV_ID = toString cfg.nodeId;
        RAFTKV_LISTEN = cfg.listenAddress;
        RAFTKV_LISTEN_PEER = cfg.listenPeerAddress;
        RAFTKV_HTTP = cfg.httpAddress;
        RAFTKV_DATA_DIR = dataDir;
      }
      // lib.optionalAttrs (advertise != null) { RAFTKV_ADVERTISE = advertise; }
      // lib.optionalAttrs (advertisePeer != null) { RAFTKV_ADVERTISE_PEER = advertisePeer; }
      // lib.optionalAttrs (cfg.certFile != null) {
        RAFTKV_CERT_FILE = "${credentials}/cert.pem";
        RAFTKV_KEY_FILE = "${credentials}/key.pem";
        RAFTKV_TRUSTED_CA_FILE = "${credentials}/ca.pem";
      }
      // lib.optionalAttrs cfg.clientCertAuth { RAFTKV_CLIENT_CERT_AUTH = "true"; }
      // lib.optionalAttrs (cfg.peerCertFile != null) {
        RAFTKV_PEER_CERT_FILE = "${credentials}/peer-cert.pem";
        RAFTKV_PEER_KEY_FILE = "${credentials}/peer-key.pem";
        RAFTKV_PEER_TRUSTED_CA_FILE = "${credentials}/peer-ca.pem";
      }
      // lib.optionalAttrs (cfg.initialCluster != { }) { RAFTKV_INITIAL_CLUSTER = clusterSpec; }
      // lib.optionalAttrs (cfg.join != null) { RAFTKV_JOIN = cfg.join; }
      // lib.optionalAttrs (webDir != null) { RAFTKV_WEB_DIR = "${webDir}"; };

      serviceConfig = {
        # systemd is not a shell: quoted for its own rules, with % and $ escaped.
        ExecStart = utils.escapeSystemdExecArgs ([ (lib.getExe cfg.package) "serve" ] ++ cfg.extraArgs);
        EnvironmentFile = lib.optional (cfg.environmentFile != null) cfg.environmentFile;
        LoadCredential = lib.mapAttrsToList (name: file: "${name}:${file}") tlsFiles;
        Restart = "on-failure";
        RestartSec = "2s";
        # Exit status 2 is a command-line or environment error (clap): restarting cannot fix it.
        RestartPreventExitStatus = 2;
        # SIGTERM is a clean shutdown; give it time before systemd escalates.
        TimeoutStopSec = "30s";
        LimitNOFILE = 65536;

        UMask = "0077";

        # Hardening: the node needs its data directory, TCP sockets and nothing else.
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        # A user namespace's capabilities do not count for the host's network: binding a port below 1024 needs
        # the service in the host's user namespace.
        PrivateUsers = !privilegedPort;
        ProtectHostname = true;
        ProtectClock = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectProc = "invisible";
        ProcSubset = "pid";
        CapabilityBoundingSet = if privilegedPort then [ "CAP_NET_BIND_SERVICE" ] else "";
        AmbientCapabilities = if privilegedPort then [ "CAP_NET_BIND_SERVICE" ] else "";
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
        # A filtered system call fails with EPERM (which raftkv reports) instead of killing the process (SIGSYS).
        SystemCallErrorNumber = "EPERM";
      }
      // (if cfg.dataDir == null then {
        DynamicUser = true;
        StateDirectory = cfg.stateDirectory;
        StateDirectoryMode = "0700";
      } else {
        User = "raftkv";
        Group = "raftkv";
        ReadWritePaths = [ cfg.dataDir ];
      });
    };
  };
}
