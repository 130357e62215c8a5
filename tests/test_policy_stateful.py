"""Any sequence of triggers, gestures, commands and modes keeps the policy's invariants.

A Hypothesis rule-based machine drives a real camera (real store, real audit log, virtual time)
under a randomly drawn policy and checks, at every step:

- no stop that the rules forbid: a remote stop never ends a recording started on the camera or
  while the level trigger that started it is asserted (unless the policy allows it); only the
  group master's stop ends a group recording (unless members may stop); a recording whose start
  trigger needs a confirmation never stops on a hold alone, outside its cancel window;
- sleep never records, and no trigger is accepted in sleep mode;
- every recording has its start trigger in the audit log, and the manifests agree.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from device.camera import CameraState
from device.decide import RecordingContext
from device.rules import DEFAULT_TRIGGER_RULES, PolicyRules, StopRules
from device.triggers import CONFIGURABLE_KINDS, LEVEL_KINDS, Origin, TriggerEvent
from protocol.common import Trigger
from protocol.vocabulary import TriggerKind
from tests.camera_rig import BUTTON, Rig
from tests.fuzz import STATEFUL_EXAMPLES

SENSOR_KINDS: list[TriggerKind] = [
    k for k in CONFIGURABLE_KINDS if k not in ("button", "remote", "peer")
]
LEVELS: list[TriggerKind] = sorted(LEVEL_KINDS)
PEERS = ("cam-2", "cam-3")
REASONS = st.one_of(st.none(), st.sampled_from(["scene secure", "false alarm"]))
STEP = st.floats(min_value=0.05, max_value=25.0)


class PolicyMachine(RuleBasedStateMachine):
    """One camera under one drawn policy."""

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="bwc-policy-"))
        self.rig: Rig | None = None
        self.now = 0.0

    @initialize(
        enabled=st.fixed_dictionaries({k: st.booleans() for k in SENSOR_KINDS}),
        remote_may_stop_local=st.booleans(),
        members_may_stop_group=st.booleans(),
        cancel_s=st.sampled_from([0.0, 5.0, 20.0]),
    )
    def boot(
        self,
        enabled: dict[str, bool],
        remote_may_stop_local: bool,
        members_may_stop_group: bool,
        cancel_s: float,
    ) -> None:
        triggers = {
            kind: replace(rule, enabled=enabled.get(kind, rule.enabled))
            for kind, rule in DEFAULT_TRIGGER_RULES.items()
        }
        triggers["gunshot"] = replace(triggers["gunshot"], cancel_window_s=cancel_s)
        self.rules = PolicyRules(
            triggers=triggers,
            stop=StopRules(
                remote_may_stop_local=remote_may_stop_local,
                members_may_stop_group=members_may_stop_group,
            ),
        )
        self.rig = Rig(self.root, rules=self.rules)

    # -- helpers --------------------------------------------------------------------------------

    def advance(self, step: float) -> None:
        assert self.rig is not None
        self.now = round(self.now + step, 6)
        self.rig.at(self.now)

    @property
    def camera(self):  # type: ignore[no-untyped-def]
        assert self.rig is not None
        return self.rig.camera

    def stopped(self, before: CameraState) -> bool:
        return before is CameraState.RECORDING and self.camera.state is not CameraState.RECORDING

    # -- rules ----------------------------------------------------------------------------------

    @rule(step=STEP, kind=st.sampled_from(SENSOR_KINDS))
    def fire(self, step: float, kind: TriggerKind) -> None:
        self.advance(step)
        sleeping = self.camera.state is CameraState.SLEEPING
        decision = self.camera.trigger(TriggerEvent(kind=kind, source="hyp"), self.now)
        if sleeping or not self.rules.rule(kind).enabled:
            assert not decision.accepted, decision

    @rule(step=STEP, kind=st.sampled_from(LEVELS))
    def release(self, step: float, kind: TriggerKind) -> None:
        self.advance(step)
        self.camera.trigger(TriggerEvent(kind=kind, source="hyp", active=False), self.now)

    @rule(step=STEP)
    def double_press(self, step: float) -> None:
        self.advance(step)
        sleeping = self.camera.state is CameraState.SLEEPING
        decision = self.camera.activate(BUTTON, self.now)
        assert not (sleeping and decision.accepted)

    @rule(step=STEP, master=st.sampled_from(PEERS), distance=st.floats(0, 20))
    def peer_activation(self, step: float, master: str, distance: float) -> None:
        self.advance(step)
        event = TriggerEvent(
            kind="peer", source=f"peer:{master}", peer=master, group_master=True,
            distance_m=distance,
        )  # fmt: skip
        decision = self.camera.trigger(event, self.now)
        if distance > self.rules.peer.range_m:
            assert not decision.accepted

    @rule(step=STEP, reason=REASONS)
    def hold(self, step: float, reason: str | None) -> None:
        self.advance(step)
        context, before = self.camera.context, self.camera.state
        self.camera.deactivate(BUTTON, reason, self.now)
        if self.stopped(before):
            assert context is not None
            self.check_local_stop(context, confirmed=False)

    @rule(step=STEP)
    def press(self, step: float) -> None:
        self.advance(step)
        context, before = self.camera.context, self.camera.state
        pending = self.camera.timers.get("confirm_stop")
        self.camera.press("button:event", None, self.now)
        if self.stopped(before):
            assert context is not None
            assert pending is not None, "a press stopped unasked"
            assert self.now <= pending, "a press after the confirmation window stopped"
            self.check_local_stop(context, confirmed=True)

    @rule(step=STEP, reason=st.sampled_from(["dispatch: clear", "supervisor"]))
    def remote_stop(self, step: float, reason: str) -> None:
        self.advance(step)
        context, before = self.camera.context, self.camera.state
        start = context.start if (context := self.camera.context) is not None else None
        start_asserted = start is not None and self.camera.levels.is_asserted(
            start.kind, start.name
        )
        decision = self.camera.deactivate(
            Trigger(kind="remote", source="mqtt:dispatch"), reason, self.now
        )
        if self.stopped(before) or (before is CameraState.RECORDING and decision.accepted):
            assert context is not None
            if not self.rules.stop.remote_may_stop_local:
                assert context.origin is not Origin.MANUAL
                assert not start_asserted, start
            assert context.group_master is None or self.rules.stop.members_may_stop_group

    @rule(step=STEP, sender=st.sampled_from(PEERS), reason=REASONS)
    def peer_stop(self, step: float, sender: str, reason: str | None) -> None:
        self.advance(step)
        context, before = self.camera.context, self.camera.state
        decision = self.camera.deactivate(
            Trigger(kind="peer", source=f"peer:{sender}"), reason, self.now
        )
        if before is CameraState.RECORDING and decision.accepted:
            assert context is not None
            assert context.group_master == sender

    @rule(step=STEP, mode=st.sampled_from(["sleep", "mute", "stealth"]), on=st.booleans())
    def mode(self, step: float, mode: str, on: bool) -> None:
        self.advance(step)
        self.camera.set_mode(mode, self.now, enabled=on, source="button")  # type: ignore[arg-type]

    @rule(step=st.floats(min_value=1.0, max_value=300.0))
    def wait(self, step: float) -> None:
        self.advance(step)

    def check_local_stop(self, context: RecordingContext, *, confirmed: bool) -> None:
        if context.group_master is not None:
            assert self.rules.stop.members_may_stop_group, "a member stopped a group recording"
        rule = self.rules.rule(context.start.kind)
        in_window = self.now - context.started_at <= rule.cancel_window_s
        if rule.confirm_stop and not in_window:
            assert confirmed, f"{context.start.kind} recording stopped without confirmation"

    # -- invariants -----------------------------------------------------------------------------

    @invariant()
    def sleep_never_records(self) -> None:
        if self.rig is None:
            return
        if self.camera.state is CameraState.SLEEPING:
            assert self.camera.recording is None
            assert len(self.camera.buffer) == 0

    def teardown(self) -> None:
        try:
            if self.rig is not None:
                self.camera.power_off(self.now + 1.0)
                self.check_every_recording_has_its_start_trigger()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def check_every_recording_has_its_start_trigger(self) -> None:
        assert self.rig is not None
        lines = (self.root / "audit.log").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        starts = {
            r["recording"]: r["trigger"]
            for r in records
            if r["kind"] == "trigger" and r.get("act") == "start"
        }
        started = [r for r in records if r["kind"] == "recording_started"]
        for record in started:
            assert starts.get(record["recording"]) == record["trigger"], record
        for segment in self.rig.store.closed_segments():
            manifest = segment.manifest
            assert starts.get(manifest.recording) == manifest.start_trigger, manifest


PolicyMachine.TestCase.settings = settings(
    max_examples=min(STATEFUL_EXAMPLES, 300), stateful_step_count=25, deadline=None
)
# A passing CI run records for up to about two minutes of CPU (how much depends on the examples
# drawn: one run fed 1.9 million packets, another 2.2), near the default 120 s timeout on a busy
# machine; like the recorder's model test, it gets room to finish and to shrink a failure.
TestPolicyInvariants = pytest.mark.timeout(400)(PolicyMachine.TestCase)
