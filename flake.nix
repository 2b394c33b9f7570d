{
  description = "raftkv: a strongly consistent, replicated key-value store (Raft), its dashboard, images and NixOS module";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
    crane.url = "github:ipetkov/crane";
    rust-overlay = {
      url = "github:oxalica/rust-overlay";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs = { self, nixpkgs, crane, rust-overlay }:
    let
      inherit (nixpkgs) lib;

      # Linux only: the NixOS module, the VM tests and the image are Linux-only, and so is the server itself
      # (prctl(PR_SET_PDEATHSIG) in `raftkv cluster`), so there is nothing to offer on Darwin yet.
      systems = [ "x86_64-linux" "aarch64-linux" ];

      # The image's org.opencontainers.image.revision label.
      revision = self.rev or self.dirtyRev or "dirty";

      # Everything that is built, once per system (nix/packages.nix); the outputs below only pick from it.
      perSystem = lib.genAttrs systems (system:
        let
          pkgs = import nixpkgs {
            inherit system;
            overlays = [ rust-overlay.overlays.default ];
          };
        in
        {
          inherit pkgs;
          build = import ./nix/packages.nix { inherit pkgs crane revision; };
        });

      forAllSystems = f: lib.mapAttrs (_system: s: f s) perSystem;

      # The flake's own package for a NixOS system's platform, for the module's defaults.
      flakePackage = system: name:
        self.packages.${system}.${name} or (throw ''
          raftkv's flake has no packages.${system}.${name}; add raftkv.overlays.default to nixpkgs.overlays (builds
          it with the system's nixpkgs) or set the services.raftkv package option.
        '');
    in
    {
      packages = forAllSystems ({ build, ... }: {
        inherit (build) raftkv raftkv-chaos dashboard docker cluster;
        default = build.raftkv;
      });

      # `nix run .#cluster` (or just `nix run`): the local 3-node cluster with the dashboard.
      apps = forAllSystems ({ build, ... }:
        let
          cluster = {
            type = "app";
            program = lib.getExe build.cluster;
            meta.description = "a local 3-node raftkv cluster with the dashboard";
          };
        in
        {
          inherit cluster;
          default = cluster;
        });

      # pkgs.raftkv and pkgs.raftkv-dashboard built with the nixpkgs this is applied to (so a NixOS system's
      # closure shares its glibc), with the toolchain of rust-toolchain.toml from rust-overlay (applied too).
      # Spelled `final: prev:`, the form `nix flake check` requires of an overlay.
      overlays.default = final: prev:
        lib.composeExtensions rust-overlay.overlays.default
          (pkgsFinal: _:
            let
              build = import ./nix/packages.nix { pkgs = pkgsFinal; inherit crane revision; };
            in
            {
              inherit (build) raftkv;
              raftkv-dashboard = build.dashboard;
            })
          final
          prev;

      # services.raftkv (nix/module.nix). Its packages default to pkgs.raftkv and pkgs.raftkv-dashboard when the
      # system's nixpkgs has them (overlays.default), else to this flake's own.
      nixosModules.default = { pkgs, lib, ... }:
        let
          inherit (pkgs.stdenv.hostPlatform) system;
        in
        {
          imports = [ ./nix/module.nix ];
          services.raftkv.package = lib.mkDefault (pkgs.raftkv or (flakePackage system "raftkv"));
          services.raftkv.dashboard.package = lib.mkDefault (pkgs.raftkv-dashboard or (flakePackage system "dashboard"));
        };

      checks = forAllSystems ({ pkgs, build }:
        import ./nix/checks.nix {
          inherit pkgs build;
          module = self.nixosModules.default;
        });

      devShells = forAllSystems ({ build, ... }: { default = build.devShell; });

      # nixpkgs-fmt, as `.ci/nix-checks` checks with (nixfmt formats differently).
      formatter = forAllSystems ({ pkgs, ... }: pkgs.nixpkgs-fmt);
    };
}
