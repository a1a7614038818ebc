#!/usr/bin/env python3
"""Drives Synod's two web pages in a real browser (headless Chromium through Selenium).

    pages.py viz  BASE_URL   SCREENSHOT_DIR   # `synod viz`'s page
    pages.py live LIVE_URL   SCREENSHOT_DIR   # a cluster's live view; kills its leader

`crates/synod/tests/browser.rs` starts the servers and runs this; it exits non-zero with
the failed check on stderr. Screenshots of each key state go to SCREENSHOT_DIR.
"""

import json
import os
import signal
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By


def browser(width, height):
    options = webdriver.ChromeOptions()
    options.add_argument("--headless=new")
    options.add_argument("--no-sandbox")
    options.add_argument("--disable-gpu")
    options.add_argument(f"--window-size={width},{height}")
    options.binary_location = "/usr/bin/chromium"
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


class Checks:
    def __init__(self, driver, out):
        self.driver = driver
        self.out = out
        self.passed = 0

    def check(self, condition, what):
        if not condition:
            for entry in self.console():
                print("  console:", entry, file=sys.stderr)
            self.shot("failure")
            raise SystemExit(f"FAILED: {what}")
        self.passed += 1

    def console(self):
        try:
            return self.driver.get_log("browser")
        except Exception:  # not every driver keeps the console
            return []

    def shot(self, name):
        path = os.path.join(self.out, f"{name}.png")
        self.driver.save_screenshot(path)
        print("screenshot", path)

    def wait(self, script, what, timeout=30):
        end = time.time() + timeout
        while time.time() < end:
            value = self.driver.execute_script(script)
            if value:
                return value
            time.sleep(0.1)
        self.check(False, f"timed out waiting for {what}")


# ---------------------------------------------------------------- synod viz


def viz(base, out):
    driver = browser(1400, 1000)
    c = Checks(driver, out)
    try:
        for protocol in ["raft", "multi-paxos"]:
            crash_the_leader(c, base, protocol)
        basic_paxos_duel(c, base)
        bad_input_is_explained(c, base)
        narrow(c, base)
        severe = [e for e in c.console() if e["level"] == "SEVERE" and e.get("source") != "network"]
        c.check(not severe, f"no script errors in the console: {severe}")
    finally:
        driver.quit()
    print(f"viz: {c.passed} checks passed")


def ready(c):
    c.wait("return !!(window.viz && window.viz.ready)", "a run to load")
    error = c.driver.find_element(By.ID, "error")
    c.check(not error.is_displayed(), f"no error: {error.text}")


def state(c):
    return c.driver.execute_script("return window.viz.state()")


def crash_the_leader(c, base, protocol):
    """The newcomer's minute: pick a protocol, run, step to the first election, crash the
    leader by clicking it, and watch the next election."""
    d = c.driver
    d.get(base)
    ready(c)
    select = d.find_element(By.ID, "protocol")
    select.find_element(By.CSS_SELECTOR, f'option[value="{protocol}"]').click()
    d.find_element(By.ID, "run").click()
    time.sleep(0.2)
    ready(c)
    s = state(c)
    c.check(s["protocol"] == protocol and len(s["nodes"]) == 3, f"{protocol}: a run of 3 nodes")
    c.check(s["verdict"]["clean"], f"{protocol}: the run is clean: {s['verdict']}")
    elected = d.execute_script("return viz.nextLeaderChange()")
    c.check(elected is not None, f"{protocol}: a first election")
    s = state(c)
    leader = s["leader"]
    c.check(leader is not None, f"{protocol}: a leader after the election: {s}")
    node = d.find_element(By.CSS_SELECTOR, f'g.node[data-node="{leader}"]')
    c.check(node.get_attribute("data-role") == "leader", f"{protocol}: the leader is drawn as one")
    # Let a few writes commit, then crash the leader where the viewer is.
    d.execute_script(f"viz.seek({elected + 1_000_000})")
    c.shot(f"{protocol}-1-elected")
    at = state(c)["t"]
    d.find_element(By.CSS_SELECTOR, f'g.node[data-node="{leader}"]').click()
    time.sleep(0.2)
    ready(c)
    s = state(c)
    c.check(s["interventions"] == f"crash:{leader}@{at}", f"{protocol}: the click crashed the leader: {s['interventions']}")
    c.check(s["t"] == at, f"{protocol}: the fork continues where it was clicked")
    crashed = d.find_element(By.CSS_SELECTOR, f'g.node[data-node="{leader}"]')
    c.check(crashed.get_attribute("data-up") == "false", f"{protocol}: the crashed node is drawn down")
    c.check(f"do=crash:{leader}@{at}" in d.current_url, f"{protocol}: the fork is in the URL")
    c.shot(f"{protocol}-2-leader-crashed")
    again = d.execute_script("return viz.nextLeaderChange()")
    c.check(again is not None and again > at, f"{protocol}: a leader change after the crash")
    s = state(c)
    c.check(s["leader"] is not None and s["leader"] != leader, f"{protocol}: another node leads: {s['leader']}")
    c.shot(f"{protocol}-3-new-leader")
    # The fork's URL gives the same run.
    url = d.current_url
    d.get(url)
    ready(c)
    c.check(state(c)["leader"] == s["leader"], f"{protocol}: the shared URL replays the fork")


def basic_paxos_duel(c, base):
    d = c.driver
    d.get(base + "?protocol=basic-paxos&nodes=3&seed=2&clients=6&spread-clients=on")
    ready(c)
    d.execute_script("viz.seek(2000000)")
    s = state(c)
    c.check(s["protocol"] == "basic-paxos", "basic paxos loaded")
    c.check(all(n["role"] == "peer" for n in s["nodes"]), f"every Basic Paxos node proposes: {s['nodes']}")
    # The proposers' Prepares in flight, drawn as dots labelled with their type.
    prepares = d.execute_script(
        """return [...document.querySelectorAll('#cluster g.msg')]
                  .filter(g => g.style.display !== 'none' && g.getAttribute('display') !== 'none'
                               && /Prepare|Promise|Nack|Accept/.test(g.textContent)).length"""
    )
    c.check(prepares > 0, f"Paxos messages are in flight at 2 s: {prepares}")
    boxes = d.find_elements(By.CSS_SELECTOR, "#logs span.box")
    c.check(len(boxes) > 0, "slots are drawn")
    c.shot("basic-paxos-slots")


def bad_input_is_explained(c, base):
    d = c.driver
    d.get(base + "?protocol=raft&nodes=42")
    error = c.wait(
        "var e = document.getElementById('error'); return e && e.offsetParent !== null && e.textContent",
        "the error bar",
    )
    c.check("nodes must be" in error, f"the server's reason is shown: {error}")


def narrow(c, base):
    d = c.driver
    d.set_window_size(400, 1400)
    d.get(base + "?protocol=raft&nodes=5&seed=4&faults=partition,crash&t=4200000")
    ready(c)
    s = state(c)
    c.check(s["t"] == 4200000 and len(s["nodes"]) == 5, "a URL with t restores the moment")
    overflow = d.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    c.check(overflow <= 1, f"nothing overflows a narrow window ({overflow}px)")
    box = d.find_element(By.ID, "cluster").rect
    c.check(0 < box["width"] <= 400, f"the cluster view fits: {box}")
    c.shot("narrow")
    d.set_window_size(1400, 1000)


# ---------------------------------------------------------------- live view


def fetch_status(address):
    with urllib.request.urlopen(f"http://{address}/status", timeout=2) as answer:
        return json.loads(answer.read())


def live(url, out):
    driver = browser(1280, 900)
    c = Checks(driver, out)
    try:
        driver.get(url)
        c.wait("return !!(window.live && window.live.ready)", "the first poll")
        leader = c.wait("return document.getElementById('leader').textContent.trim()", "a leader")
        s = driver.execute_script("return window.live.state()")
        c.check(len(s["members"]) == 3 and all(m["up"] for m in s["members"]), f"three members up: {s}")
        member = next(m for m in s["members"] if str(m["id"]) == leader)
        card = driver.find_element(By.CSS_SELECTOR, f'#members [data-member="{member["addr"]}"]')
        c.check(card.get_attribute("data-role") == "leader", "the leader's card says so")
        c.shot("live-1-leader")
        pid = fetch_status(member["addr"])["pid"]
        os.kill(pid, signal.SIGKILL)
        print(f"killed the leader, node {leader} (pid {pid})")
        c.wait(
            f"""var l = document.getElementById('leader').textContent.trim();
                return l !== '' && l !== '{leader}' && l""",
            "a new leader",
            timeout=60,
        )
        s = driver.execute_script("return window.live.state()")
        down = next(m for m in s["members"] if m["addr"] == member["addr"])
        c.check(not down["up"], "the killed member shows as down")
        dead = driver.find_element(By.CSS_SELECTOR, f'#members [data-member="{member["addr"]}"]')
        c.check(dead.get_attribute("data-role") == "down", "its card says down")
        c.check(len(s["changes"]) >= 1, f"the leader change is listed: {s['changes']}")
        c.check(driver.find_elements(By.CSS_SELECTOR, "#changes li"), "the change is on the page")
        c.shot("live-2-new-leader")
    finally:
        driver.quit()
    print(f"live: {c.passed} checks passed")


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("viz", "live"):
        raise SystemExit(__doc__)
    os.makedirs(sys.argv[3], exist_ok=True)
    {"viz": viz, "live": live}[sys.argv[1]](sys.argv[2], sys.argv[3])
