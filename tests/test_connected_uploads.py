"""The connected camera on a real mosquitto (issue 5): record, upload, verify, delete, and survive
the broker, the receiver or the daemon itself dying mid-upload.

Every test ends with ``check_delivery``: each segment the camera recorded reached the receiver
exactly once, byte for byte, and left the camera only after it was verified. Waits are bounded by
generous timeouts and poll conditions (``wait_until``), never fixed sleeps.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest

from device.uploads import UploadConfig
from sim.broker import PrivateBroker
from tests.connected_support import (
    DEVICE,
    READY_S,
    WAIT_S,
    ReceiverProcess,
    all_delivered,
    broker_settings,
    check_delivery,
    child_env,
    embedded_receiver,
    identity_for,
    json_keys_of,
    keys_of,
    live_camera,
    playing,
    recorded_segments,
    recording,
    scenario,
    scenario_text,
)
from tests.mqtt_support import wait_for, wait_until

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]

CAPPED = UploadConfig(bandwidth_bps=1.6e6)
"""1.6 Mb/s of camera time, 2 MB/s at speed 10: a 2 MB segment takes about a second to send."""


async def test_a_recording_is_uploaded_verified_and_deleted(
    tmp_path: Path, mosquitto: PrivateBroker
) -> None:
    """Trigger, record, upload, verified at the receiver, deleted on the camera."""
    data, store = tmp_path / "cam", tmp_path / "store"
    settings = broker_settings(mosquitto.url)
    # Stopped at the scenario's last instant: the last segment closes as the run ends.
    plan = scenario(recording(1, 12), duration=12)
    async with embedded_receiver(store, settings, identity_for(data)) as receiver:
        live = live_camera(plan, data, settings, speed=10)
        async with playing(live, until_uploaded=True) as (task, _):
            await wait_for(task, timeout_s=WAIT_S, what="scenario played and uploaded")
    recorded = check_delivery(data, store, verifications=keys_of(receiver.receipts))
    assert len(recorded) == 3  # 1 s of pre-roll + 11 s recorded, in 5 s segments
    progress = live.uploads.progress()
    assert progress.verified_segments == 3
    assert progress.queued_segments == progress.rejected_segments == 0
    # The audit log followed, byte for byte, up to the run's end (it closes the log last).
    shipped = (store / "devices" / DEVICE / "audit.log").read_bytes()
    assert shipped == (data / "audit.log").read_bytes()[: len(shipped)]
    assert b'"kind":"segment_uploaded"' in shipped


async def test_uploads_survive_the_broker_killed_mid_upload(
    tmp_path: Path, mosquitto: PrivateBroker
) -> None:
    """SIGKILL of mosquitto while a segment is half sent; restarted on the same port."""
    data, store = tmp_path / "cam", tmp_path / "store"
    settings = broker_settings(mosquitto.url)
    plan = scenario(recording(1, 11), duration=12)
    async with embedded_receiver(store, settings, identity_for(data)) as receiver:
        live = live_camera(plan, data, settings, speed=10, upload=CAPPED)
        async with playing(live, until_uploaded=True) as (task, _):
            await wait_until(
                lambda: live.uploads.progress().current_committed > 0,
                timeout_s=WAIT_S,
                what="an upload under way",
            )
            at_kill = live.uploads.progress()
            await mosquitto.kill()
            await wait_until(
                lambda: not live.link.connected.is_set(), timeout_s=WAIT_S, what="link down"
            )
            await mosquitto.start()
            await wait_for(task, timeout_s=WAIT_S, what="uploads after the broker restart")
        assert live.link.connects >= 2
        assert receiver.service is not None
        assert receiver.service.connections >= 2
    assert 0 < at_kill.current_committed < at_kill.current_size
    check_delivery(data, store, verifications=keys_of(receiver.receipts))


async def test_uploads_survive_the_receiver_killed_mid_upload(
    tmp_path: Path, mosquitto: PrivateBroker
) -> None:
    """SIGKILL of the ``bwc-sim receiver`` process mid-upload; a new one on the same store."""
    data, store = tmp_path / "cam", tmp_path / "store"
    settings = broker_settings(mosquitto.url)
    identity_for(data)
    receiver = ReceiverProcess(store, mosquitto.url, data / "device.json")
    await receiver.start()
    try:
        live = live_camera(scenario(recording(1, 11), duration=12), data, settings, upload=CAPPED)
        async with playing(live, until_uploaded=True) as (task, _):
            await wait_until(
                lambda: live.uploads.progress().current_committed > 0,
                timeout_s=WAIT_S,
                what="an upload under way",
            )
            at_kill = live.uploads.progress()
            await receiver.kill()
            await receiver.start()  # what was sent meanwhile waits in its persistent session
            await wait_for(task, timeout_s=WAIT_S, what="uploads after the receiver restart")
    finally:
        code = await receiver.stop()
    assert code == 0
    assert 0 < at_kill.current_committed < at_kill.current_size
    check_delivery(data, store, verifications=json_keys_of(receiver.receipts))


async def start_camera(url: str, data: Path, log: Path, *args: str) -> asyncio.subprocess.Process:
    """``bwc-sim run --broker URL --data-dir DATA --speed 10 --json ARGS`` as a child process."""
    with log.open("ab") as stderr:  # the child keeps its own copy of the descriptor
        return await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "sim.cli", "run", "--broker", url, "--data-dir", str(data)),
            *("--speed", "10", "--json", *args),
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=child_env(),
        )


def open_segments(data: Path) -> list[Path]:
    """Segment files without a manifest: open when the camera died."""
    files = sorted((data / "recordings").glob("*/*.bwcseg"))
    return [path for path in files if not path.with_suffix(".manifest.json").exists()]


def part_files(store: Path) -> list[Path]:
    """Uploads in progress at the receiver, with bytes committed."""
    return [p for p in (store / "incoming").glob("*.part") if p.stat().st_size > 0]


async def test_a_daemon_killed_mid_upload_uploads_everything_after_a_restart(
    tmp_path: Path, mosquitto: PrivateBroker
) -> None:
    """SIGKILL of ``bwc-sim run`` mid-upload, then a restart on the same data directory."""
    data, store, log = tmp_path / "cam", tmp_path / "store", tmp_path / "camera.log"
    plan = tmp_path / "scenario.toml"
    plan.write_text(scenario_text(recording(1, 25), duration=27), encoding="utf-8")
    settings = broker_settings(mosquitto.url)
    async with embedded_receiver(store, settings, identity_for(data)) as receiver:
        first = await start_camera(
            mosquitto.url, data, log, "--scenario", str(plan), "--bandwidth-mbps", "1.6"
        )
        try:
            await wait_until(
                lambda: (
                    (bool(receiver.receipts) and bool(part_files(store)))
                    or first.returncode is not None
                ),
                timeout_s=WAIT_S,
                what="one segment verified and the next under way",
            )
        finally:
            if first.returncode is None:
                first.send_signal(signal.SIGKILL)
            await wait_for(first.communicate(), timeout_s=READY_S, what="killed camera reaped")
        assert first.returncode == -signal.SIGKILL, log.read_text(encoding="utf-8")
        closed_before = recorded_segments(data)
        open_before = open_segments(data)
        assert not all_delivered(data)
        # Restarted without a scenario: the same camera, idle; it recovers the open segment.
        second = await start_camera(mosquitto.url, data, log)
        try:
            await wait_until(
                lambda: all_delivered(data) or second.returncode is not None,
                timeout_s=WAIT_S,
                what="everything delivered",
            )
            assert second.returncode is None, log.read_text(encoding="utf-8")
        finally:
            if second.returncode is None:
                second.send_signal(signal.SIGTERM)
            out, _ = await wait_for(second.communicate(), timeout_s=READY_S, what="clean exit")
    assert await second.wait() == 0, log.read_text(encoding="utf-8")
    report = json.loads(out)
    assert report["device"] == DEVICE
    assert report["uploads"]["pending"] == report["uploads"]["rejected"] == 0
    final = check_delivery(data, store, verifications=keys_of(receiver.receipts))
    assert set(closed_before) <= set(final)
    recovered = [key for key, segment in final.items() if segment.recovered]
    assert len(recovered) == len(open_before)  # the segment open at the kill, if any
