"""The policy engine on a real camera: each trigger kind, each stop rule, each mode, and the audit
records each decision leaves, the ignored and refused ones included."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from device.camera import CameraState
from device.indications import Signal
from device.packets import Stream
from device.recordfile import SegmentReader
from device.recordformat import RecordType
from device.rules import DEFAULT_TRIGGER_RULES, PolicyRules, StopRules, TriggerRule
from device.triggers import CONFIGURABLE_KINDS, LEVEL_KINDS, TriggerEvent
from protocol.common import Trigger
from protocol.messages import PeerActivation, PeerDeactivation, decode_message, encode_message
from protocol.vocabulary import TriggerKind
from tests.camera_rig import BUTTON, Rig

REMOTE = Trigger(kind="remote", source="mqtt:dispatch")
SENSOR_KINDS = [k for k in CONFIGURABLE_KINDS if k not in ("button", "remote", "peer")]


def everything_enabled() -> PolicyRules:
    triggers = {k: replace(r, enabled=True) for k, r in DEFAULT_TRIGGER_RULES.items()}
    return PolicyRules(triggers=triggers)


def sensor(kind: TriggerKind, *, active: bool = True, name: str = "") -> TriggerEvent:
    return TriggerEvent(kind=kind, source=f"test:{kind}", active=active, name=name)


def peer(name: str = "cam-2", *, master: bool = True, distance_m: float = 3.0) -> TriggerEvent:
    return TriggerEvent(
        kind="peer", source=f"peer:{name}", peer=name, group_master=master, distance_m=distance_m
    )


def last_trigger_record(rig: Rig) -> dict[str, Any]:
    return rig.records("trigger")[-1]


# -- starting -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SENSOR_KINDS)
def test_every_sensor_trigger_starts_a_recording_and_says_so(tmp_path: Path, kind: str) -> None:
    rig = Rig(tmp_path, rules=everything_enabled())
    decision = rig.at(8.0).trigger(sensor(kind), 8.0)  # type: ignore[arg-type]
    assert decision.accepted, decision
    assert rig.camera.state is CameraState.RECORDING
    record = last_trigger_record(rig)
    assert record["trigger"] == kind
    assert record["act"] == "start"
    assert record["source"] == f"test:{kind}"
    assert record["recording"] == rig.camera.recording.recording_id  # type: ignore[union-attr]
    started = rig.records("recording_started")[-1]
    assert started["trigger"] == kind
    rig.at(30.0).power_off(30.0)
    segments = rig.store.closed_segments()
    assert {seg.manifest.start_trigger for seg in segments} == {kind}


@pytest.mark.parametrize("kind", ["vehicle_door", "vehicle_speed", "geofence"])
def test_triggers_off_by_default_are_ignored_with_the_reason(tmp_path: Path, kind: str) -> None:
    rig = Rig(tmp_path)
    decision = rig.at(8.0).trigger(sensor(kind), 8.0)  # type: ignore[arg-type]
    assert not decision.accepted
    assert decision.reason == f"trigger {kind} is disabled by policy"
    record = last_trigger_record(rig)
    assert (record["act"], record["accepted"]) == ("ignore", False)
    assert record["decision"] == decision.reason
    assert rig.camera.state is CameraState.BUFFERING


def test_sleep_mode_ignores_every_trigger(tmp_path: Path) -> None:
    rig = Rig(tmp_path, rules=everything_enabled())
    assert rig.at(5.0).sleep(5.0).accepted
    for kind in SENSOR_KINDS:
        decision = rig.at(10.0).trigger(sensor(kind), 10.0)  # type: ignore[arg-type]
        assert decision.reason == "sleep mode: triggers are ignored"
    assert not rig.camera.trigger(peer(), 11.0).accepted
    assert not rig.camera.activate(BUTTON, 12.0).accepted
    assert rig.camera.state is CameraState.SLEEPING
    ignored = [r for r in rig.records("trigger") if r["act"] == "ignore"]
    assert len(ignored) == len(SENSOR_KINDS) + 2


def test_a_repeat_within_the_debounce_time_is_ignored(tmp_path: Path) -> None:
    rig = Rig(tmp_path)  # holster: debounce_s 1.0
    camera = rig.at(10.0)
    assert camera.trigger(sensor("holster"), 10.0).accepted
    assert camera.deactivate(BUTTON, "holstered after a check", 10.2).reason.startswith("started")
    assert camera.press("button:event", None, 10.3).accepted  # confirms the stop
    assert camera.trigger(sensor("holster", active=False), 10.4).accepted
    decision = camera.trigger(sensor("holster"), 10.5)
    assert not decision.accepted
    assert decision.reason == "debounce: holster fired 0.500 s ago (debounce_s 1)"
    assert last_trigger_record(rig)["act"] == "ignore"
    # Chatter keeps it ignored; once quiet for the debounce time it counts again.
    assert not camera.trigger(sensor("holster"), 11.2).accepted
    assert camera.trigger(sensor("holster"), 12.5).accepted


def test_a_trigger_while_recording_is_noted(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    camera = rig.at(8.0)
    assert camera.activate(BUTTON, 8.0).accepted
    decision = camera.trigger(sensor("taser_arc"), 9.0)
    assert (decision.accepted, decision.reason) == (False, "already recording: trigger noted")
    record = last_trigger_record(rig)
    assert record["act"] == "note"
    assert record["recording"] == camera.recording.recording_id  # type: ignore[union-attr]


def test_release_of_a_level_that_was_never_asserted_is_reported(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    decision = rig.at(5.0).trigger(sensor("holster", active=False), 5.0)
    assert not decision.accepted
    assert "not asserted" in decision.reason
    assert last_trigger_record(rig)["request"] == "release"


def test_instant_triggers_cannot_be_released() -> None:
    from device.errors import ConfigError

    for kind in CONFIGURABLE_KINDS:
        if kind not in LEVEL_KINDS and kind != "peer":
            with pytest.raises(ConfigError, match="instant trigger"):
                TriggerEvent(kind=kind, source="x", active=False)


# -- stopping -------------------------------------------------------------------------------------


def test_gunshot_can_be_cancelled_within_its_window(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    camera = rig.at(8.0)
    assert camera.trigger(sensor("gunshot"), 8.0).accepted
    decision = rig.at(20.0).deactivate(BUTTON, None, 20.0)
    assert decision.accepted
    assert decision.reason.startswith("cancelled 12.0 s after a gunshot activation")
    assert camera.state is CameraState.BUFFERING
    assert rig.records("trigger")[-1]["act"] == "cancel"
    rig.at(30.0).power_off(30.0)
    last = list(rig.store.closed_segments())[-1].manifest
    assert last.stop_reason is not None
    assert last.stop_reason.startswith("cancelled")


def test_after_the_cancel_window_a_gunshot_recording_needs_confirmation(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    camera = rig.at(8.0)
    camera.trigger(sensor("gunshot"), 8.0)
    decision = rig.at(40.0).deactivate(BUTTON, "no threat", 40.0)
    assert not decision.accepted
    assert decision.reason == "started by gunshot: press within 5 s to confirm the stop"
    assert camera.state is CameraState.RECORDING
    assert camera.indicator.queue[-1].signal is Signal.CONFIRM_STOP
    confirmed = rig.at(42.0).press("button:event", None, 42.0)
    assert confirmed.accepted
    assert camera.state is CameraState.BUFFERING
    assert rig.records("trigger")[-1]["request"] == "confirm_stop"


def test_an_unconfirmed_stop_lapses_and_the_recording_continues(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    camera = rig.at(8.0)
    camera.trigger(sensor("vehicle_lightbar"), 8.0)
    assert not camera.deactivate(BUTTON, "scene clear", 20.0).accepted
    rig.at(26.0)
    assert camera.state is CameraState.RECORDING
    lapse = rig.records("trigger")[-1]
    assert (lapse["request"], lapse["decision"]) == (
        "confirm_stop",
        "stop not confirmed in time: recording continues",
    )
    # A press now is a marker, not a confirmation.
    assert camera.press("button:event", "late press", 27.0).reason == "marker written"
    assert camera.state is CameraState.RECORDING


def test_remote_may_not_stop_a_recording_started_on_the_camera(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    camera = rig.at(8.0)
    camera.activate(BUTTON, 8.0)
    decision = camera.deactivate(REMOTE, "dispatch: clear", 20.0)
    assert not decision.accepted
    assert decision.reason == "a remote command may not stop a recording started on the camera"
    record = rig.records("trigger")[-1]
    assert (record["request"], record["act"], record["trigger"]) == (
        "deactivate",
        "refuse",
        "remote",
    )
    assert camera.state is CameraState.RECORDING


def test_remote_may_not_stop_while_a_trigger_is_still_active(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    camera = rig.at(8.0)
    camera.trigger(sensor("vehicle_siren"), 8.0)
    decision = camera.deactivate(REMOTE, "dispatch: clear", 20.0)
    assert decision.reason == (
        "a remote command may not stop a recording while vehicle_siren is still active"
    )
    camera.trigger(sensor("vehicle_siren", active=False), 21.0)
    assert camera.deactivate(REMOTE, "dispatch: clear", 22.0).accepted
    assert camera.state is CameraState.BUFFERING


def test_other_levels_asserted_since_do_not_block_a_remote_stop(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    camera = rig.at(8.0)
    camera.trigger(TriggerEvent(kind="remote", source="mqtt:dispatch"), 8.0)
    camera.trigger(sensor("holster"), 9.0)  # noted; the holster stays drawn
    assert camera.deactivate(REMOTE, "dispatch: clear", 20.0).accepted


def test_an_agency_can_let_remote_stop_anything(tmp_path: Path) -> None:
    rig = Rig(tmp_path, rules=PolicyRules(stop=StopRules(remote_may_stop_local=True)))
    camera = rig.at(8.0)
    camera.activate(BUTTON, 8.0)
    assert camera.deactivate(REMOTE, "supervisor: end of call", 20.0).accepted


def test_only_the_group_master_stops_a_group_recording(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    camera = rig.at(8.0)
    assert camera.trigger(peer("cam-2"), 8.0).accepted
    assert camera.context is not None
    assert camera.context.group_master == "cam-2"
    own = camera.deactivate(BUTTON, "leaving", 15.0)
    assert own.reason == "only the group master (cam-2) stops a group recording"
    other = camera.deactivate(Trigger(kind="peer", source="peer:cam-3"), "done", 16.0)
    assert other.reason == "only the group master (cam-2) stops a group recording, not cam-3"
    remote = camera.deactivate(REMOTE, "dispatch", 17.0)
    assert not remote.accepted
    master = camera.deactivate(Trigger(kind="peer", source="peer:cam-2"), "scene clear", 18.0)
    assert master.accepted
    assert camera.state is CameraState.BUFFERING


def test_a_peer_out_of_range_or_not_master_is_ignored(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    camera = rig.at(8.0)
    far = camera.trigger(peer("cam-2", distance_m=40.0), 8.0)
    assert far.reason == "peer cam-2 is out of range (40.0 m > range_m 9.1)"
    member = camera.trigger(peer("cam-3", master=False), 10.0)
    assert member.reason.startswith("cam-3 is not a group master")
    assert camera.state is CameraState.BUFFERING


def test_a_stop_without_a_reason_is_carried_out_and_flagged(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    camera = rig.at(8.0)
    camera.activate(BUTTON, 8.0)
    decision = camera.deactivate(BUTTON, None, 12.0)
    assert decision.accepted
    assert decision.reason == "recording stopped without a stated reason (policy requires one)"
    assert rig.records("trigger")[-1]["stated_reason"] is None


def test_a_disabled_confirmation_rule_stops_at_once(tmp_path: Path) -> None:
    triggers = dict(DEFAULT_TRIGGER_RULES)
    triggers["holster"] = TriggerRule(confirm_stop=False)
    rig = Rig(tmp_path, rules=PolicyRules(triggers=triggers))
    camera = rig.at(8.0)
    camera.trigger(sensor("holster"), 8.0)
    assert camera.deactivate(BUTTON, "done", 12.0).accepted


# -- modes, reminders, categories -----------------------------------------------------------------


def test_mute_keeps_audio_out_of_the_recording(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    camera = rig.at(8.0)
    assert camera.set_mode("mute", 8.0, enabled=True, source="button").accepted
    assert not camera.set_mode("mute", 8.5, enabled=True, source="button").accepted  # already on
    camera.activate(BUTTON, 9.0)
    rig.at(20.0).deactivate(BUTTON, "done", 20.0)
    streams = set()
    for segment in rig.store.closed_segments():
        with SegmentReader(segment.path, with_payload=False) as reader:
            for record in reader:
                if record.info.type is RecordType.MEDIA and record.info.media is not None:
                    streams.add(record.info.media.stream)
    assert streams == {Stream.VIDEO}
    modes = [r for r in rig.records("mode") if r["mode"] == "mute"]
    assert [(r["enabled"], r["accepted"]) for r in modes] == [(True, True), (True, False)]


def test_reminders_every_two_minutes_silent_in_stealth(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    camera = rig.at(8.0)
    camera.activate(BUTTON, 8.0)
    assert camera.set_mode("stealth", 9.0, enabled=True, source="button").accepted
    rig.at(8.0 + 2 * 120 + 1)
    reminders = rig.records("reminder")
    assert [(r["mono_s"], r["silent"]) for r in reminders] == [(128.0, True), (248.0, True)]


def test_sleep_reminders_every_fifteen_minutes(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.at(5.0).sleep(5.0)
    rig.at(5.0 + 3600)
    times = [r["mono_s"] for r in rig.records("reminder")]
    assert times == [905.0, 1805.0, 2705.0, 3605.0]
    assert all(r["signal"] == "sleep_reminder" for r in rig.records("reminder"))


def test_sleep_can_be_forbidden_by_policy(tmp_path: Path) -> None:
    rules = PolicyRules(modes=replace(PolicyRules().modes, sleep_allowed=False))
    rig = Rig(tmp_path, rules=rules)
    decision = rig.at(5.0).set_mode("sleep", 5.0, enabled=True, source="button")
    assert decision.reason == "sleep mode is not allowed by policy"
    assert rig.camera.state is CameraState.BUFFERING


def test_the_category_prompt_times_out_to_the_default(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    camera = rig.at(8.0)
    camera.activate(BUTTON, 8.0)
    camera.deactivate(BUTTON, "done", 12.0)
    assert rig.records("category_prompt")[-1]["timeout_s"] == 8.0
    rig.at(25.0)
    (record,) = rig.records("categorized")
    assert (record["categories"], record["source"], record["mono_s"]) == (
        ["uncategorized"],
        "default",
        20.0,
    )


def test_a_category_in_time_answers_the_prompt(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    camera = rig.at(8.0)
    camera.activate(BUTTON, 8.0)
    camera.deactivate(BUTTON, "done", 12.0)
    camera.categorize(("traffic stop",), None, 15.0)
    rig.at(40.0)
    assert [r["source"] for r in rig.records("categorized")] == ["officer"]


def test_a_critical_category_sets_the_upload_deadline_and_the_manifest_flag(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    camera = rig.at(8.0)
    camera.activate(BUTTON, 8.0)
    camera.categorize(("Use of deadly force",), "case-7", 9.0)
    rig.at(30.0).deactivate(BUTTON, "scene secured", 30.0)
    (record,) = rig.records("critical_incident")
    assert record["upload_deadline_s"] == 3600.0
    assert camera.critical == {camera.finished[-1].recording_id: 9.0 + 3600.0}
    manifests = [seg.manifest for seg in rig.store.closed_segments()]
    assert manifests[-1].critical


def test_the_master_tells_its_group_when_it_starts_and_stops(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    camera = rig.at(8.0)
    camera.position = (39.95, -75.16)
    camera.trigger(sensor("taser_arc"), 8.0)
    rig.at(30.0).deactivate(BUTTON, "scene secure", 30.0)
    rig.at(31.0).press("button:event", None, 31.0)
    start, stop = list(camera.outbox.group)
    assert isinstance(start, PeerActivation)
    assert (start.master, start.position, start.trigger.kind) == (
        True,
        (39.95, -75.16),
        "taser_arc",
    )
    assert isinstance(stop, PeerDeactivation)
    assert (stop.recording, stop.reason) == (start.recording, "scene secure")
    for message in (start, stop):
        assert decode_message(encode_message(message)) == message


def test_a_member_does_not_rebroadcast(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    camera = rig.at(8.0)
    camera.trigger(peer("cam-2"), 8.0)
    camera.deactivate(Trigger(kind="peer", source="peer:cam-2"), "done", 20.0)
    assert not camera.outbox.group


def test_the_segment_open_when_a_critical_category_is_given_is_critical(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    camera = rig.at(8.0)
    camera.activate(BUTTON, 8.0)
    camera.categorize(("death in custody",), None, 9.0)  # segment 0 is open (it began at 3 s)
    rig.at(12.0).deactivate(BUTTON, "done", 12.0)
    assert all(seg.manifest.critical for seg in rig.store.closed_segments())


def test_event_ids_never_repeat_across_boots(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    camera = rig.at(8.0)
    camera.activate(BUTTON, 8.0)
    first = [event.id for event in camera.outbox.drain()]
    camera.power_off(10.0)
    camera.power_on(11.0, rig.media)
    rig.feed.advance(11.0)
    camera.activate(BUTTON, 20.0)
    second = [event.id for event in camera.outbox.drain()]
    assert first
    assert second
    assert not set(first) & set(second)
