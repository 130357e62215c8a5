"""The policy engine's decisions, as pure functions of the request, the rules and the situation.

The camera asks; these answer with a ``Verdict`` (what to do and why, in words that go to the
audit log verbatim). Nothing here changes state or writes anything, so every rule can be tested
on its own and a property test can check that no sequence of requests gets past them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from device.rules import PolicyRules
from device.triggers import Origin, TriggerEvent, TriggerLevels, origin_of


class Act(Enum):
    """What the camera does with a request."""

    START = "start"  # start a recording
    NOTE = "note"  # already recording: the trigger is noted in the audit log
    IGNORE = "ignore"  # nothing, for the stated reason
    STOP = "stop"  # stop the recording
    CANCEL = "cancel"  # stop within the start trigger's cancel window
    CONFIRM = "confirm"  # the stop waits for a confirming press
    REFUSE = "refuse"  # the stop is not allowed


@dataclass(frozen=True, slots=True)
class Verdict:
    """A decision and its reason."""

    act: Act
    reason: str


@dataclass(frozen=True, slots=True)
class RecordingContext:
    """What the stop rules need to know about the recording in progress.

    ``group_master`` is the peer camera whose broadcast started a group recording (None when this
    camera started it).
    """

    start: TriggerEvent
    started_at: float
    group_master: str | None = None

    @property
    def origin(self) -> Origin:
        """Who or what started it."""
        return origin_of(self.start.kind)


class StopSource(Enum):
    """Who asks to stop."""

    BUTTON = "button"  # the officer, holding Event
    REMOTE = "remote"  # a command from dispatch or the backend
    PEER = "peer"  # a group master's stop broadcast


@dataclass(frozen=True, slots=True)
class StopRequest:
    """A request to stop: who asks, the reason stated, and for a peer stop, which peer."""

    source: StopSource
    reason: str | None = None
    peer: str | None = None


def decide_trigger(
    event: TriggerEvent,
    rules: PolicyRules,
    levels: TriggerLevels,
    now: float,
    *,
    sleeping: bool,
    recording: bool,
) -> Verdict:
    """Whether a trigger (asserted) starts a recording, is noted, or is ignored, and why."""
    rule = rules.rule(event.kind)
    if sleeping:
        return Verdict(Act.IGNORE, "sleep mode: triggers are ignored")
    if not rule.enabled:
        return Verdict(Act.IGNORE, f"trigger {event.kind} is disabled by policy")
    since = levels.seconds_since_fired(event, now)
    if since is not None and since < rule.debounce_s:
        return Verdict(
            Act.IGNORE,
            f"debounce: {event.label} fired {since:.3f} s ago (debounce_s {rule.debounce_s:g})",
        )
    if event.kind == "peer":
        refusal = _peer_refusal(event, rules)
        if refusal is not None:
            return Verdict(Act.IGNORE, refusal)
    if recording:
        return Verdict(Act.NOTE, "already recording: trigger noted")
    return Verdict(Act.START, "recording started")


def _peer_refusal(event: TriggerEvent, rules: PolicyRules) -> str | None:
    if not event.group_master:
        return f"{event.peer} is not a group master: only a master's broadcast starts a recording"
    if event.distance_m is not None and event.distance_m > rules.peer.range_m:
        return (
            f"peer {event.peer} is out of range "
            f"({event.distance_m:.1f} m > range_m {rules.peer.range_m:g})"
        )
    return None


def decide_stop(
    request: StopRequest,
    context: RecordingContext,
    rules: PolicyRules,
    levels: TriggerLevels,
    now: float,
    *,
    confirmed: bool = False,
) -> Verdict:
    """Whether a stop request is carried out, cancels, waits for confirmation, or is refused."""
    start_rule = rules.rule(context.start.kind)
    age = now - context.started_at
    if request.source is StopSource.PEER:
        return _peer_stop(request, context)
    if context.group_master is not None and not rules.stop.members_may_stop_group:
        return Verdict(
            Act.REFUSE,
            f"only the group master ({context.group_master}) stops a group recording",
        )
    if request.source is StopSource.REMOTE:
        return _remote_stop(context, rules, levels)
    if start_rule.cancel_window_s > 0 and age <= start_rule.cancel_window_s:
        return Verdict(
            Act.CANCEL,
            f"cancelled {age:.1f} s after a {context.start.kind} activation "
            f"(cancel window {start_rule.cancel_window_s:g} s): back to buffering",
        )
    if start_rule.confirm_stop and not confirmed:
        window = rules.stop.confirm_window_s
        return Verdict(
            Act.CONFIRM,
            f"started by {context.start.kind}: press within {window:g} s to confirm the stop",
        )
    return Verdict(Act.STOP, "recording stopped" + _reason_note(request, rules))


def _peer_stop(request: StopRequest, context: RecordingContext) -> Verdict:
    if context.group_master is None:
        return Verdict(Act.REFUSE, "not a group recording: a peer cannot stop it")
    if request.peer != context.group_master:
        return Verdict(
            Act.REFUSE,
            f"only the group master ({context.group_master}) stops a group recording, "
            f"not {request.peer}",
        )
    return Verdict(Act.STOP, f"the group master {request.peer} stopped the group recording")


def _remote_stop(context: RecordingContext, rules: PolicyRules, levels: TriggerLevels) -> Verdict:
    if not rules.stop.remote_may_stop_local:
        if context.origin is Origin.MANUAL:
            return Verdict(
                Act.REFUSE, "a remote command may not stop a recording started on the camera"
            )
        start = context.start
        if levels.is_asserted(start.kind, start.name):
            return Verdict(
                Act.REFUSE,
                f"a remote command may not stop a recording while {start.label} is still active",
            )
    return Verdict(Act.STOP, "recording stopped by remote command")


def _reason_note(request: StopRequest, rules: PolicyRules) -> str:
    if request.reason is None and rules.stop.reason_required:
        return " without a stated reason (policy requires one)"
    return ""
