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

      # The NixOS module, the VM tests and the image are Linux-only, so the flake is too.
      systems = [ "x86_64-linux" "aarch64-linux" ];

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
          build = import ./nix/packages.nix { inherit pkgs crane; };
        });

      forAllSystems = f: lib.mapAttrs (_system: s: f s) perSystem;
    in
    {
      packages = forAllSystems ({ build, ... }: {
        inherit (build) raftkv dashboard docker;
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

      # services.raftkv (nix/module.nix), with this flake's raftkv as the default package.
      nixosModules.default = { pkgs, lib, ... }: {
        imports = [ ./nix/module.nix ];
        services.raftkv.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.raftkv;
      };

      checks = forAllSystems ({ pkgs, build }:
        import ./nix/checks.nix {
          inherit pkgs build;
          module = self.nixosModules.default;
        });

      devShells = forAllSystems ({ build, ... }: { default = build.devShell; });

      formatter = forAllSystems ({ pkgs, ... }: pkgs.nixpkgs-fmt);
    };
}
