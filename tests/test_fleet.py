"""Fleets (issue 7): the lazy media feed, the fleet's plan, and ``bwc-sim fleet`` end to end.

The lazy feed is checked byte for byte: a camera fed only when something may read its buffer
(and made to forget it in between) leaves exactly the data directory of one fed all along. The
end-to-end test runs a small fleet as ``python -m sim.cli fleet`` against the ``mosquitto``
fixture with the embedded receiver, watches the telemetry like a backend would, commands one idle
camera to record, and checks every camera connected, every recording verified at the receiver
and deleted on its camera, and no error.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Final

import pytest

from device.daemon import DaemonConfig
from device.errors import ConfigError
from device.mqtt.settings import BrokerSettings
from device.packets import Stream
from device.prebuffer import PreEventBuffer, PreEventBufferConfig
from device.store import segment_name
from sim.broker import PrivateBroker
from sim.cli import main
from sim.feed import FeedOptions
from sim.fleet.camera import COUNTED, FleetCamera, live_options
from sim.fleet.config import FleetConfig
from sim.fleet.plan import plan_cameras, recording_set, worker_indices
from sim.fleet.stats import WorkerReport
from sim.fleet.totals import CameraTotals
from sim.media import MediaSource
from sim.receiver.verify import verify_receiver_store
from sim.runner import ScenarioRun
from sim.scenario import parse_scenario
from tests.connected_support import (
    WAIT_S,
    child_env,
    device_receipts,
    recorded_segments,
    segments_left,
    sha256_of,
    subscriber,
)
from tests.mqtt_support import wait_until

LAZY_SCENARIO: Final = """
[scenario]
name = "lazy feed"
duration = 90
[device]
id = "cam-lazy"
seed = 11
[policy]
pre_event_s = 10
segment_s = 4
[media]
video = "720p30-low"
bitrate_bps = 300000
[[timeline]]
at = 0
do = "power_on"
[[timeline]]
at = 20
do = "double_press"
[[timeline]]
at = 27.3
do = "hold"
reason = "done"
[[timeline]]
at = 40
do = "sleep"
[[timeline]]
at = 44
do = "wake"
[[timeline]]
at = 49.1
do = "double_press"
[[timeline]]
at = 52
do = "hold"
reason = "again"
[[timeline]]
at = 60
do = "power_off"
[[timeline]]
at = 62
do = "power_on"
[[timeline]]
at = 80
do = "double_press"
[[timeline]]
at = 85
do = "hold"
reason = "last"
"""


def files_of(root: Path) -> dict[Path, bytes]:
    """Every file under ``root`` by relative path, with its bytes."""
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# -- the lazy feed ------------------------------------------------------------------------------


def test_a_lazy_feed_leaves_the_same_data_directory(tmp_path: Path) -> None:
    """Fed lazily, in a daemon's coarse steps with commands between them: byte-identical."""
    plan = parse_scenario(LAZY_SCENARIO, "<lazy>")
    ScenarioRun(plan, tmp_path / "eager").run()
    lazy = ScenarioRun(plan, tmp_path / "lazy", feed=FeedOptions(lazy=True))
    now = 0.0
    while now < plan.duration_s:
        lazy.advance_to(now)
        if now in (33.6, 70.0):  # a command would arrive here: the buffer is filled first
            lazy.settle(now)
        now = round(now + 0.7, 3)
    lazy.finish()
    ScenarioRun(plan, tmp_path / "lazy-run", feed=FeedOptions(lazy=True)).run()
    eager = files_of(tmp_path / "eager")
    assert len(eager) > 10
    assert files_of(tmp_path / "lazy") == eager
    assert files_of(tmp_path / "lazy-run") == eager


def test_an_idle_lazy_camera_holds_no_buffer_until_settled(tmp_path: Path) -> None:
    """Nothing due: no packet made, no arena; ``settle`` rebuilds what feeding all along holds."""
    plan = parse_scenario(LAZY_SCENARIO, "<lazy>")
    eager = ScenarioRun(plan, tmp_path / "eager")
    lazy = ScenarioRun(plan, tmp_path / "lazy", feed=FeedOptions(lazy=True))
    for now in (0.0, 5.0, 12.5):
        eager.advance_to(now)
        lazy.advance_to(now)
        assert lazy.stats.packets == 0
        assert not lazy.camera.buffer.allocated
    assert lazy.next_time() == 20.0  # the double press: no media batches while buffering
    lazy.settle(12.5)
    assert lazy.camera.buffer.packets() == eager.camera.buffer.packets()
    assert lazy.camera.buffer.delivered_s == pytest.approx(10.0, abs=1.0)
    lazy.advance_to(13.0)  # nothing due for 7 s: forgotten again
    assert not lazy.camera.buffer.allocated
    lazy.advance_to(20.0)  # the double press drains a buffer rebuilt exactly
    assert lazy.camera.state.value == "recording"
    assert lazy.next_time() == pytest.approx(20.5)  # a recording camera is fed in batches


def test_the_pre_event_buffer_allocates_on_first_store_and_releases_when_empty() -> None:
    """No arena until a packet is stored; ``release`` only when empty; usable after it."""
    source = MediaSource(3, "cam-3")
    buffer = PreEventBuffer(PreEventBufferConfig(seconds=2.0, max_bytes=1 << 20))
    held = [buffer.allocated, buffer.release()]
    for packet in source.packets_until(3.0):
        buffer.push(packet, source)
    held += [buffer.allocated, buffer.release()]  # not empty: kept
    first = buffer.first_pts_s
    preroll = buffer.drain()
    assert preroll.packets[0].packet.pts_s == first
    held += [buffer.release(), buffer.allocated]
    assert held == [False, False, True, False, True, False]
    for packet in source.packets_until(6.0):
        buffer.push(packet, source)
    again = buffer.drain()
    assert again.packets[0].packet.keyframe
    assert all(source.check_payload(p.packet, p.payload) for p in again.packets)


def test_media_filler_is_lazy_shared_by_seed_and_seekable() -> None:
    """A fleet's shared filler changes only the filler; ``seek`` goes back to the same packets."""
    own, shared = MediaSource(5, "cam-5"), MediaSource(5, "cam-5", filler_seed=99)
    packet = own.packet_at(Stream.VIDEO, 30)
    assert packet == shared.packet_at(Stream.VIDEO, 30)
    assert own.payload(packet)[:24] == shared.payload(packet)[:24]  # the keyed header
    assert own.payload(packet) != shared.payload(packet)
    assert shared.check_payload(packet, shared.payload(packet))
    walked = list(own.packets_until(4.0))
    own.seek(1.0)
    assert list(own.packets_until(4.0)) == [p for p in walked if p.pts_s >= 1.0]
    with pytest.raises(ConfigError, match="filler_seed"):
        MediaSource(5, "cam-5", filler_seed=-1)


def test_daemon_timing_is_validated() -> None:
    """The loop's and the pollers' longest sleeps are finite and positive."""
    assert DaemonConfig(max_tick_s=10.0, poll_s=30.0).max_tick_s == 10.0
    for bad in ({"max_tick_s": 0.0}, {"poll_s": float("inf")}, {"telemetry_interval_s": -1.0}):
        with pytest.raises(ConfigError):
            DaemonConfig(**bad)  # type: ignore[arg-type]


# -- the plan -----------------------------------------------------------------------------------


def test_the_plan_names_seeds_staggers_and_picks_recording_cameras(tmp_path: Path) -> None:
    """IDs from the prefix and offset, distinct stable seeds, a seeded recording subset."""
    config = FleetConfig(count=40, workers=3, data_dir=tmp_path, duration_s=30, id_offset=7)
    plans = plan_cameras(config, range(config.count))
    assert [p.device_id for p in plans[:2]] == ["cam-00007", "cam-00008"]
    assert len({p.seed for p in plans}) == 40
    assert plans == plan_cameras(config, range(config.count))
    assert [p.start_s for p in plans[:3]] == [0.0, 1 / 200, 2 / 200]
    recording = [p for p in plans if p.records]
    assert {p.index for p in recording} == recording_set(config)
    assert len(recording) == 2  # 5 % of 40
    window = config.recording_window()
    for plan in recording:
        actions = [(e.action, e.at_s + plan.start_s) for e in plan.scenario.timeline]
        assert [a for a, _ in actions] == ["power_on", "double_press", "hold"]
        assert window.first_s <= actions[1][1] < actions[2][1] <= window.last_end_s + 0.01
    idle = next(p for p in plans if not p.records)
    assert [e.action for e in idle.scenario.timeline] == ["power_on"]
    shares = [set(worker_indices(config, w)) for w in range(config.workers)]
    assert set().union(*shares) == set(range(40))
    assert sum(len(s) for s in shares) == 40


def fleet_cameras(config: FleetConfig) -> list[FleetCamera]:
    """The cameras of ``config``, made but not started (no broker is needed)."""
    broker = BrokerSettings("127.0.0.1", 1)
    utc_now = dt.datetime(2026, 11, 29, 14, 0, tzinfo=dt.UTC)
    return [
        FleetCamera(
            plan, live_options(config, config.camera_dirs / plan.device_id, broker), utc_now=utc_now
        )
        for plan in plan_cameras(config, range(config.count))
    ]


def test_the_running_totals_follow_the_cameras_that_moved(tmp_path: Path) -> None:
    """A worker's totals re-read only the cameras that said they moved (their daemon's
    ``on_change``), and match a full recount of every camera when every change was said."""
    config = FleetConfig(count=4, data_dir=tmp_path, duration_s=30, recording_fraction=0)
    totals = CameraTotals()
    for camera in fleet_cameras(config):
        totals.add(camera)
    cameras = totals.cameras

    def counts(*, full: bool = False) -> tuple[dict[str, int], Counter[str]]:
        totals.update(full=full)
        report, errors = WorkerReport(worker=0, cameras=len(cameras)), Counter[str]()
        totals.fill(report, errors)
        return {name: getattr(report, name) for name in COUNTED}, errors

    def moved(camera: FleetCamera) -> None:
        hook = camera.live.daemon.on_change
        assert hook is not None
        hook()

    assert counts()[0] == dict.fromkeys(COUNTED, 0)
    for camera in cameras[:3]:
        camera.started = True
        moved(camera)
    cameras[0].live.run.advance_to(1.0)  # powers on: buffering
    moved(cameras[0])
    first, errors = counts()
    assert (first["started"], first["buffering"], first["connected"]) == (3, 1, 0)
    assert not errors
    stats = cameras[1].live.daemon.stats
    stats.telemetry_sent, stats.publish_refused = 7, 2
    assert counts() == (first, Counter())  # not said: not re-read
    moved(cameras[1])
    second, errors = counts()
    assert second["telemetry_sent"] == 7
    assert errors == Counter(publish_refused=2)
    stats.publish_refused, stats.telemetry_sent = 0, 9
    moved(cameras[1])
    cameras[3].started = True
    moved(cameras[3])
    assert counts() == ({**second, "telemetry_sent": 9, "started": 4}, Counter())
    assert counts() == counts(full=True)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"count": 0}, "--count must be an integer from 1"),
        ({"count": 3, "workers": 4}, "--workers (4) cannot exceed --count (3)"),
        ({"duration_s": -5.0}, "--duration must be a number"),
        ({"id_prefix": "bad/"}, "--id-prefix"),
        ({"recording_fraction": 1.5}, "--recording-fraction"),
        ({"count": 1000, "duration_s": 10.0}, "leaves no time for recordings"),
    ],
)
def test_bad_fleet_options_are_refused(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    """Each option is checked once, with a message that names it."""
    values: dict[str, Any] = {"count": 10, "data_dir": tmp_path, **options}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        FleetConfig(**values)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--count", "0"], "--count must be an integer from 1"),
        (["--count", "5", "--duration", "-1"], "--duration must be a number"),
        (["--count", "5", "--scenario", "no-such-scenario.toml"], "no-such-scenario.toml"),
        (["--count", "5", "--broker", "ftp://x"], "ftp"),
    ],
)
def test_bad_command_lines_exit_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """Bad usage is exit 2 before anything starts, and the message names what is wrong."""
    assert main(["fleet", "--data-dir", str(tmp_path), *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err
    assert not (tmp_path / "cameras").exists()


# -- end to end ---------------------------------------------------------------------------------

COUNT: Final = 40
WORKERS: Final = 2
DURATION_S: Final = 24.0
SUMMARY_KEYS: Final = {
    "cameras",
    "workers",
    "duration_s",
    "connected",
    "telemetry_sent",
    "recordings",
    "segments_verified",
    "bytes_verified",
    "errors",
    "error_kinds",
    "cpu_s",
    "cpu_per_core_percent",
    "rss_bytes",
    "rss_per_camera_bytes",
    "idle_rss_per_camera_bytes",
}


@pytest.mark.slow
@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_a_small_fleet_connects_reports_records_and_uploads(
    tmp_path: Path, mosquitto: PrivateBroker
) -> None:
    """40 cameras in 2 workers for 24 s: all connected, telemetry from each, 2 scheduled
    recordings and 1 commanded one verified at the receiver and deleted on their cameras."""
    data = tmp_path / "fleet"
    config = FleetConfig(count=COUNT, workers=WORKERS, data_dir=data, duration_s=DURATION_S)
    scheduled = {config.device_id(i) for i in recording_set(config)}
    commanded = next(config.device_id(i) for i in range(COUNT) if i not in recording_set(config))
    topics = ["bwc/v1/dev/+/telemetry", f"bwc/v1/dev/{commanded}/event"]
    async with subscriber(mosquitto.host, mosquitto.port, topics) as backend:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "sim.cli", "fleet", "--count", str(COUNT), "--workers", str(WORKERS)),
            *("--duration", str(DURATION_S), "--telemetry-interval", "2"),
            *("--broker", mosquitto.url, "--receiver", "embedded", "--data-dir", str(data)),
            "--json",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=child_env(),
        )
        telemetry = f"bwc/v1/dev/{commanded}/telemetry"
        # Its second telemetry: it has buffered for 2 s, which the lazy feed must deliver.
        await wait_until(
            lambda: len(backend.on(telemetry)) >= 2, timeout_s=WAIT_S, what="its telemetry"
        )
        await backend.publish(f"bwc/v1/dev/{commanded}/cmd", command("activate", "f-1"))
        started = await backend.wait(
            f"bwc/v1/dev/{commanded}/event", "activation", type="activation"
        )
        assert started["delivered_pre_roll_s"] >= 1.0, started
        await backend.publish(
            f"bwc/v1/dev/{commanded}/cmd", command("deactivate", "f-2", reason="test over")
        )
        async with asyncio.timeout(DURATION_S + 60):
            out, err = await process.communicate()
    assert process.returncode == 0, err.decode(errors="replace")
    result = json.loads(out)
    assert set(result) >= SUMMARY_KEYS
    assert result["errors"] == 0, result["error_kinds"]
    assert (result["cameras"], result["workers"], result["connected"]) == (COUNT, WORKERS, COUNT)
    assert result["recordings"] == len(scheduled) + 1
    assert result["segments_verified"] >= result["recordings"]
    assert result["receiver"]["verified"] == result["segments_verified"]
    assert result["rss_bytes"] > result["baseline_rss_bytes"] > 0
    per_device = Counter(
        topic.split("/")[3] for topic, _ in backend.received if "telemetry" in topic
    )
    assert set(per_device) == {config.device_id(i) for i in range(COUNT)}
    assert min(per_device.values()) >= 5  # every 2 s for 24 s, from each camera
    assert result["telemetry_sent"] >= 5 * COUNT
    store = data / "receiver"
    for device in [*sorted(scheduled), commanded]:
        check_delivered(config.camera_dirs / device, store, device)
    assert verify_receiver_store(store).ok


def check_delivered(data_dir: Path, store: Path, device: str) -> None:
    """Every segment the camera recorded is at the receiver, byte for byte, and off the camera.

    (``check_delivery`` of the connected tests assumes one device per store: recording IDs of
    cameras that start in the same second are equal.)
    """
    recorded = recorded_segments(data_dir)
    assert recorded, f"{device} recorded nothing"
    assert segments_left(data_dir) == [], f"{device} still holds segments"
    assert set(device_receipts(data_dir)) == set(recorded)
    stored = store / "devices" / device / "recordings"
    for (recording, index), segment in recorded.items():
        assert sha256_of(stored / recording / segment_name(index)) == segment.sha256


def command(kind: str, command_id: str, **fields: object) -> bytes:
    """A JSON command from dispatch."""
    body = {"v": 1, "type": kind, "ts": "2026-11-29T14:00:00Z", "id": command_id}
    return json.dumps({**body, "sender": "dispatch", **fields}).encode()
