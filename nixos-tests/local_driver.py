"""Runs a raftkv VM test script (helpers.py + failover.py or partition.py) without VMs, against three local
`raftkv serve` processes, to check the scripts themselves (their CLI calls, their parsing of its JSON, their
steps) where the NixOS test driver cannot run. The VMs' stand-ins:

  machine nodeN     a `raftkv serve` process on 127.0.0.(N+1): port 7001 (client gRPC), 7101 (HTTP), 7201 (peer),
                    with the VMs' peer secret; node1-3 bootstrap the cluster. When the test's .nix file asks
                    nodes.nix for `withJoiner = true`, node4 joins it as nodes.nix's joiner does: through the
                    others' client ports, advertising its own address, its data in DATA_ROOT's stand-in (a
                    directory with a lost+found) under data/, serving web/ (the dashboard's source page) on HTTP
  execute(cmd)      the command run here by bash, with `nodeN:` and `localhost:` rewritten to that address and
                    DATA_ROOT to the joiner's stand-in; `systemctl start|stop|restart raftkv.service` acts on the
                    process (stop: SIGTERM, a clean shutdown)
  crash() / start() kill -9 / start the process again (same data directory)
  block()/unblock() the nodes' fault-injection hook, both directions (as server/tests/vm_mirror.rs does)

Usage: python3 nixos-tests/local_driver.py RAFTKV_BINARY failover|partition
"""

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
GRPC_PORT, HTTP_PORT, PEER_PORT = 7001, 7101, 7201
DEADLINE = 300  # seconds for a whole test; every wait in the scripts has its own, shorter timeout
MEMBERS = [1, 2, 3]  # nodes.nix's initialCluster
JOINER = 4  # nodes.nix's joiner
DATA_ROOT = "/srv/raftkv"  # the joiner's services.raftkv.dataDir
SYSTEMCTL = re.compile(r"systemctl (start|stop|restart) raftkv(?:\.service)?")


def addr(node_id: int) -> str:
    return f"127.0.0.{node_id + 1}"


class Machine:
    def __init__(self, node_id: int, binary: str, workdir: Path, all_ids: list[int]) -> None:
        self.id = node_id
        self.name = f"node{node_id}"
        self.binary = binary
        self.root = workdir / self.name
        # As nodes.nix: the joiner's data is in dataDir's `data` sub-directory, beside a filesystem's lost+found.
        self.data = self.root / "data" if node_id == JOINER else self.root
        if node_id == JOINER:
            (self.root / "lost+found").mkdir(parents=True)
        self.log = workdir / f"{self.name}.log"
        self.all_ids = all_ids
        self.proc: subprocess.Popen[bytes] | None = None
        self.blocked = False

    # --- lifecycle
    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        a = addr(self.id)
        cmd = [self.binary, "serve", "--id", str(self.id), "--listen", f"{a}:{GRPC_PORT}",
               "--listen-peer", f"{a}:{PEER_PORT}", "--http", f"{a}:{HTTP_PORT}", "--data-dir", str(self.data),
               "--fault-injection", "--request-timeout", "3s"]
        if self.id in MEMBERS:
            # As nodes.nix: the initial cluster lists peer addresses.
            cmd += ["--initial-cluster", ",".join(f"{i}={addr(i)}:{PEER_PORT}" for i in MEMBERS)]
        else:
            # As nodes.nix's joiner (the module derives the advertised peer address from advertiseAddress).
            cmd += ["--join", ",".join(f"{addr(i)}:{GRPC_PORT}" for i in MEMBERS),
                    "--advertise", f"{a}:{GRPC_PORT}", "--advertise-peer", f"{a}:{PEER_PORT}",
                    "--web-dir", str(HERE.parent / "web")]
        with open(self.log, "ab") as log:
            # As nodes.nix: peers authenticate with a peer secret.
            env = {**os.environ, "RAFTKV_PEER_SECRET": "vm-test-peer-secret"}
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)

    def crash(self) -> None:
        print(f"{self.name}: crash (kill -9)")
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def terminate(self) -> None:
        """As systemd stops the unit: SIGTERM, then SIGKILL after TimeoutStopSec (30s)."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def wait_for_unit(self, unit: str, timeout: int = 60) -> None:
        assert unit == "raftkv.service", unit
        assert self.proc is not None and self.proc.poll() is None, f"{self.name}: {unit} is not running"

    def wait_for_open_port(self, port: int, timeout: int = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((addr(self.id), port), timeout=1):
                return
            assert self.proc is not None and self.proc.poll() is None, f"{self.name} exited; see {self.log}"
            time.sleep(0.1)
        raise AssertionError(f"{self.name}: port {port} not open after {timeout}s")

    # --- commands
    def execute(self, command: str, timeout: int | None = 60) -> tuple[int, str]:
        unit = SYSTEMCTL.fullmatch(command.strip())
        if unit is not None:
            if unit.group(1) in ("stop", "restart"):
                self.terminate()
            if unit.group(1) in ("start", "restart"):
                self.start()
            return 0, ""
        command = re.sub(r"\bnode(\d+):", lambda m: f"{addr(int(m.group(1)))}:", command)
        command = command.replace(DATA_ROOT, str(self.root))
        command = command.replace("localhost:", f"{addr(self.id)}:")
        command = re.sub(r"^raftkv\b", self.binary, command)
        r = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=timeout)
        return r.returncode, r.stdout

    def succeed(self, command: str, timeout: int | None = 60) -> str:
        rc, out = self.execute(command, timeout)
        assert rc == 0, f"{self.name}: `{command}` failed ({rc})"
        return out

    def fail(self, command: str, timeout: int | None = 60) -> str:
        rc, out = self.execute(command, timeout)
        assert rc != 0, f"{self.name}: `{command}` unexpectedly succeeded"
        return out

    # --- network
    def _partition(self, node_id: int, peers: list[int]) -> None:
        url = f"http://{addr(node_id)}:{HTTP_PORT}/debug/partition?peers={','.join(map(str, peers))}"
        urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=5).read()

    def block(self) -> None:
        print(f"{self.name}: block (fault-injection hook, both directions)")
        others = [i for i in self.all_ids if i != self.id]
        self._partition(self.id, others)
        for i in others:
            self._partition(i, [self.id])

    def unblock(self) -> None:
        print(f"{self.name}: unblock")
        for i in self.all_ids:
            self._partition(i, [])


def main() -> int:
    binary, test = os.path.abspath(sys.argv[1]), sys.argv[2]
    nix = (HERE / f"{test}.nix").read_text()
    scripts = re.findall(r"readFile \./([A-Za-z0-9_-]+\.py)", nix)
    source = "".join((HERE / s).read_text() for s in scripts)
    workdir = Path(tempfile.mkdtemp(prefix=f"raftkv-{test}-"))
    ids = MEMBERS + ([JOINER] if re.search(r"withJoiner\s*=\s*true", nix) else [])
    for i in ids:
        for port in (GRPC_PORT, HTTP_PORT, PEER_PORT):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is no conflict
            try:
                s.bind((addr(i), port))
            finally:
                s.close()
    machines = {f"node{i}": Machine(i, binary, workdir, ids) for i in ids}

    def start_all() -> None:
        for m in machines.values():
            m.start()

    @contextlib.contextmanager
    def subtest(name: str) -> Iterator[None]:
        t = time.monotonic()
        print(f"subtest: {name}")
        yield
        print(f"  ok ({time.monotonic() - t:.1f}s)")

    signal.alarm(DEADLINE)
    ok = False
    try:
        exec(compile(source, f"{test}.py", "exec"), {"start_all": start_all, "subtest": subtest, **machines})
        ok = True
    finally:
        for m in machines.values():
            m.stop()
        if not ok:
            for m in machines.values():
                print(f"----- {m.name} log: {m.log}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"{test}: all subtests passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
