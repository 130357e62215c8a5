"""A child process for the camera kill test: a whole camera recording to disk until it is killed.

``python -m tests.killchild DIR --boot N`` opens (or creates) the device data directory DIR, powers
the camera on, which recovers whatever the previous run left open, buffers a few seconds, starts a
recording and records forever in virtual time (as fast as the disk allows), fsyncing the open
segment every ``SYNC_INTERVAL_S`` of media. ``--finish`` powers on (recovering) and powers off
cleanly instead, then exits 0. ``N`` numbers the boot; it seeds that boot's media, so the parent
can check every packet's bytes.

Output, one line each, flushed at once (paths relative to DIR):

    recovered <segment path> <records>   a segment found open at power-on, closed from its records
    synced <segment path> <records>      that many records of the open segment are now fsynced

The parent SIGKILLs the child at a moment of its choosing: every record reported as synced must
then be complete in the file, and the next power-on must keep exactly the complete records.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from device.audit import AuditLog, AuditSync
from device.battery import Battery, BatteryConfig
from device.camera import Camera
from device.clock import DeviceClock
from device.identity import DeviceIdentity
from device.policy import Durability, RecordingPolicy
from device.store import ClosedSegment, EvidenceStore
from protocol.common import Trigger
from sim.feed import MediaFeed
from sim.media import AudioProfile, MediaSource, VideoProfile, derive_seed

DEVICE_ID: Final = "cam-kill"
KEY_SEED: Final = 7
AUDIT_FILE: Final = "audit.log"
SYNC_INTERVAL_S: Final = 0.25
STEP_S: Final = 0.05
BUFFER_S: Final = 3.0
"""Media buffered before the recording starts, so every recording has pre-roll."""

# Small packets at a low rate: the test pays for fsyncs, not for bytes.
VIDEO: Final = VideoProfile(resolution="360p", fps=30.0, bitrate_bps=240_000, gop_frames=15)
AUDIO: Final = AudioProfile(bitrate_bps=16_000)
POLICY: Final = RecordingPolicy(
    pre_event_s=2.0,
    segment_s=5.0,
    storage_bytes=2**40,
    storage_reserve_bytes=0,
    durability=Durability.RECORD,
    sync_interval_s=SYNC_INTERVAL_S,
)
EPOCH: Final = datetime(2026, 11, 29, 14, 0, tzinfo=UTC)
TRIGGER: Final = Trigger(kind="button", source="button:event")


def media_seed(boot: int) -> int:
    """The media seed of boot ``boot``: every boot records different bytes."""
    return derive_seed(KEY_SEED, "kill-test-boot", boot)


def boot_camera(root: Path, boot: int) -> tuple[Camera, MediaFeed, list[ClosedSegment]]:
    """Open the device in ``root`` and power it on; returns the segments recovered on the way."""
    identity = DeviceIdentity.load_or_create(root, DEVICE_ID, seed=KEY_SEED)
    clock = DeviceClock(EPOCH + timedelta(hours=boot), 0.0, "manual")
    audit = AuditLog.open(
        root / AUDIT_FILE,
        DEVICE_ID,
        utc=clock.utc(0.0),
        mono_s=0.0,
        signer=identity.key,
        sync=AuditSync.EVERY_APPEND,
        checkpoint_every=100,
    )
    store = EvidenceStore(root, identity, durable=True, sync_interval_s=SYNC_INTERVAL_S)
    camera = Camera(
        device_id=DEVICE_ID,
        policy=POLICY,
        battery=Battery(BatteryConfig(), 0.0),
        store=store,
        audit=audit,
        clock=clock,
        now=0.0,
    )
    media = MediaSource(media_seed(boot), DEVICE_ID, VIDEO, AUDIO)
    try:
        recovered = camera.power_on(0.0, media)
    except BaseException:
        audit.close()
        raise
    return camera, MediaFeed(camera, media, 0.0), recovered


def open_segment_progress(camera: Camera) -> tuple[Path, int] | None:
    """The open segment's file and how many of its records are fsynced; None if not recording."""
    recording = camera.recording
    return None if recording is None else recording.durable_position()


def start_recording(camera: Camera, feed: MediaFeed) -> None:
    """Buffer ``BUFFER_S`` of media, then start a recording (with pre-roll)."""
    feed.advance(BUFFER_S)
    decision = camera.activate(TRIGGER, BUFFER_S)
    if not decision.accepted:
        raise RuntimeError(f"the camera refused to record: {decision.reason}")


def record_forever(root: Path, camera: Camera, feed: MediaFeed) -> None:
    """Start recording, then feed media forever, reporting each new fsynced count."""
    start_recording(camera, feed)
    reported: tuple[Path, int] | None = None
    step = 0
    while True:
        step += 1
        feed.advance(BUFFER_S + step * STEP_S)
        progress = open_segment_progress(camera)
        if progress is not None and progress != reported:
            reported = progress
            path, synced = progress
            print(f"synced {path.relative_to(root)} {synced}", flush=True)


def finish(camera: Camera) -> None:
    """Power off cleanly and close the audit log."""
    camera.power_off(0.0, "kill test finished")
    camera.audit.close()


def main(argv: Sequence[str]) -> int:
    """Run the child; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m tests.killchild")
    parser.add_argument("dir", type=Path)
    parser.add_argument("--boot", type=int, required=True)
    parser.add_argument("--finish", action="store_true")
    args = parser.parse_args(argv)
    root: Path = args.dir
    camera, feed, recovered = boot_camera(root, args.boot)
    for segment in recovered:
        print(f"recovered {segment.path.relative_to(root)} {segment.manifest.records}", flush=True)
    if args.finish:
        finish(camera)
        return 0
    record_forever(root, camera, feed)
    return 1  # not reached: the parent kills the child


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
