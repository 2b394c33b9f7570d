"""End-to-end test of the dashboard in a real browser against a real `raftkv cluster`.

Runs Debian's Chromium headless through Playwright (never downloads a browser) and checks, with a screenshot of
each step:
  1. the page shows 3 nodes and exactly one leader, in the cards and in the topology graph;
  L. the learning lab: the load generator runs and its chart fills; the kill-leader experiment measures a gap
     and loses no acknowledged write; partition-leader shows the minority's writes unacknowledged and absent and
     its uncommitted entries replaced; lose-quorum shows writes and linearizable reads stop while serializable
     reads answer; split-brain finds one leader per term; snapshot-catch-up sees a snapshot sent; the timeline's
     scrubber replays the past in the graph;
  2. a PUT typed into the page is then readable with the CLI; partitioning a follower from the page leaves the one
     leader in place, and healing it brings the follower back;
  3. clicking "kill -9" on the leader leads to a different leader shown in the page, and a GET of the earlier key
     from the page still succeeds;
  4. restarting the killed node from the page brings it back as a follower;
  5. adding a node from the page starts it as a learner, and promoting it makes it a voting follower; the grow
     experiment then adds a fifth.

Usage: python web/e2e/dashboard_test.py [--raftkv target/debug/raftkv] [--web-dir web/dist] [--out DIR]
Exit status 0 = pass; any failed check raises with what the page showed.
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from harness import CHROMIUM_ARGS, port_free, wait_until
from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[2]


def free_layout() -> tuple[int, int]:
    """A base port whose node ports (base..base+4, base+100..base+104: nodes 4 and 5 are added later) are free, and
    a free dashboard port."""
    for _ in range(500):
        base = random.randrange(20000, 31000)
        dash = base + 300
        node_ports = [*range(base, base + 5), *range(base + 100, base + 105), *range(base + 200, base + 205)]
        if all(port_free(p) for p in [*node_ports, dash]):
            return base, dash
    raise RuntimeError("no free ports")


def cli(raftkv: str, base: int, *args: str) -> str:
    endpoints = ",".join(f"127.0.0.1:{base + i}" for i in range(3))
    out = subprocess.run(
        [raftkv, "--endpoints", endpoints, "--timeout", "10s", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if out.returncode != 0:
        raise AssertionError(f"raftkv {' '.join(args)} failed: {out.stderr}")
    return out.stdout


def cards_by_role(page) -> dict:
    """node id -> data-role of every node card on the page."""
    result = {}
    for card in page.locator("[data-testid=node-card]").all():
        result[card.get_attribute("data-node-id")] = card.get_attribute("data-role")
    return result


def figures(result) -> dict:
    """The machine-readable figures of an experiment's result (its <data data-figure=NAME value=V> elements)."""
    return {d.get_attribute("data-figure"): d.get_attribute("value") for d in result.locator("data[data-figure]").all()}


def run_experiment(page, name: str, timeout_ms: int, during=None) -> tuple[dict, str]:
    """Clicks experiment `name`, optionally calls `during(page)` while it runs, waits for its result and returns
    (figures, the result's text). Fails with the result's text if the experiment did not pass."""
    panel = page.locator(f"[data-experiment={name}]")
    page.click(f"[data-testid=experiment-{name}]")
    if during:
        during(page)
    result = panel.locator("[data-testid=experiment-result]")
    expect(result).to_be_visible(timeout=timeout_ms)
    text = result.inner_text()
    steps = panel.locator(".steps").inner_text()
    print(f"experiment {name}:\n{steps}\n{text}")
    assert result.get_attribute("data-passed") == "true", f"experiment {name} did not pass:\n{steps}\n{text}"
    return figures(result), text


def acknowledged(page) -> int:
    return int(page.locator("[data-testid=load-totals]").inner_text().split(" acknowledged")[0].replace(",", ""))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--raftkv", default=str(ROOT / "target/debug/raftkv"))
    ap.add_argument("--web-dir", default=str(ROOT / "web/dist"))
    ap.add_argument("--out", default=str(ROOT / ".ci/artifacts/dashboard"))
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    base, dash_port = free_layout()
    work = Path(tempfile.mkdtemp(prefix="raftkv-e2e-"))
    log = open(work / "cluster.log", "w")
    cluster = subprocess.Popen(
        [
            args.raftkv, "cluster", "--fresh", "--base-port", str(base), "--data-dir", str(work / "data"),
            "--dashboard", f"127.0.0.1:{dash_port}", "--web-dir", args.web_dir,
            # Snapshots come soon, so the snapshot experiment needs few writes.
            "--serve-arg=--snapshot-every=500", "--serve-arg=--keep-after-snapshot=50",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{dash_port}/"
    step = 0

    def shot(page, name):
        nonlocal step
        step += 1
        path = out / f"{step:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")

    try:
        def api_up():
            with urllib.request.urlopen(url + "api/cluster", timeout=2) as r:
                return len(json.load(r)["nodes"]) == 3
        wait_until("the dashboard server", api_up, timeout=60)

        with sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                user_data_dir=str(work / "chromium-profile"),
                executable_path=args.chromium,
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1500, "height": 1100},
            )
            page = browser.new_page()
            page.on("console", lambda m: print(f"browser console: {m.text}") if m.type == "error" else None)
            page.goto(url)

            # 1. Three nodes, exactly one leader.
            cards = page.locator("[data-testid=node-card]")
            expect(cards).to_have_count(3, timeout=20_000)
            leaders = page.locator("[data-testid=node-card][data-role=leader]")
            expect(leaders).to_have_count(1, timeout=20_000)
            followers = page.locator("[data-testid=node-card][data-role=follower]")
            expect(followers).to_have_count(2, timeout=20_000)
            leader = leaders.first.get_attribute("data-node-id")
            print(f"page shows 3 nodes, leader node {leader}: {cards_by_role(page)}")
            graph = page.locator("[data-testid=topology-graph]")
            expect(graph.locator("[data-node-id]")).to_have_count(3)
            expect(graph.locator(f"[data-node-id='{leader}'][data-role=leader]")).to_have_count(1)
            expect(graph.locator("[data-role=follower]")).to_have_count(2)
            # Heartbeats fly along the links.
            expect(graph.locator("circle.msg")).not_to_have_count(0, timeout=10_000)
            shot(page, "cluster")

            # L. The learning lab. The load generator, and its chart.
            page.fill("[data-testid=load-in-flight]", "4")
            page.locator("[data-testid=load-in-flight]").dispatch_event("change")
            page.click("[data-testid=load-start]")
            wait_until("100 acknowledged writes from the page", lambda: acknowledged(page) >= 100, timeout=30)
            drawn_bars = "els => els.filter(e => parseFloat(e.getAttribute('height')) > 0).length"
            wait_until(
                "bars of acknowledged writes in the chart",
                lambda: page.locator("[data-testid=writes-chart] rect.bar.ok").evaluate_all(drawn_bars) > 0,
                timeout=10,
            )
            shot(page, "load")

            # Kill the leader with the load running; the README's picture is taken while the leader is down.
            def while_killed(page):
                def down_or_done():
                    return graph.locator("[data-role=down]").count() == 1 or page.locator(
                        "[data-experiment=kill-leader] [data-testid=experiment-result]").count() > 0
                wait_until("the graph to show the leader down", down_or_done, timeout=30)
                if graph.locator("[data-role=down]").count() == 0:
                    return  # the experiment ended first: its result says why
                # The chart shades the spell without acknowledged writes as it happens.
                expect(page.locator("[data-testid=writes-chart] rect.gap")).not_to_have_count(0, timeout=10_000)
                page.wait_for_timeout(1000)
                # The README's picture, the graph and the charts, first: a full-page screenshot takes a while.
                page.locator(".lab-top").screenshot(path=str(out / "lab-during-leader-kill.png"))
                shot(page, "kill-leader-during")
            f, text = run_experiment(page, "kill-leader", 90_000, during=while_killed)
            assert int(f["lost"]) == 0 and int(f["acked"]) > 0, f"kill-leader: {f}"
            gap = int(f["gap-ms"])
            assert 0 < gap < 15_000, f"kill-leader measured a gap of {gap} ms"
            assert 0 < int(f["leader-ms"]) < 15_000 and int(f["first-write-ms"]) > 0, f"kill-leader: {f}"
            expect(page.locator("[data-testid=writes-gap]")).to_contain_text("longest spell")
            shot(page, "kill-leader")
            page.click("[data-testid=load-stop]")

            f, _ = run_experiment(page, "partition-leader", 90_000)
            assert f["minority-acked"] == "0" and f["minority-present"] == "0", f"partition-leader: {f}"
            assert int(f["replaced"]) > 0, f"partition-leader: {f}"
            shot(page, "partition-leader")

            f, _ = run_experiment(page, "lose-quorum", 90_000)
            assert f["write-acked"] == "false" and f["linearizable-answered"] == "false", f"lose-quorum: {f}"
            assert f["serializable-answered"] == "true" and int(f["service-return-ms"]) >= 0, f"lose-quorum: {f}"
            shot(page, "lose-quorum")

            f, _ = run_experiment(page, "split-brain", 120_000)
            assert f["double-leader-terms"] == "0" and int(f["terms"]) >= 3, f"split-brain: {f}"
            shot(page, "split-brain")

            f, _ = run_experiment(page, "snapshot-catch-up", 330_000)
            assert int(f["snapshot-index"]) > 0 and int(f["chunks"]) > 0, f"snapshot-catch-up: {f}"
            shot(page, "snapshot-catch-up")

            # The timeline replays the past in the graph.
            scrubber = page.locator("[data-testid=timeline-scrubber]")
            scrubber.fill("300")
            expect(page.locator(".graph-panel h2")).to_contain_text("replaying")
            expect(graph.locator("[data-node-id]")).not_to_have_count(0)
            shot(page, "timeline-replay")
            page.click("[data-testid=timeline-live]")
            # Readable at 1280 px: nothing wider than the window.
            page.set_viewport_size({"width": 1280, "height": 1000})
            wait_until("the page to fit 1280 px", lambda: page.evaluate("document.documentElement.scrollWidth") <= 1280,
                       timeout=10)
            shot(page, "at-1280px")
            page.set_viewport_size({"width": 1500, "height": 1100})
            expect(page.locator(".graph-panel h2")).to_contain_text("live")
            expect(cards).to_have_count(3)
            expect(page.locator("[data-testid=node-card][data-role=leader]")).to_have_count(1, timeout=20_000)
            expect(page.locator("[data-testid=node-card][data-role=follower]")).to_have_count(2, timeout=20_000)
            leader = leaders.first.get_attribute("data-node-id")

            # 2. A PUT from the page, read back with the CLI.
            page.select_option("[data-testid=kv-op]", "put")
            page.fill("[data-testid=kv-key]", "e2e/greeting")
            page.fill("[data-testid=kv-value]", "hello from the browser")
            page.click("[data-testid=kv-send]")
            result = page.locator("[data-testid=kv-result]")
            expect(result).to_contain_text("stored", timeout=15_000)
            expect(page.locator("[data-testid=history] tr.outcome-ok")).to_have_count(1)
            shot(page, "put")
            got = json.loads(cli(args.raftkv, base, "-o", "json", "get", "e2e/greeting"))
            print(f"CLI get: {got}")
            assert "hello from the browser" in json.dumps(got), f"the CLI read {got!r}"

            # 2b. Partition a follower: it is cut off (and keeps calling elections in ever higher terms), but the page
            # still shows the real leader, once. Heal it: the cluster settles on one leader again (possibly the
            # healed node itself: its higher term forces an election, as Raft without pre-vote does).
            follower = page.locator("[data-testid=node-card][data-role=follower]").first.get_attribute("data-node-id")
            card = page.locator(f"[data-testid=node-card][data-node-id='{follower}']")
            card.locator("[data-testid=partition]").click()
            expect(card.locator(".tag.partition")).to_be_visible(timeout=10_000)
            expect(card).not_to_have_attribute("data-role", "follower", timeout=10_000)
            expect(leaders).to_have_count(1)
            assert leaders.first.get_attribute("data-node-id") == leader, "the partition changed the leader"
            shot(page, "partitioned")
            card.locator("[data-testid=heal]").click()
            expect(card.locator(".tag.partition")).to_have_count(0, timeout=10_000)
            expect(page.locator("[data-testid=node-card][data-role=follower]")).to_have_count(2, timeout=20_000)
            expect(page.locator("[data-testid=node-card][data-role=leader]")).to_have_count(1, timeout=20_000)
            leader = page.locator("[data-testid=node-card][data-role=leader]").first.get_attribute("data-node-id")
            print(f"after partition and heal of node {follower}: leader node {leader}: {cards_by_role(page)}")

            # 3. Kill the leader from the page; a different leader appears; the key is still readable.
            page.locator(f"[data-testid=node-card][data-node-id='{leader}'] [data-testid=kill]").click()
            killed = page.locator(f"[data-testid=node-card][data-node-id='{leader}']")
            expect(killed).to_have_attribute("data-role", "down", timeout=10_000)
            new_leader = page.locator("[data-testid=node-card][data-role=leader]")
            expect(new_leader).to_have_count(1, timeout=15_000)
            new = new_leader.first.get_attribute("data-node-id")
            assert new != leader, f"leader is still node {leader}"
            print(f"after killing node {leader}: leader node {new}: {cards_by_role(page)}")
            shot(page, "failover")

            page.select_option("[data-testid=kv-op]", "get")
            page.fill("[data-testid=kv-key]", "e2e/greeting")
            page.click("[data-testid=kv-send]")
            expect(result).to_contain_text("hello from the browser", timeout=15_000)
            expect(result).to_contain_text(f"answered by node {new}")
            shot(page, "get-after-failover")

            # 4. Restart the killed node; it rejoins as a follower.
            killed.locator("[data-testid=restart]").click()
            expect(killed).to_have_attribute("data-role", "follower", timeout=20_000)
            expect(page.locator("[data-testid=node-card][data-role=leader]")).to_have_count(1)
            shot(page, "healed")

            # 5. Membership: add a node (a learner), then promote it.
            page.click("[data-testid=add-node]")
            added = page.locator("[data-testid=node-card][data-node-id='4']")
            expect(added).to_have_attribute("data-role", "learner", timeout=30_000)
            shot(page, "learner-added")
            added.locator("[data-testid=promote]").click()
            expect(added).to_have_attribute("data-role", "follower", timeout=30_000)
            expect(page.locator("[data-testid=node-card][data-role=leader]")).to_have_count(1)
            members = json.loads(cli(args.raftkv, base, "-o", "json", "members"))
            print(f"CLI members: {members}")
            assert any(m.get("id") == 4 and m.get("voter") for m in members), f"node 4 is not a voter: {members}"
            shot(page, "promoted")

            f, _ = run_experiment(page, "grow", 90_000)
            assert f["voters"] == "5" and f["quorum"] == "3", f"grow: {f}"
            shot(page, "grow")
            browser.close()
        print("dashboard e2e: PASS")
        return 0
    finally:
        os.killpg(cluster.pid, signal.SIGTERM)
        try:
            cluster.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(cluster.pid, signal.SIGKILL)
        log.close()
        if cluster.returncode not in (0, -signal.SIGTERM, None):
            print((work / "cluster.log").read_text()[-3000:], file=sys.stderr)
        shutil.copy(work / "cluster.log", out / "cluster.log")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
