"""The camera state machine: one focused test per rule (the stateful test covers combinations)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from device.battery import BatteryConfig
from device.camera import TRANSITIONS, CameraState
from device.recording import ActiveRecording
from protocol.errors import LocalProtocolError
from protocol.messages import decode_message, encode_message
from tests.camera_rig import BUTTON, POLICY, VIDEO, Rig


def test_every_state_pair_is_a_legal_move_or_refused(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    for source in CameraState:
        for target in CameraState:
            rig.camera.state = source
            if target in TRANSITIONS[source]:
                rig.camera._move(target, 1.0, "test")
                assert rig.camera.state is target
            else:
                with pytest.raises(LocalProtocolError, match="cannot go from"):
                    rig.camera._move(target, 1.0, "test")


def _pending(recording: ActiveRecording) -> bool:
    """Whether the pre-roll waits (a call, so that mypy does not narrow it across steps)."""
    return recording.pre_roll_pending


def test_recording_starts_with_the_pre_roll_on_a_keyframe(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    assert rig.at(20.0).activate(BUTTON, 20.0).accepted
    recording = rig.camera.recording
    assert recording is not None
    assert recording.start.delivered_pre_roll_s >= 5.0
    # Recording (and shown: the start signal is out) before the bulk write, which comes next.
    assert rig.camera.state is CameraState.RECORDING
    assert recording.pre_roll_pending
    assert recording.totals.packets == 0
    rig.camera.write_pre_roll(20.0)
    assert not _pending(recording)
    assert recording.totals.first_video_keyframe is True
    assert rig.at(45.0).deactivate(BUTTON, "done", 45.0).accepted
    segments = rig.camera.finished[0].totals.segments
    assert len(segments) >= 3  # 30 s of recording in 10 s segments
    assert segments[-1].manifest.stop_reason == "done"
    assert all(seg.manifest.stop_trigger is None for seg in segments[:-1])


@pytest.mark.parametrize("then", ["packet", "marker", "stop"])
def test_the_deferred_pre_roll_is_written_before_anything_that_follows_it(
    tmp_path: Path, then: str
) -> None:
    """The start is shown first; the pre-roll goes into the recording before the next live
    packet, marker or stop, so the recording still begins with the buffer, on a keyframe."""
    rig = Rig(tmp_path)
    camera = rig.at(20.0)
    assert camera.activate(BUTTON, 20.0).accepted
    recording = camera.recording
    assert recording is not None
    assert recording.pre_roll_pending
    assert [i.signal.value for i in camera.indicator.drain()] == ["recording_started"]
    with pytest.raises(LocalProtocolError, match="pre-roll"):
        recording.mark(b"{}")
    if then == "packet":
        rig.at(20.1)
    elif then == "marker":
        assert camera.marker("button:event", None, 20.0).accepted
    else:
        assert camera.deactivate(BUTTON, "done", 20.0).accepted
    assert not _pending(recording)
    assert recording.totals.first_video_keyframe is True
    assert recording.totals.packets >= 5 * VIDEO.fps
    kinds = rig.audit_kinds()
    assert kinds.index("state") < kinds.index("recording_started")


def test_sleep_refuses_triggers_and_keeps_no_buffer(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    assert rig.at(10.0).sleep(10.0).accepted
    decision = rig.at(20.0).activate(BUTTON, 20.0)
    assert not decision.accepted
    assert "sleep" in decision.reason
    assert len(rig.camera.buffer) == 0
    assert rig.camera.wake(21.0).accepted
    assert rig.at(22.0).activate(BUTTON, 22.0).accepted
    recording = rig.camera.recording
    assert recording is not None
    assert recording.start.delivered_pre_roll_s <= 1.0 + VIDEO.gop_duration_s
    assert "trigger" in rig.audit_kinds()


def test_a_stop_while_not_recording_is_refused_and_audited(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    decision = rig.at(5.0).deactivate(BUTTON, None, 5.0)
    assert (decision.accepted, decision.reason) == (False, "not recording")
    assert rig.audit_kinds().count("trigger") == 1


def test_post_event_buffer_keeps_recording_after_the_stop(tmp_path: Path) -> None:
    rig = Rig(tmp_path, replace(POLICY, post_event_s=4.0))
    rig.at(10.0).activate(BUTTON, 10.0)
    rig.at(20.0).deactivate(BUTTON, "scene secure", 20.0)
    assert rig.camera.state is CameraState.POST_EVENT
    assert rig.at(30.0).state is CameraState.BUFFERING
    last = rig.camera.finished[0].totals.segments[-1].manifest
    assert last.stop_reason == "scene secure"
    assert 23.9 <= last.stop_monotonic_s <= 24.1


def test_a_long_recording_continues_in_a_new_one_without_a_gap(tmp_path: Path) -> None:
    rig = Rig(tmp_path, replace(POLICY, max_recording_s=60.0, segment_s=30.0))
    rig.at(10.0).activate(BUTTON, 10.0)
    rig.at(150.0).deactivate(BUTTON, "done", 150.0)
    first, second, third = rig.camera.finished
    assert first.totals.segments[-1].manifest.stop_trigger == "policy"
    assert second.start.trigger.source == "max_duration"
    assert second.start.requested_pre_roll_s == 0.0
    stop = first.totals.segments[-1].manifest.stop_monotonic_s
    start = second.totals.segments[0].manifest.start_monotonic_s
    assert start == pytest.approx(stop, abs=1e-6)
    assert third.totals.segments[-1].manifest.stop_reason == "done"


def test_storage_full_stops_the_recording_and_refuses_new_ones(tmp_path: Path) -> None:
    policy = replace(POLICY, storage_bytes=3_000_000, storage_reserve_bytes=500_000)
    rig = Rig(tmp_path, policy)
    rig.at(5.0).activate(BUTTON, 5.0)
    rig.at(200.0)
    assert rig.camera.state is CameraState.BUFFERING
    stopped = rig.camera.finished[0].totals.segments[-1].manifest
    assert (stopped.stop_trigger, stopped.stop_reason) == ("storage", "storage full")
    assert rig.store.used_bytes <= policy.storage_bytes
    decision = rig.camera.activate(BUTTON, 200.0)
    assert (decision.accepted, decision.reason) == (False, "storage full")
    assert "storage_full" in rig.audit_kinds()


def test_an_empty_battery_stops_the_recording_and_powers_off(tmp_path: Path) -> None:
    rig = Rig(tmp_path, battery=BatteryConfig(capacity_h=4.0, start_percent=30.0))
    rig.at(5.0).activate(BUTTON, 5.0)
    rig.at(4000.0)  # 30 % of 4 h at 1.4 times the buffering draw: empty after about 51 min
    assert rig.camera.state is CameraState.OFF
    kinds = rig.audit_kinds()
    assert (
        kinds.index("battery_low") < kinds.index("battery_critical") < kinds.index("battery_empty")
    )
    last = rig.camera.finished[0].totals.segments[-1].manifest
    assert (last.stop_trigger, last.stop_reason) == ("battery", "battery empty")
    assert kinds[-1] == "checkpoint"


def test_categories_reach_the_manifests_closed_after_them(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.at(5.0).activate(BUTTON, 5.0)
    rig.at(12.0).categorize(("traffic stop",), "2026-042", 12.0)
    rig.at(40.0).deactivate(BUTTON, "done", 40.0)
    manifests = [seg.manifest for seg in rig.camera.finished[0].totals.segments]
    assert manifests[-1].categories == ("traffic stop",)
    assert manifests[-1].case_id == "2026-042"
    after = rig.camera.categorize(("arrest",), None, 41.0)
    assert after.accepted
    assert "audit" in after.reason


def test_power_loss_keeps_what_reached_the_last_sync_point(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.at(5.0).activate(BUTTON, 5.0)
    rig.at(8.5)
    recording = rig.camera.recording
    assert recording is not None
    path, synced = recording.durable_position()
    rig.camera.power_loss()
    rig.audit.close()
    again = Rig(tmp_path)
    (recovered,) = [seg for seg in again.store.closed_segments() if seg.path == path]
    assert recovered.manifest.status == "recovered"
    assert recovered.manifest.records == synced


def test_events_for_the_uplink_are_numbered_and_valid(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.at(5.0).activate(BUTTON, 5.0)
    rig.camera.marker("button:event", "suspect", 6.0)
    rig.at(9.0).deactivate(BUTTON, "done", 9.0)
    events = rig.camera.outbox.drain()
    assert [type(event).__name__ for event in events] == ["Activation", "Marker", "Deactivation"]
    assert [event.seq for event in events] == [0, 1, 2]
    assert len({event.id for event in events}) == 3
    for event in events:
        assert decode_message(encode_message(event)) == event
    assert rig.camera.outbox.drain() == []


def test_the_battery_drains_at_the_rate_of_each_state(tmp_path: Path) -> None:
    config = BatteryConfig(capacity_h=10.0)
    rig = Rig(tmp_path, battery=config)
    rig.at(100.0).activate(BUTTON, 100.0)
    rig.at(1900.0).deactivate(BUTTON, "done", 1900.0)
    rig.camera.sleep(1900.0)
    rig.at(5500.0).wake(5500.0)
    rig.camera.handle_timeout(5500.0)
    hour = 100.0 / 10.0  # percent an hour while buffering
    expected = 100.0 - (100 + 1800 * config.recording_draw + 3600 * config.sleep_draw) / 3600 * hour
    assert rig.camera.battery.percent == pytest.approx(expected, abs=1e-6)
