"""The container tests: raftkv's image under podman, as users deploy it (run by deploy/test-compose.sh).

`compose` brings up deploy/compose.yaml unchanged (podman-compose, a project name of its own, in a scratch copy of
deploy/ so a peer secret file and certificates can sit beside it) and checks, like the NixOS VM tests:
  1. the image loads from its archive (`podman load`), three nodes answer /readyz, exactly one leader;
  2. 200 writes acknowledged through the published ports;
  3. `podman kill` of the leader's container: a new leader, the time to it and to the next acknowledged write
     measured, every acknowledged write readable;
  4. the killed container started again: it catches up and serves every write from its own copy;
  5. the leader's container disconnected from the network: a write on the minority side is not acknowledged, the
     majority elects a new leader and acknowledges writes;
  6. reconnected: one leader, every acknowledged write on every node, the minority's write nowhere;
  7. each container's own health check passes (`podman healthcheck run`: the Compose healthcheck's command);
  8. (plain only) the dashboard on the published HTTP port loads in headless Chromium and shows three nodes.
With --tls the same runs with deploy/compose.tls.yaml and certificates from deploy/make-certs.sh mounted from files.

`k8s` runs the StatefulSet's pod as the manifests describe it: the container command, environment (ConfigMap,
downward API, the peer Secret, `$(VAR)` expansion), security context (user 10001, read-only root, no capabilities),
volumes (a data volume with lost+found at its root and fsGroup's group, the TLS Secret as files, /tmp) and the probes
of deploy/k8s/statefulset.yaml, as three podman containers named like the pods on one network where
`raftkv-N.raftkv-peers` resolves. It checks: a lone pod is live but not ready; the three form one cluster and are
ready; writes survive a pod's kill and restart on the same volume; a fourth pod (after `kubectl scale`) joins as a
learner.

Everything a test starts (containers, networks, volumes) carries its own name and is removed at the end, also on
failure or SIGTERM. Traffic goes only to containers the test created. Needs root (rootful podman).

Usage: python deploy/container_tests.py compose [--tls] --raftkv PATH --archive FILE [--out DIR]
       python deploy/container_tests.py k8s --raftkv PATH --archive FILE
"""

import argparse
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "web/e2e"))
from harness import CHROMIUM_ARGS, port_free, wait_until  # noqa: E402 - found through the path above
IMAGE = "raftkv:" + next(
    line.split('"')[1]
    for line in (ROOT / "Cargo.toml").read_text().split("[workspace.package]")[1].splitlines()
    if line.startswith("version = ")
)
T0 = time.monotonic()
# The client flags for the certificates both Compose (compose.tls.yaml) and the StatefulSet mount in a container.
IN_CONTAINER_TLS = ["--cacert", "/etc/raftkv/tls/ca.pem", "--cert", "/etc/raftkv/tls/client.pem",
                    "--key", "/etc/raftkv/tls/client-key.pem"]


def say(what: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {what}", flush=True)


def run(*cmd: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs a command; on failure (with check) raises with its output."""
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done


class Client:
    """The raftkv CLI (the image's own static binary, run on the host or in a container) against given endpoints."""

    def __init__(self, raftkv: list[str], tls: list[str]):
        self.raftkv = raftkv
        self.tls = tls
        self.last_error = ""

    def call(self, endpoints: list[str], *args: str, timeout: str = "5s") -> subprocess.CompletedProcess:
        return run(*self.raftkv, *self.tls, "--endpoints", ",".join(endpoints), "--timeout", timeout, "-o", "json",
                   *args, check=False, timeout=60)

    def json(self, endpoints: list[str], *args: str):
        done = self.call(endpoints, *args)
        if done.returncode != 0:
            raise RuntimeError(f"raftkv {' '.join(args)} via {endpoints}: {done.stderr.strip()}")
        return json.loads(done.stdout)

    def put(self, endpoints: list[str], key: str, value: str, timeout: str = "5s") -> bool:
        """True if the write was acknowledged (the last refusal is kept in `last_error`)."""
        done = self.call(endpoints, "put", key, value, timeout=timeout)
        self.last_error = done.stderr.strip()
        return done.returncode == 0

    def status(self, endpoint: str) -> dict:
        [status] = self.json([endpoint], "status")
        return status

    def scan(self, endpoint: str, prefix: str) -> dict:
        """Every key under `prefix` in `endpoint`'s own copy (a serializable read of that node alone)."""
        reply = self.json([endpoint], "scan", prefix, "--serializable")
        return {kv["key"]: kv["value"] for kv in reply.get("kvs", [])}


def one_leader(client: Client, endpoints: list[str], exclude: int | None = None) -> dict:
    """Waits until every endpoint answers and all agree on one leader (not `exclude`); returns the leader's status."""

    def agreed():
        statuses = [client.status(e) for e in endpoints]
        leaders = [s for s in statuses if s["role"] == "leader"]
        if len(leaders) != 1 or leaders[0]["id"] == exclude:
            return None
        if any(s["leader"] != leaders[0]["id"] or s["term"] != leaders[0]["term"] for s in statuses):
            return None
        return leaders[0]

    return wait_until(f"one leader among {endpoints}", agreed, timeout=60)


def check_all_present(client: Client, endpoint: str, acked: dict, prefix: str, absent: tuple = ()) -> None:
    """Every acknowledged write is in `endpoint`'s copy with its value, and no key of `absent` is."""
    def holds_all():
        kv = client.scan(endpoint, prefix)
        return kv if all(kv.get(k) == v for k, v in acked.items()) else None

    have = wait_until(f"{endpoint} to hold all {len(acked)} acknowledged writes", holds_all, timeout=60)
    missing = [k for k, v in acked.items() if have.get(k) != v]
    assert not missing, f"{endpoint} lost acknowledged writes: {missing[:10]}"
    present = [k for k in absent if k in have]
    assert not present, f"{endpoint} holds writes that were never acknowledged and must not commit: {present}"


def http_status(url: str, ca: Path | None, verify: bool = True) -> int:
    context = None
    if url.startswith("https://"):
        context = ssl.create_default_context(cafile=str(ca)) if verify else ssl._create_unverified_context()
        if not verify:
            context.check_hostname = False
    try:
        with urllib.request.urlopen(url, timeout=3, context=context) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


class Podman:
    """Everything this test creates, removed in `cleanup` (also on failure), with logs printed first on failure."""

    def __init__(self):
        self.containers: list[str] = []
        self.networks: list[str] = []
        self.volumes: list[str] = []

    def logs(self) -> None:
        for name in self.containers:
            done = run("podman", "logs", "--tail", "40", name, check=False)
            print(f"--- last log lines of {name}:\n{done.stdout}{done.stderr}", flush=True)

    def cleanup(self) -> None:
        for name in self.containers:
            run("podman", "rm", "--force", "--time", "0", name, check=False)
        for name in self.volumes:
            run("podman", "volume", "rm", "--force", name, check=False)
        for name in self.networks:
            run("podman", "network", "rm", "--force", name, check=False)


def pin_bridge_mac(network: str) -> None:
    """Fixes the MAC address of `network`'s bridge at the one it has now.

    A Linux bridge whose address was never set takes the lowest of its ports' addresses, and netavark 1.4 (Debian
    12's podman 4.3) leaves it so: restarting a container can change the gateway's MAC, and every other container
    then sends to the old one until its ARP entry expires (about 30 s) — their DNS server (aardvark-dns, on the
    gateway) and the host go silent for that long. Setting the address explicitly stops it from moving.
    """
    bridge = run("podman", "network", "inspect", "--format", "{{.NetworkInterface}}", network).stdout.strip()
    mac = Path(f"/sys/class/net/{bridge}/address").read_text().strip()
    run("ip", "link", "set", "dev", bridge, "address", mac)


def load_image(archive: Path) -> None:
    """The image comes from its docker-archive, so the archive is what is tested: `podman load` (re)tags it."""
    loaded = run("podman", "load", "--input", str(archive), timeout=300).stdout
    assert IMAGE in loaded, f"podman load of {archive} did not load {IMAGE}: {loaded}"
    image_id = run("podman", "image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip()
    say(f"{IMAGE} loaded from {archive} ({archive.stat().st_size} bytes, image {image_id[:12]})")


def make_certs(directory: Path, *names: str) -> None:
    run("bash", str(ROOT / "deploy/make-certs.sh"), str(directory), *names)


# ---------------------------------------------------------------------------------------------------------------
# Compose


def compose_test(args) -> None:
    load_image(args.archive)
    ports = [7001, 7002, 7003, 7101, 7102, 7103]
    busy = [p for p in ports if not port_free(p)]
    assert not busy, (f"deploy/compose.yaml publishes 127.0.0.1 ports {ports}; these are in use: {busy} (a leftover "
                      "raftkv-test-* project? `podman ps -a`)")

    project = f"raftkv-test-{os.getpid()}"
    work = Path(tempfile.mkdtemp(prefix="raftkv-compose-"))
    shutil.copy(ROOT / "deploy/compose.yaml", work)
    shutil.copy(ROOT / "deploy/compose.tls.yaml", work)
    # The optional env_file of compose.yaml: a peer secret, so peers authenticate each other.
    (work / "raftkv.env").write_text(f"RAFTKV_PEER_SECRET={os.urandom(24).hex()}\n")
    files = ["-f", str(work / "compose.yaml")]
    tls: list[str] = []
    ca = None
    if args.tls:
        make_certs(work / "certs", "raftkv1", "raftkv2", "raftkv3", "localhost", "127.0.0.1")
        for key in ("server-key.pem", "peer-key.pem", "client-key.pem"):
            os.chown(work / "certs" / key, 10001, -1)  # the image's user reads the keys (compose.tls.yaml says so)
        files += ["-f", str(work / "compose.tls.yaml")]
        ca = work / "certs/ca.pem"
        tls = ["--cacert", str(ca), "--cert", str(work / "certs/client.pem"), "--key",
               str(work / "certs/client-key.pem")]
    compose = [args.podman_compose, "--project-name", project, *files]
    client = Client([str(args.raftkv)], tls)
    endpoints = {1: "localhost:7001", 2: "localhost:7002", 3: "localhost:7003"}
    scheme = "https" if args.tls else "http"
    pod = Podman()
    ok = False
    try:
        say(f"podman-compose up ({'TLS' if args.tls else 'plain'}), project {project}")
        up = run(*compose, "up", "--detach", check=False, timeout=300)
        # Whatever up created is removed at the end, even if up failed half way.
        pod.containers = run("podman", "ps", "--all", "--filter", f"label=io.podman.compose.project={project}",
                             "--format", "{{.Names}}").stdout.split()
        pod.volumes = run("podman", "volume", "ls", "--filter", f"label=io.podman.compose.project={project}",
                          "--format", "{{.Name}}").stdout.split()
        pod.networks = [f"{project}_default"]
        if up.returncode != 0:
            raise RuntimeError(f"podman-compose up failed:\n{up.stdout}{up.stderr}")
        pin_bridge_mac(pod.networks[0])
        container = {}
        for name in pod.containers:
            labels = json.loads(run("podman", "inspect", "--format", "{{json .Config.Labels}}", name).stdout)
            container[int(labels["com.docker.compose.service"].removeprefix("raftkv"))] = name
        assert sorted(container) == [1, 2, 3], f"expected services raftkv1..3, found {container}"

        for node in (1, 2, 3):
            url = f"{scheme}://localhost:710{node}/readyz"
            wait_until(f"{url} to answer 200", lambda url=url: http_status(url, ca) == 200, timeout=90)
        leader = one_leader(client, list(endpoints.values()))
        say(f"three nodes ready; leader node {leader['id']} in term {leader['term']}")

        acked: dict[str, str] = {}
        every = list(endpoints.values())
        for i in range(200):
            key, value = f"compose/{i:04}", f"value-{i}"
            assert client.put(every, key, value), f"write {i} refused with every node up: {client.last_error}"
            acked[key] = value
        say("200 writes acknowledged")

        # Kill the leader's container.
        killed = leader["id"]
        survivors = [endpoints[n] for n in endpoints if n != killed]
        run("podman", "kill", container[killed])
        t_kill = time.monotonic()
        new = one_leader(client, survivors, exclude=killed)
        t_leader = time.monotonic() - t_kill
        key = "compose/after-kill"
        wait_until("a write acknowledged by the survivors", lambda: client.put(survivors, key, "1"), timeout=30)
        acked[key] = "1"
        say(f"killed node {killed}'s container: node {new['id']} leads after {t_leader:.2f}s, "
            f"first write acknowledged after {time.monotonic() - t_kill:.2f}s")
        for endpoint in survivors:
            check_all_present(client, endpoint, acked, "compose/")
        say("every acknowledged write readable from both survivors")

        # Start it again: it catches up from its volume and the leader.
        run("podman", "start", container[killed])
        t_start = time.monotonic()
        ready_url = f"{scheme}://localhost:710{killed}/readyz"
        wait_until(f"node {killed} ready again", lambda: http_status(ready_url, ca) == 200, timeout=90)
        t_ready = time.monotonic() - t_start
        check_all_present(client, endpoints[killed], acked, "compose/")
        say(f"node {killed} restarted: ready after {t_ready:.2f}s, all {len(acked)} writes in its own copy after "
            f"{time.monotonic() - t_start:.2f}s")

        # Cut the leader's container off the network.
        leader = one_leader(client, every)
        cut = leader["id"]
        network = f"{project}_default"
        aliases = json.loads(run("podman", "inspect", "--format",
                                 f'{{{{json (index .NetworkSettings.Networks "{network}").Aliases}}}}',
                                 container[cut]).stdout) or []
        inner = Client(["podman", "exec", container[cut], "raftkv"], IN_CONTAINER_TLS if args.tls else [])
        # The client inside the container works (so its refusal below means the write was refused, not a broken
        # exec or wrong TLS files), and that node leads right now.
        assert inner.status("127.0.0.1:7001")["role"] == "leader", "the container to cut off is not the leader"
        run("podman", "network", "disconnect", network, container[cut])
        t_cut = time.monotonic()
        majority = [endpoints[n] for n in endpoints if n != cut]
        new = one_leader(client, majority, exclude=cut)
        t_elected = time.monotonic() - t_cut
        # The minority side: a write on the cut-off node itself (from inside its container) is never acknowledged;
        # it times out or is refused for want of a leader, and the key must not appear anywhere after the heal.
        minority_key = "compose/minority"
        assert not inner.put(["127.0.0.1:7001"], minority_key, "never", timeout="4s"), (
            "the node cut off from the network acknowledged a write")
        refusal = inner.last_error.lower()
        assert any(w in refusal for w in ("deadline", "did not answer", "timeout", "timed out", "leader", "unknown")), (
            f"the cut-off write failed for another reason than the partition: {inner.last_error}")
        say(f"node {cut} cut off: node {new['id']} leads the majority {t_elected:.2f}s after the cut; "
            "a write on the cut-off node was not acknowledged")
        for i in range(20):
            key = f"compose/majority-{i:02}"
            assert client.put(majority, key, "1"), f"the majority did not acknowledge {key}"
            acked[key] = "1"

        # Heal.
        connect = ["podman", "network", "connect"]
        for alias in aliases:
            connect += ["--alias", alias]
        run(*connect, network, container[cut])
        leader = one_leader(client, every)
        for endpoint in every:
            check_all_present(client, endpoint, acked, "compose/", absent=(minority_key,))
        say(f"reconnected: one leader (node {leader['id']}), all {len(acked)} acknowledged writes on every node, "
            "the minority's write on none")

        for node in (1, 2, 3):
            run("podman", "healthcheck", "run", container[node])
        say("every container's own health check passes")

        if not args.tls:
            dashboard(args, "http://localhost:7101/")
        ok = True
    finally:
        if not ok:
            pod.logs()
        say("removing the project's containers, volumes and network")
        run(*compose, "down", "--volumes", "--timeout", "1", check=False, timeout=300)
        pod.cleanup()
        shutil.rmtree(work, ignore_errors=True)


def dashboard(args, url: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    profile = Path(tempfile.mkdtemp(prefix="raftkv-chromium-"))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                user_data_dir=str(profile), executable_path=shutil.which("chromium"), headless=True,
                args=CHROMIUM_ARGS, viewport={"width": 1500, "height": 1100})
            page = browser.new_page()
            page.goto(url)
            expect(page.locator("[data-testid=node-card]")).to_have_count(3, timeout=30_000)
            expect(page.locator("[data-testid=node-card][data-role=leader]")).to_have_count(1, timeout=30_000)
            page.screenshot(path=str(out / "compose-dashboard.png"), full_page=True)
            browser.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    say(f"the dashboard at {url} shows three nodes and one leader (screenshot in {out})")


# ---------------------------------------------------------------------------------------------------------------
# Kubernetes


def expand(value: str, env: dict) -> str:
    """Kubernetes' `$(VAR)` expansion of an env value against the variables defined before it."""
    for name, val in env.items():
        value = value.replace(f"$({name})", val)
    return value


class Pod:
    """One pod of the StatefulSet as a podman container."""

    def __init__(self, test: "K8sTest", ordinal: int):
        self.test = test
        self.ordinal = ordinal
        self.name = f"raftkv-{ordinal}"
        self.container = f"{test.prefix}-{self.name}"
        self.volume = test.work / f"data-{self.name}"

    def create_volume(self) -> None:
        # A fresh ext4 PersistentVolume: lost+found at its root; fsGroup makes the root group 10001 and writable.
        (self.volume / "lost+found").mkdir(parents=True)
        os.chmod(self.volume / "lost+found", 0o700)
        os.chown(self.volume, 0, 10001)
        os.chmod(self.volume, 0o2775)

    def start(self) -> None:
        t = self.test
        env = dict(t.configmap)
        for var in t.spec["env"]:
            if "value" in var:
                env[var["name"]] = expand(var["value"], env)
            elif var["valueFrom"].get("fieldRef", {}).get("fieldPath") == "metadata.name":
                env[var["name"]] = self.name
            elif "secretKeyRef" in var["valueFrom"]:
                env[var["name"]] = t.peer_secret
            else:
                raise AssertionError(f"unhandled env source {var}")
        security = {**t.pod_security, **t.spec.get("securityContext", {})}
        cmd = ["podman", "run", "--detach", "--name", self.container, "--hostname", self.name,
               "--network", t.network, "--network-alias", f"{self.name}.{t.service}",
               "--user", f"{security['runAsUser']}:{security['runAsGroup']}",
               "--group-add", str(security["fsGroup"])]
        if security.get("readOnlyRootFilesystem"):
            cmd.append("--read-only")
        if "ALL" in security.get("capabilities", {}).get("drop", []):
            cmd += ["--cap-drop", "ALL"]
        if security.get("allowPrivilegeEscalation") is False:
            cmd += ["--security-opt", "no-new-privileges"]
        limit = t.spec.get("resources", {}).get("limits", {}).get("memory")
        if limit:
            cmd += ["--memory", limit.replace("Gi", "g").replace("Mi", "m")]
        mounts = {m["name"]: m for m in t.spec["volumeMounts"]}
        cmd += ["--volume", f"{self.volume}:{mounts['data']['mountPath']}"]
        cmd += ["--tmpfs", f"{mounts['tmp']['mountPath']}:rw,mode=1777"]
        cmd += ["--volume", f"{t.tls_dir}:{mounts['tls']['mountPath']}:ro"]
        for name, value in env.items():
            cmd += ["--env", f"{name}={value}"]
        [entry, *rest] = t.spec["command"]
        cmd += ["--entrypoint", entry, IMAGE, *rest]
        if self.container not in t.pod.containers:
            t.pod.containers.append(self.container)  # before the run: one created but not started is removed too
        run(*cmd)

    def probe(self, kind: str) -> int:
        """The manifest's httpGet probe as the kubelet sends it (TLS not verified), to the container's address."""
        probe = self.test.spec[kind]["httpGet"]
        port = {p["name"]: p["containerPort"] for p in self.test.spec["ports"]}[probe["port"]]
        address = f'{{{{(index .NetworkSettings.Networks "{self.test.network}").IPAddress}}}}'
        ip = run("podman", "inspect", "--format", address, self.container).stdout.strip()
        return http_status(f"{probe['scheme'].lower()}://{ip}:{port}{probe['path']}", None, verify=False)


class K8sTest:
    def __init__(self, args):
        docs = {}
        for f in ("statefulset.yaml", "configmap.yaml", "services.yaml"):
            for doc in yaml_docs(ROOT / "deploy/k8s" / f):
                docs[(doc["kind"], doc["metadata"]["name"])] = doc
        statefulset = docs[("StatefulSet", "raftkv")]
        self.service = statefulset["spec"]["serviceName"]
        assert ("Service", self.service) in docs, f"the StatefulSet's serviceName {self.service} is not a Service"
        template = statefulset["spec"]["template"]["spec"]
        [self.spec] = template["containers"]
        self.pod_security = template["securityContext"]
        self.configmap = docs[("ConfigMap", "raftkv")]["data"]
        self.replicas = statefulset["spec"]["replicas"]
        self.prefix = f"raftkv-k8s-{os.getpid()}"
        self.network = self.prefix
        self.work = Path(tempfile.mkdtemp(prefix="raftkv-k8s-"))
        self.peer_secret = os.urandom(24).hex()
        self.pod = Podman()
        # The Secret raftkv-tls as the kubelet mounts it: files readable by the pod's group only (defaultMode 0440).
        self.tls_dir = self.work / "tls"
        names = [f"raftkv-{i}.{self.service}" for i in range(self.replicas + 1)]
        make_certs(self.tls_dir, *names, "raftkv", "localhost", "127.0.0.1")
        for f in self.tls_dir.iterdir():
            os.chown(f, 0, self.pod_security["fsGroup"])
            os.chmod(f, 0o440)
        self.client = Client(["podman", "exec", f"{self.prefix}-raftkv-0", "raftkv"], IN_CONTAINER_TLS)
        self.endpoints = [f"{n}:7001" for n in names[: self.replicas]]


def yaml_docs(path: Path) -> list:
    import yaml

    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def k8s_test(args) -> None:
    load_image(args.archive)
    t = K8sTest(args)
    assert t.configmap["RAFTKV_DATA_DIR"].startswith(t.spec["volumeMounts"][0]["mountPath"] + "/"), (
        "the data directory must be a sub-directory of the volume (lost+found)")
    ok = False
    try:
        run("podman", "network", "create", t.network)
        t.pod.networks.append(t.network)
        pods = [Pod(t, i) for i in range(t.replicas)]
        for p in pods:
            p.create_volume()

        # A lone pod: alive (liveness passes, so the kubelet does not restart it) but not ready without a quorum.
        pods[0].start()
        pin_bridge_mac(t.network)  # the bridge exists once a container is on it
        wait_until("raftkv-0's liveness probe", lambda: pods[0].probe("livenessProbe") == 200, timeout=60)
        assert pods[0].probe("readinessProbe") != 200, "a lone pod of three reported ready"
        say("raftkv-0 alone: live, not ready")

        for p in pods[1:]:
            p.start()
        for p in pods:
            wait_until(f"{p.name}'s readiness probe", lambda p=p: p.probe("readinessProbe") == 200, timeout=90)
            assert p.probe("livenessProbe") == 200
        leader = one_leader(t.client, t.endpoints)
        members = sorted((m["id"], m["voter"]) for m in t.client.json(t.endpoints, "members"))
        assert members == [(i + 1, True) for i in range(t.replicas)], f"not the three voters: {members}"
        say(f"three pods ready, one cluster of {len(members)} voters; leader node {leader['id']}")

        acked = {}
        for i in range(50):
            assert t.client.put(t.endpoints, f"k8s/{i:03}", str(i)), f"write {i} refused: {t.client.last_error}"
            acked[f"k8s/{i:03}"] = str(i)

        # A pod killed and rescheduled on the same volume comes back as the same node with its data.
        victim = pods[1]
        run("podman", "kill", victim.container)
        run("podman", "rm", victim.container)
        t.pod.containers.remove(victim.container)
        survivors = [e for e in t.endpoints if not e.startswith(victim.name + ".")]
        one_leader(t.client, survivors)
        acked["k8s/while-down"] = "1"
        assert t.client.put(survivors, "k8s/while-down", "1")
        victim.start()
        wait_until(f"{victim.name} ready again", lambda: victim.probe("readinessProbe") == 200, timeout=90)
        for e in t.endpoints:
            check_all_present(t.client, e, acked, "k8s/")
        assert (victim.volume / "lost+found").is_dir() and (victim.volume / "raftkv").is_dir()
        say(f"{victim.name} killed and recreated on its volume: all writes on every pod")

        # `kubectl scale --replicas 4`: the fourth pod is not in the initial cluster, so it joins as a learner.
        extra = Pod(t, t.replicas)
        extra.create_volume()
        extra.start()

        def member(node_id: int):
            return [m for m in t.client.json(t.endpoints, "members") if m["id"] == node_id]

        [joined] = wait_until("the fourth pod to join", lambda: member(t.replicas + 1), timeout=60)
        assert joined["voter"] is False, f"the fourth pod joined, but not as a learner: {joined}"
        wait_until("the learner's liveness probe", lambda: extra.probe("livenessProbe") == 200, timeout=60)
        check_all_present(t.client, f"{extra.name}.{t.service}:7001", acked, "k8s/")
        say(f"{extra.name} joined as a learner and holds every write")
        ok = True
    finally:
        if not ok:
            t.pod.logs()
        say("removing the pods' containers and network")
        t.pod.cleanup()
        shutil.rmtree(t.work, ignore_errors=True)


def main() -> int:
    # SIGTERM (a CI timeout) unwinds through the tests' `finally`, which removes what they started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("test", choices=["compose", "k8s"])
    parser.add_argument("--raftkv", type=Path, required=True, help="the static raftkv binary (the image's)")
    parser.add_argument("--archive", type=Path, required=True, help="the image archive of deploy/build-image.sh")
    parser.add_argument("--tls", action="store_true", help="compose: with deploy/compose.tls.yaml")
    parser.add_argument("--podman-compose", default="podman-compose")
    parser.add_argument("--out", default=str(ROOT / ".ci/artifacts/containers"), help="screenshots")
    args = parser.parse_args()
    if args.test == "compose":
        compose_test(args)
    else:
        k8s_test(args)
    say(f"{args.test}{' (TLS)' if args.tls else ''}: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
