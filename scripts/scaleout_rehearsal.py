"""Rehearse docs/fleet.md's scale-out on one machine: fleets on two "hosts", a broker cluster.

Usage (as root, Linux, from the repository):
    .venv/bin/python scripts/scaleout_rehearsal.py [--count 200] [--duration 120]
        [--recording-fraction 0.05] [--phases rabbitmq,mosquitto] [--workdir DIR] [--json]

What it builds (docs/scaleout-rehearsal.md has the picture and the results):

* a bridge ``bwcso0`` (10.77.0.1/24) in the root namespace and two network namespaces,
  ``bwcso-host-a`` (10.77.0.21) and ``bwcso-host-b`` (10.77.0.22), each joined to it by a veth
  pair: two "hosts" with their own addresses and loopback;
* phase ``rabbitmq``: a private epmd (127.0.0.1:4370) and two RabbitMQ nodes, ``rabbit-a@localhost``
  and ``rabbit-b@localhost`` (AMQP and Erlang distribution on 127.0.0.1, MQTT 3.1.1 on
  10.77.0.11:1883 and 10.77.0.12:1883), joined into one cluster, with a user ``fleet``;
  broker probes (MQTT 5, anonymous access, retained messages, sessions and client IDs across
  nodes, topic characters, QoS 2, a 2 MiB message) run from host-a;
* phase ``mosquitto``: one mosquitto on 10.77.0.13:1883 (the control);
* in each phase: a first, short run of each host's fleet on its own private mosquitto to make the
  cameras' keys (the guide's "after a first run"), then ``bwc-sim receiver`` in the root namespace
  on the first broker address with every camera's ``device.json`` enrolled (``--trust-key``), a
  telemetry counter on the last broker address, and the two fleets at once, host-a on the first
  broker address, host-b on the last, with disjoint ``--id-offset`` ranges; then ``bwc-sim verify``
  on the receiver's store.

Everything it starts (processes, namespaces, links) is removed at the end, also on failure or
Ctrl-C; the work directory (default ``/tmp/bwc-scaleout-*``) keeps every log and JSON file.
It never touches a broker it did not start. Exit 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parent.parent
PYTHON = REPO / ".venv" / "bin" / "python"
BWC_SIM = REPO / ".venv" / "bin" / "bwc-sim"
RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
BRIDGE, SUBNET = "bwcso0", "10.77.0"
HOSTS = {
    "host-a": ("bwcso-host-a", "bwcso-a", f"{SUBNET}.21"),
    "host-b": ("bwcso-host-b", "bwcso-b", f"{SUBNET}.22"),
}
RABBIT_NODES = {
    "rabbit-a": (f"{SUBNET}.11", 25681, 25691),
    "rabbit-b": (f"{SUBNET}.12", 25682, 25692),
}
MOSQUITTO_ADDR = f"{SUBNET}.13"
EPMD_PORT = 4370
MQTT_USER = "fleet"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(
    *cmd: str | Path, check: bool = True, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a short command; its output is returned (and logged when it fails)."""
    result = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, cmd))} exited {result.returncode}: "
            f"{(result.stderr or result.stdout).strip()[-2000:]}"
        )
    return result


@dataclass
class Rig:
    """What the rehearsal started, undone in reverse order by ``close``."""

    work: Path
    undo: list[tuple[str, Any]] = field(default_factory=list)

    def spawn(
        self,
        name: str,
        cmd: Sequence[str | Path],
        *,
        stdout: IO[Any] | int | None = None,
        env: dict[str, str] | None = None,
        netns: str | None = None,
    ) -> subprocess.Popen[Any]:
        """Start ``cmd`` in its own process group (in ``netns`` if given), stderr to a log file."""
        argv = [str(c) for c in cmd]
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, *argv]
        err = (self.work / "logs" / f"{name}.stderr").open("wb")
        proc = subprocess.Popen(
            argv,
            stdout=stdout if stdout is not None else subprocess.DEVNULL,
            stderr=err,
            env=env,
            start_new_session=True,
        )
        err.close()
        self.undo.append(("proc", (name, proc)))
        return proc

    def on_close(self, description: str, *cmd: str) -> None:
        self.undo.append(("cmd", (description, cmd)))

    def close(self) -> None:
        while self.undo:
            kind, item = self.undo.pop()
            try:
                if kind == "proc":
                    stop_process(*item)
                else:
                    run(*item[1], check=False, timeout=60)
            except Exception as exc:  # noqa: BLE001 -- a supervisor: cleanup goes on whatever one step did
                log(f"cleanup of {item[0]} failed: {exc}")


def stop_process(name: str, proc: subprocess.Popen[Any], grace_s: float = 20) -> None:
    """SIGTERM the process group of ``proc``, SIGKILL it after ``grace_s``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            log(f"{name} ignored SIGTERM; killing it")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # also what its children left behind
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


# -- the network ------------------------------------------------------------------------------


def make_network(rig: Rig, broker_addrs: Sequence[str]) -> None:
    for netns, _veth, _addr in HOSTS.values():
        if run("ip", "netns", "pids", netns, check=False).returncode == 0:
            raise RuntimeError(f"network namespace {netns} exists already: another rehearsal?")
    run("ip", "link", "add", BRIDGE, "type", "bridge")
    rig.on_close(f"bridge {BRIDGE}", "ip", "link", "del", BRIDGE)
    run("ip", "addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE)
    for addr in broker_addrs:
        run("ip", "addr", "add", f"{addr}/32", "dev", BRIDGE)
    run("ip", "link", "set", BRIDGE, "up")
    for netns, veth, addr in HOSTS.values():
        run("ip", "netns", "add", netns)
        rig.on_close(f"netns {netns}", "ip", "netns", "del", netns)
        run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        run("ip", "link", "set", veth, "master", BRIDGE, "up")
        inside = ("ip", "netns", "exec", netns)
        run(*inside, "ip", "addr", "add", f"{addr}/24", "dev", "eth0")
        run(*inside, "ip", "link", "set", "eth0", "up")
        run(*inside, "ip", "link", "set", "lo", "up")


# -- the brokers ------------------------------------------------------------------------------


def rabbit_env(base: Path, node: str | None = None) -> dict[str, str]:
    env = dict(os.environ, HOME=str(base / "home"), ERL_EPMD_PORT=str(EPMD_PORT))
    if node is not None:
        _addr, amqp, dist = RABBIT_NODES[node]
        root = base / node
        env.update(
            RABBITMQ_NODENAME=f"{node}@localhost",
            RABBITMQ_NODE_PORT=str(amqp),
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_DIST_PORT=str(dist),
            RABBITMQ_MNESIA_BASE=str(root / "mnesia"),
            RABBITMQ_LOG_BASE=str(root / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(base / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(root / "rabbitmq.conf"),
            RABBITMQ_PID_FILE=str(root / "pid"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
    return env


def ctl(
    base: Path, node: str, *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return run(
        RABBIT_BIN / "rabbitmqctl",
        "-n",
        f"{node}@localhost",
        *args,
        check=check,
        timeout=timeout,
        env=rabbit_env(base),
    )


def wait_node(base: Path, node: str, timeout_s: float = 180) -> None:
    """``await_startup`` fails at once while the node has not registered with epmd: retry."""
    deadline = time.monotonic() + timeout_s
    while ctl(base, node, "await_startup", "--timeout", "30", check=False, timeout=60).returncode:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{node} did not start in {timeout_s:g} s (logs/{node}.stderr)")
        time.sleep(2)
    log(f"{node} is up")


def start_rabbitmq(rig: Rig, base: Path, password: str) -> dict[str, str]:
    """Two nodes in one cluster, MQTT on each; returns node -> broker URL."""
    (base / "home").mkdir(parents=True)
    cookie = base / "home" / ".erlang.cookie"
    cookie.write_text(secrets.token_hex(16))
    cookie.chmod(0o400)
    (base / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
    rig.spawn("epmd", ["epmd", "-port", str(EPMD_PORT), "-address", "127.0.0.1"])
    for node, (addr, amqp, _dist) in RABBIT_NODES.items():
        (base / node).mkdir()
        (base / node / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{amqp}\nmqtt.listeners.tcp.default = {addr}:1883\n"
        )
        rig.undo.append(
            (
                "cmd",
                (
                    f"{node} shutdown",
                    (str(RABBIT_BIN / "rabbitmqctl"), "-n", f"{node}@localhost", "shutdown"),
                ),
            )
        )
        rig.spawn(node, [RABBIT_BIN / "rabbitmq-server"], env=rabbit_env(base, node))
    for node in RABBIT_NODES:
        wait_node(base, node)
    first, *others = RABBIT_NODES
    for node in others:
        ctl(base, node, "stop_app")
        ctl(base, node, "join_cluster", f"{first}@localhost")
        ctl(base, node, "start_app")
    ctl(base, first, "add_user", MQTT_USER, password)
    ctl(base, first, "set_permissions", "-p", "/", MQTT_USER, ".*", ".*", ".*")
    status = ctl(base, first, "cluster_status", "--formatter", "json").stdout
    (base / "cluster_status.json").write_text(status)
    running = json.loads(status).get("running_nodes", [])
    log(f"cluster running nodes: {running}")
    if len(running) != len(RABBIT_NODES):
        raise RuntimeError(f"the cluster has {running}, not {list(RABBIT_NODES)}")
    return {node: f"mqtt://{addr}:1883" for node, (addr, _a, _d) in RABBIT_NODES.items()}


def start_mosquitto(rig: Rig, base: Path) -> dict[str, str]:
    base.mkdir(parents=True)
    conf = base / "mosquitto.conf"
    conf.write_text(
        f"listener 1883 {MOSQUITTO_ADDR}\nallow_anonymous true\npersistence false\n"
        "max_connections -1\nlog_dest stderr\nlog_type error\nlog_type warning\n"
    )
    rig.spawn("mosquitto", ["mosquitto", "-c", conf])
    deadline = time.monotonic() + 15
    while run("ss", "-ltnH", "src", f"{MOSQUITTO_ADDR}:1883").stdout.strip() == "":
        if time.monotonic() > deadline:
            raise RuntimeError("mosquitto did not listen within 15 s (logs/mosquitto.stderr)")
        time.sleep(0.2)
    return {"mosquitto": f"mqtt://{MOSQUITTO_ADDR}:1883"}


def broker_pids(phase: str) -> list[int]:
    """The PIDs of this rehearsal's broker processes (found by their listening address)."""
    addrs = [a for a, _p, _d in RABBIT_NODES.values()] if phase == "rabbitmq" else [MOSQUITTO_ADDR]
    pids: set[int] = set()
    for addr in addrs:
        out = run("ss", "-ltnpH", "src", f"{addr}:1883").stdout
        pids.update(
            int(part.split("=")[1])
            for part in out.replace(",", " ").split()
            if part.startswith("pid=")
        )
    return sorted(pids)


def proc_usage(pids: Sequence[int]) -> dict[str, float]:
    """CPU seconds (user + system) and RSS of ``pids``, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    cpu, rss = 0.0, 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / ticks
            rss += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return {"cpu_s": cpu, "rss_mb": rss / 2**20}


# -- broker probes (``probe`` subcommand, run on host-a with paho) ------------------------------


class Probe:
    """One paho client, with what it saw: CONNACK, SUBACK codes, messages, disconnects."""

    def __init__(
        self,
        url: str,
        client_id: str,
        *,
        v5: bool = False,
        clean: bool = True,
        auth: bool = True,
        will: str | None = None,
    ) -> None:
        self.host, port = url.removeprefix("mqtt://").split(":")
        protocol = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        kwargs: dict[str, Any] = {} if v5 else {"clean_session": clean}
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, **kwargs
        )
        if auth:
            self.client.username_pw_set(MQTT_USER, os.environ["BWC_MQTT_PASSWORD"])
        if will is not None:
            self.client.will_set(will, b"gone", qos=1, retain=True)
        self.port = int(port)
        self.connack: Any = None
        self.session_present: bool | None = None
        self.granted: list[int] = []
        self.messages: list[tuple[str, int, bool]] = []
        self.disconnects: list[str] = []
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda _c, _u, _m, codes, _p: self.granted.extend(
            int(c.value) for c in codes
        )
        self.client.on_message = lambda _c, _u, m: self.messages.append(
            (m.topic, len(m.payload), bool(m.retain))
        )
        self.client.on_disconnect = lambda _c, _u, _f, rc, _p: self.disconnects.append(str(rc))

    def _on_connect(self, _c: Any, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
        self.connack = str(rc)
        self.session_present = bool(flags.session_present)

    def connect(self, wait_s: float = 5) -> str:
        """``accepted``, the broker's refusal, or what happened instead of a CONNACK."""
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            return f"socket error: {exc}"
        self.client.loop_start()
        until(lambda: self.connack is not None or bool(self.disconnects), wait_s)
        if self.connack is None:
            gone = f"connection closed ({self.disconnects[0]})" if self.disconnects else "nothing"
            return f"no CONNACK in {wait_s:g} s: {gone}"
        return "accepted" if self.connack == "Success" else f"refused: {self.connack}"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def until(condition: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def probe_pair(first: str, last: str) -> dict[str, str]:
    """Broker behaviours bwc-sim depends on, checked across two broker addresses."""
    out: dict[str, str] = {}
    anon = Probe(first, "probe-anon", auth=False)
    out["anonymous 3.1.1 connect"] = anon.connect()
    anon.close()
    v5 = Probe(first, "probe-v5", v5=True)
    out["MQTT 5 connect"] = v5.connect()
    v5.close()
    long_id = "c" * 64
    probe = Probe(first, long_id)
    out["64-character client ID"] = probe.connect()
    probe.close()
    out.update(probe_retained(first, last))
    out.update(probe_session(first, last))
    out.update(probe_duplicate_id(first, last))
    out.update(probe_topics(first, last))
    return out


def probe_retained(first: str, last: str) -> dict[str, str]:
    pub = Probe(first, "probe-ret-pub")
    pub.connect()
    pub.client.publish(
        "bwc/v1/dev/probe-ret/status", b"online", qos=1, retain=True
    ).wait_for_publish(5)
    pub.close()
    seen: dict[str, str] = {}
    for where, url, topic in (
        ("exact, same node", first, "bwc/v1/dev/probe-ret/status"),
        ("exact, other node", last, "bwc/v1/dev/probe-ret/status"),
        ("'+' filter, same node", first, "bwc/v1/dev/+/status"),
    ):
        sub = Probe(url, f"probe-ret-sub-{len(seen)}")
        sub.connect()
        sub.client.subscribe(topic, qos=1)
        until(lambda s=sub: bool(s.messages), 3)
        seen[where] = f"{len(sub.messages)} message(s)" + (
            " (retain flag)" if any(m[2] for m in sub.messages) else ""
        )
        sub.close()
    will = Probe(first, "probe-will", will="bwc/v1/dev/probe-will/status")
    will.connect()
    sock = will.client.socket()
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)  # no DISCONNECT: the Will is sent
    time.sleep(1)
    will.client.loop_stop()
    sub = Probe(first, "probe-will-sub")
    sub.connect()
    sub.client.subscribe("bwc/v1/dev/probe-will/status", qos=1)
    until(lambda: bool(sub.messages), 3)
    sub.close()
    out = {f"retained message, subscribed later ({where})": n for where, n in seen.items()}
    out["retained Last Will, exact topic, same node"] = f"{len(sub.messages)} message(s)"
    return out


def probe_session(first: str, last: str) -> dict[str, str]:
    topic = "bwc/v1/dev/probe-sess/cmd"
    client = Probe(first, "probe-sess", clean=False)
    client.connect()
    client.client.subscribe(topic, qos=2)
    until(lambda: bool(client.granted), 3)
    granted = client.granted[:]
    client.close()
    pub = Probe(last, "probe-sess-pub")
    pub.connect()
    pub.client.publish(topic, b"queued", qos=1).wait_for_publish(5)
    pub.close()
    again = Probe(last, "probe-sess", clean=False)
    result = again.connect()
    until(lambda: bool(again.messages), 3)
    again.close()
    return {
        "QoS 2 subscription, granted QoS": str(granted),
        "persistent session resumed on the other node": (
            f"{result}, session present {again.session_present}, "
            f"{len(again.messages)} queued message(s) delivered"
        ),
    }


def probe_duplicate_id(first: str, last: str) -> dict[str, str]:
    one = Probe(first, "probe-dup")
    one.connect()
    two = Probe(last, "probe-dup")
    result = two.connect()
    until(lambda: bool(one.disconnects), 5)
    outcome = f"second connect {result}; first client " + (
        f"disconnected ({one.disconnects[0]})" if one.disconnects else "still connected"
    )
    one.close()
    two.close()
    return {"same client ID on both nodes": outcome}


def probe_topics(first: str, last: str) -> dict[str, str]:
    """Device IDs with '-', '_' and '.' (all legal in bwc-sim), and a 2 MiB message."""
    out = {}
    cases = [
        ("bwc/v1/dev/+/telemetry", "bwc/v1/dev/cam_1-a/telemetry", b"{}"),
        ("bwc/v1/dev/+/telemetry", "bwc/v1/dev/cam.1/telemetry", b"{}"),
        ("bwc/v1/dev/cam.2/cmd", "bwc/v1/dev/cam.2/cmd", b"{}"),
        ("bwc/v1/dev/+/upload/chunk", "bwc/v1/dev/cam-1/upload/chunk", b"\0" * (2 * 2**20 + 64)),
    ]
    for index, (topic_filter, topic, payload) in enumerate(cases):
        sub = Probe(last, f"probe-topics-sub-{index}")
        sub.connect()
        sub.client.subscribe(topic_filter, qos=1)
        until(lambda s=sub: bool(s.granted), 3)
        pub = Probe(first, f"probe-topics-pub-{index}")
        pub.connect()
        pub.client.publish(topic, payload, qos=1).wait_for_publish(20)
        until(lambda s=sub: bool(s.messages), 5)
        pub.close()
        sub.close()
        got = ", ".join(f"{t} ({n} bytes)" for t, n, _r in sub.messages) or "nothing"
        out[f"publish {topic} ({len(payload)} bytes) to filter {topic_filter}, across nodes"] = got
    return out


def count_telemetry(url: str) -> None:
    """``count-telemetry``: count telemetry messages per device until SIGTERM, then print JSON."""
    counts: dict[str, int] = {}
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id="bwcso-telemetry-counter",
        protocol=mqtt.MQTTv311,
        clean_session=True,
    )
    if os.environ.get("BWC_MQTT_PASSWORD"):
        client.username_pw_set(MQTT_USER, os.environ["BWC_MQTT_PASSWORD"])

    def on_connect(c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        c.subscribe("bwc/v1/dev/+/telemetry", qos=0)
        print(f"counter connected: {rc}", file=sys.stderr, flush=True)

    def on_message(_c: Any, _u: Any, message: Any) -> None:
        device = message.topic.split("/")[3]
        counts[device] = counts.get(device, 0) + 1

    client.on_connect, client.on_message = on_connect, on_message
    signal.signal(signal.SIGTERM, lambda *_: client.disconnect())
    host, port = url.removeprefix("mqtt://").split(":")
    client.connect(host, int(port), keepalive=30)
    client.loop_forever()
    print(json.dumps(counts))


# -- one phase --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    count: int
    duration: float
    recording_fraction: float
    work: Path
    fleet_verbose: bool = False


def host_offset(host: str, count: int) -> int:
    return 1 + list(HOSTS).index(host) * count


def make_keys(rig: Rig, opts: Options, phase_dir: Path) -> list[Path]:
    """The guide's first run: each host's fleet briefly on its own private mosquitto."""
    procs = []
    for host, (netns, _veth, _addr) in HOSTS.items():
        cmd: list[str | Path] = [
            BWC_SIM,
            "fleet",
            "--count",
            str(opts.count),
            "--id-offset",
            str(host_offset(host, opts.count)),
            "--duration",
            "10",
            "--connect-rate",
            "1000",
            "--recording-fraction",
            "0",
            "--receiver",
            "none",
            "--json",
            "--data-dir",
            phase_dir / host,
        ]
        out = (phase_dir / f"{host}.keys.json").open("wb")
        procs.append(
            (host, rig.spawn(f"{phase_dir.name}-{host}-keys", cmd, stdout=out, netns=netns))
        )
        out.close()
    for host, proc in procs:  # its exit status does not matter: only the keys are wanted
        log(f"{host}'s key run exited {proc.wait(180)}")
    keys = sorted(phase_dir.glob("host-*/cameras/*/device.json"))
    if len(keys) != 2 * opts.count:
        raise RuntimeError(f"{len(keys)} device.json files, expected {2 * opts.count}")
    return keys


def start_receiver(
    rig: Rig, url: str, phase_dir: Path, keys: list[Path], *, env: dict[str, str], auth: list[str]
) -> subprocess.Popen[Any]:
    cmd: list[str | Path] = [
        BWC_SIM,
        "receiver",
        "--broker",
        url,
        "--store",
        phase_dir / "store",
        "--mqtt",
        "3.1.1",
        "--json",
        "-v",
        *auth,
    ]
    for key in keys:
        cmd += ["--trust-key", key]
    out = (phase_dir / "receipts.jsonl").open("wb")
    proc = rig.spawn(f"{phase_dir.name}-receiver", cmd, stdout=out, env=env)
    out.close()
    err = rig.work / "logs" / f"{phase_dir.name}-receiver.stderr"
    if not until(lambda: "serving" in err.read_text() or proc.poll() is not None, 60):
        raise RuntimeError("the receiver did not subscribe within 60 s")
    if proc.poll() is not None:
        raise RuntimeError(f"the receiver exited {proc.returncode}: {err.read_text()[-1000:]}")
    return proc


def established(url: str) -> int:
    addr = url.removeprefix("mqtt://")
    return len(run("ss", "-tnH", "state", "established", "src", addr).stdout.splitlines())


def run_fleets(
    rig: Rig,
    opts: Options,
    phase_dir: Path,
    urls: list[str],
    *,
    env: dict[str, str],
    auth: list[str],
) -> dict[str, Any]:
    """Both hosts' fleets at once; returns their summaries and mid-run connection counts."""
    procs = {}
    for (host, (netns, _veth, _addr)), url in zip(HOSTS.items(), (urls[0], urls[-1]), strict=True):
        cmd: list[str | Path] = [
            BWC_SIM,
            "fleet",
            "--count",
            str(opts.count),
            "--mqtt",
            "3.1.1",
            "--broker",
            url,
            *auth,
            "--id-offset",
            str(host_offset(host, opts.count)),
            "--receiver",
            "none",
            "--recording-fraction",
            str(opts.recording_fraction),
            "--duration",
            str(opts.duration),
            "--json",
            "--data-dir",
            phase_dir / host,
            *(["-v"] if opts.fleet_verbose else []),
        ]
        out = (phase_dir / f"{host}.fleet.json").open("wb")
        procs[host] = rig.spawn(
            f"{phase_dir.name}-{host}-fleet", cmd, stdout=out, env=env, netns=netns
        )
        out.close()
        log(f"{host}: {' '.join(map(str, cmd[1:]))}")
    time.sleep(min(45.0, opts.duration / 2))
    mid = {url: established(url) for url in urls}
    log(f"established MQTT connections per broker address mid-run: {mid}")
    for host, proc in procs.items():
        proc.wait(opts.duration + 300)
        log(f"{host}'s fleet exited {proc.returncode}")
    fleets = {}
    for host, proc in procs.items():
        text = (phase_dir / f"{host}.fleet.json").read_text()
        fleets[host] = json.loads(text) if text.strip() else {"failed": proc.returncode}
    return {
        "fleets": fleets,
        "exit": {h: p.returncode for h, p in procs.items()},
        "connections_mid_run": mid,
    }


def rabbit_queues(base: Path) -> dict[str, Any]:
    """Queues per node (``--local``) and the messages left in them (the MQTT sessions)."""
    per_node: dict[str, int] = {}
    left = 0
    for node in RABBIT_NODES:
        out = ctl(
            base,
            node,
            "list_queues",
            "--local",
            "name",
            "messages",
            "--formatter",
            "json",
            check=False,
        )
        try:
            queues = json.loads(out.stdout)
        except ValueError:
            return {"error": (out.stderr or out.stdout).strip()[-300:]}
        per_node[node] = len(queues)
        left += sum(int(q.get("messages") or 0) for q in queues)
    return {"queues_per_node": per_node, "messages_left": left}


def run_phase(rig: Rig, opts: Options, phase: str) -> dict[str, Any]:
    phase_dir = opts.work / phase
    phase_dir.mkdir()
    password = secrets.token_urlsafe(12)
    env = {k: v for k, v in os.environ.items() if k != "BWC_MQTT_PASSWORD"}
    if phase == "rabbitmq":  # a password without --username is refused (exit 2)
        env["BWC_MQTT_PASSWORD"] = password
        brokers = start_rabbitmq(rig, phase_dir / "rabbitmq", password)
        auth = ["--username", MQTT_USER]
    else:
        brokers = start_mosquitto(rig, phase_dir / "mosquitto")
        auth = []
    urls = list(brokers.values())
    result: dict[str, Any] = {"phase": phase, "brokers": brokers}
    if phase == "rabbitmq":
        probe = run(
            *("ip", "netns", "exec", HOSTS["host-a"][0]),
            PYTHON,
            __file__,
            "probe",
            urls[0],
            urls[-1],
            env=env,
            timeout=180,
            check=False,
        )
        result["probes"] = json.loads(probe.stdout) if probe.returncode == 0 else probe.stderr
        (phase_dir / "probes.json").write_text(json.dumps(result["probes"], indent=2))
    keys = make_keys(rig, opts, phase_dir)
    counts_out = (phase_dir / "telemetry_counts.json").open("wb")
    counter = rig.spawn(
        f"{phase}-counter",
        [PYTHON, __file__, "count-telemetry", urls[-1]],
        stdout=counts_out,
        env=env,
    )
    counts_out.close()
    receiver = start_receiver(rig, urls[0], phase_dir, keys, env=env, auth=auth)
    before = proc_usage(broker_pids(phase))
    t0 = time.monotonic()
    result.update(run_fleets(rig, opts, phase_dir, urls, env=env, auth=auth))
    result["fleet_wall_s"] = round(time.monotonic() - t0, 1)
    after = proc_usage(broker_pids(phase))
    result["broker"] = {
        "cpu_s": round(after["cpu_s"] - before["cpu_s"], 1),
        "rss_mb_end": round(after["rss_mb"], 1),
    }
    time.sleep(3)  # the last acks, the last telemetry
    if phase == "rabbitmq":
        result["broker"].update(rabbit_queues(phase_dir / "rabbitmq"))
    stop_process(f"{phase}-receiver", receiver)
    stop_process(f"{phase}-counter", counter)
    result["receiver"] = receipts(phase_dir / "receipts.jsonl", opts)
    text = (phase_dir / "telemetry_counts.json").read_text().strip()
    counts = json.loads(text) if text else {}
    result["telemetry_counted"] = by_host(counts, opts)
    verify = run(BWC_SIM, "verify", phase_dir / "store", "--json", check=False, timeout=600)
    report = json.loads(verify.stdout) if verify.stdout.strip() else {}
    result["verify"] = {
        "exit": verify.returncode,
        "ok": report.get("ok"),
        "segments": report.get("segments"),
        "bytes": report.get("bytes"),
        "audit_records": report.get("audit_records"),
        "faults": report.get("faults", [])[:5],
    }
    result["checks"] = checks(result, opts)
    return result


def host_of(device: str, opts: Options) -> str:
    number = int(device.rsplit("-", 1)[1])
    for host in HOSTS:
        if host_offset(host, opts.count) <= number < host_offset(host, opts.count) + opts.count:
            return host
    return "other"


def by_host(counts: dict[str, int], opts: Options) -> dict[str, int]:
    totals: dict[str, int] = {}
    for device, n in counts.items():
        totals[host_of(device, opts)] = totals.get(host_of(device, opts), 0) + n
    return totals


def receipts(path: Path, opts: Options) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            device = json.loads(line)["device"]
            counts[device] = counts.get(device, 0) + 1
    return by_host(counts, opts)


def checks(result: dict[str, Any], opts: Options) -> list[tuple[str, bool, str]]:
    """What the guide promises, as (check, passed, detail)."""
    out = []
    for host, fleet in result["fleets"].items():
        out.append(
            (
                f"{host}: no error",
                fleet.get("errors") == 0,
                f"errors {fleet.get('errors')} {fleet.get('error_kinds')}",
            )
        )
        out.append(
            (
                f"{host}: all connected at the end",
                fleet.get("connected") == opts.count,
                f"{fleet.get('connected')}/{opts.count}",
            )
        )
        out.append(
            (
                f"{host}: nothing pending",
                fleet.get("segments_pending") == 0,
                f"segments_pending {fleet.get('segments_pending')}",
            )
        )
        got = result["receiver"].get(host, 0)
        out.append(
            (
                f"{host}: receiver holds what the cameras saw verified",
                got == fleet.get("segments_verified") and got > 0,
                f"receipts {got}, fleet segments_verified {fleet.get('segments_verified')}",
            )
        )
        sent, seen = fleet.get("telemetry_sent", 0), result["telemetry_counted"].get(host, 0)
        out.append(
            (
                f"{host}: telemetry counted on the other broker address",
                sent > 0 and seen >= 0.99 * sent,
                f"counted {seen} of {sent} sent",
            )
        )
    out.append(
        (
            "receiver store verifies",
            bool(result["verify"]["ok"]),
            f"exit {result['verify']['exit']}, {result['verify']['segments']} segments",
        )
    )
    return out


# -- the report -------------------------------------------------------------------------------

ROWS = [
    ("cameras", "cameras"),
    ("connected", "connected"),
    ("errors", "errors"),
    ("telemetry sent", "telemetry_sent"),
    ("recordings", "recordings"),
    ("segments verified", "segments_verified"),
    ("MB verified", "bytes_verified"),
    ("segments pending", "segments_pending"),
    ("fleet CPU %core", "cpu_per_core_percent"),
    ("idle CPU %core", "idle_cpu_per_core_percent"),
    ("RSS/camera KiB", "rss_per_camera_bytes"),
]


def table(results: list[dict[str, Any]]) -> str:
    columns = [(r["phase"], host, fleet) for r in results for host, fleet in r["fleets"].items()]
    lines = [
        "| | " + " | ".join(f"{p} {h}" for p, h, _f in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for label, key in ROWS:
        cells = []
        for _p, _h, fleet in columns:
            value = fleet.get(key)
            if key == "bytes_verified" and value is not None:
                value = round(value / 1e6, 1)
            elif key == "rss_per_camera_bytes" and value is not None:
                value = round(value / 1024)
            elif isinstance(value, float):
                value = round(value, 1)
            cells.append(str(value))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for r in results:
        lines.append(
            f"\n{r['phase']}: receipts {r['receiver']}, telemetry counted "
            f"{r['telemetry_counted']}, broker {r['broker']}, mid-run connections "
            f"{r['connections_mid_run']}, verify {r['verify']}"
        )
        for name, passed, detail in r["checks"]:
            lines.append(f"  [{'ok' if passed else 'FAIL'}] {name}: {detail}")
        for name, outcome in (r.get("probes") or {}).items():
            lines.append(f"  probe: {name}: {outcome}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200, help="cameras per host (default 200)")
    parser.add_argument("--duration", type=float, default=120.0, help="fleet seconds (120)")
    parser.add_argument("--recording-fraction", type=float, default=0.05)
    parser.add_argument("--phases", default="rabbitmq,mosquitto")
    parser.add_argument("--workdir", type=Path, help="default: a new /tmp/bwc-scaleout-*")
    parser.add_argument("--json", action="store_true", help="all results as JSON on stdout")
    parser.add_argument(
        "--fleet-verbose",
        action="store_true",
        help="run the fleets with -v (their link-down reasons in logs/)",
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root: it makes network namespaces")
    phases = [p for p in args.phases.split(",") if p]
    if not set(phases) <= {"rabbitmq", "mosquitto"}:
        parser.error("--phases takes rabbitmq and/or mosquitto")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bwc-scaleout-"))
    (work / "logs").mkdir(parents=True, exist_ok=True)
    opts = Options(args.count, args.duration, args.recording_fraction, work, args.fleet_verbose)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    results, failed = [], False
    for phase in phases:
        rig = Rig(work)
        try:
            addrs = (
                [a for a, _p, _d in RABBIT_NODES.values()]
                if phase == "rabbitmq"
                else [MOSQUITTO_ADDR]
            )
            make_network(rig, addrs)
            log(f"phase {phase}: work directory {work}")
            results.append(run_phase(rig, opts, phase))
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 -- report it, clean up, go on
            log(f"phase {phase} failed: {exc!r}")
            failed = True
            if isinstance(exc, KeyboardInterrupt):
                break
        finally:
            log(f"phase {phase}: cleaning up")
            rig.close()
    (work / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results, indent=2, default=str) if args.json else table(results))
    log(f"results in {work / 'results.json'}")
    passed = all(ok for r in results for _n, ok, _d in r["checks"])
    return 0 if results and passed and not failed else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "probe":
        print(json.dumps(probe_pair(sys.argv[2], sys.argv[3]), indent=2))
    elif len(sys.argv) > 1 and sys.argv[1] == "count-telemetry":
        count_telemetry(sys.argv[2])
    else:
        sys.exit(main())
