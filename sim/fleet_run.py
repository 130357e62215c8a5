"""Runs a fleet scenario in virtual time: N cameras on one clock, and their group's broadcasts.

Each camera is a ``ScenarioRun`` of its own single-camera scenario (``Scenario.camera_scenarios``)
with its own data directory, ``OUT/<camera id>/``. The fleet steps from one instant to the next at
which any camera has something due (a timeline entry, a sensor input, a camera deadline), in time
order, and advances only the cameras due then: an idle camera is not fed media it would only
skip. After a step, what the cameras broadcast to their group (``outbox.group``) is encoded as on
the wire and applied to every other member with ``device.peers.apply_peer_message``, as the
connected daemon does, at the same virtual instant: a receiver the message starts is first
advanced to that instant, so its pre-event buffer is current when the peer starts it (one that
only buffers and ignores the message is filled later, exactly as it would have been). The same
file and seed give the same data directories and report, byte for byte.

Media is fed lazily (``fleet_feed``, as the real-time fleet does): a camera that only buffers
makes no packet until something may read its buffer (its own step, or a broadcast it acts on:
``ScenarioRun.settle``), and forgets the buffer again once nothing is due for a few seconds, so
memory follows the cameras recording at once, not the fleet's size. Every camera's payload filler
comes from one block (``FeedOptions.filler_seed``, derived from ``device.seed``). An eager feed
with the same filler (``FeedOptions(filler_seed=...)``) gives the same directories and report.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from device.camera import Camera, CameraState
from device.decide import Act, decide_trigger
from device.errors import ConfigError
from device.peers import apply_peer_message, distance_m, peer_trigger
from protocol.messages import AnyPeerMessage, PeerActivation, encode_message
from sim.feed import FeedOptions
from sim.fleet_spec import Position
from sim.media import derive_seed
from sim.runner import ScenarioRun
from sim.scenario import Scenario

Progress = Callable[[float, float], None]
"""Called with (virtual seconds done, virtual seconds in all)."""

POST_EVENT_STEP_S: Final = 0.1
"""While a member's post-event buffer runs, the fleet looks at it this often (virtual s).

A stop that ends a post-event buffer happens while media is fed, not at a deadline the fleet can
see coming; the group hears of it at the fleet's next step.
"""

MEDIA_BATCH_S: Final = 0.5
"""How often (virtual s) a recording camera is fed, and a group's recording member looked at.

A stop forced while it records (full storage) reaches the group at most this much later.
"""

FORGET_AFTER_S: Final = 5.0
"""A camera that only buffers forgets its buffer when nothing is due for this long (virtual s)."""

_MAX_ROUNDS: Final = 100
"""Broadcasts answering broadcasts at one instant (none do today): a bound, not a limit."""

MessageKind = Literal["peer_activation", "peer_deactivation"]


def fleet_feed(scenario: Scenario) -> FeedOptions:
    """How a fleet feeds its cameras: lazily, every payload's filler from one shared block."""
    filler = derive_seed(scenario.device.seed, "fleet", "payload-filler")
    return FeedOptions(
        lazy=True, batch_s=MEDIA_BATCH_S, filler_seed=filler, forget_after_s=FORGET_AFTER_S
    )


@dataclass(frozen=True, slots=True)
class Broadcast:
    """One message a camera sent its group: when, what, for which of its recordings."""

    at_s: float
    camera: str
    message: MessageKind
    recording: str
    reason: str | None
    position: Position | None


@dataclass(frozen=True, slots=True)
class Delivery:
    """One broadcast reaching one member; ``delivered`` False when that camera was off.

    ``distance_m`` is what the receiver computes from the two positions (None when either is
    unknown, or for a deactivation, which carries no position).
    """

    at_s: float
    sender: str
    receiver: str
    message: MessageKind
    recording: str
    distance_m: float | None
    delivered: bool


class FleetRun:
    """The cameras of a fleet scenario, played together in virtual time."""

    def __init__(
        self,
        scenario: Scenario,
        out: Path,
        *,
        post_event_step_s: float = POST_EVENT_STEP_S,
        feed: FeedOptions | None = None,
    ) -> None:
        """``feed``: how media is fed (default ``fleet_feed``); an eager one is for comparison."""
        if scenario.fleet is None:
            raise ConfigError(f"{scenario.source} has no [fleet] table: run it with ScenarioRun")
        if not 0 < post_event_step_s <= 60:
            raise ConfigError(f"post_event_step_s must be in (0, 60], got {post_event_step_s}")
        _require_empty(out)
        self.scenario = scenario
        self.fleet = scenario.fleet
        self.out = out
        self.feed = feed if feed is not None else fleet_feed(scenario)
        self.runs = tuple(
            ScenarioRun(single, out / single.device.id, feed=self.feed)
            for single in scenario.camera_scenarios()
        )
        self.broadcasts: list[Broadcast] = []
        self.deliveries: list[Delivery] = []
        self.now = 0.0
        self._step_s = post_event_step_s
        self._members = range(len(self.runs)) if self.fleet.group is not None else range(0)
        self._at = [0.0] * len(self.runs)
        self._cameras: list[Camera] = [run.camera for run in self.runs]
        self._due: list[float | None] = [None] * len(self.runs)
        self._heap: list[tuple[float, int]] = []
        self._touched: set[int] = set()
        for run, camera in zip(self.runs, self.fleet.cameras, strict=True):
            run.camera.position = camera.position
        for index in range(len(self.runs)):
            self._schedule(index)

    @property
    def ids(self) -> tuple[str, ...]:
        """The cameras' IDs, in file order (``runs`` is in the same order)."""
        return self.fleet.ids

    def run(self, progress: Progress | None = None) -> None:
        """Play the whole scenario, then switch every camera off cleanly."""
        duration = self.scenario.duration_s
        while (at := self.next_time()) is not None and at <= duration:
            self._step(at)
            if progress is not None:
                progress(at, duration)
        self.finish()
        if progress is not None:
            progress(duration, duration)

    def next_time(self) -> float | None:
        """When any camera has something due next (None: nothing, ever)."""
        heap = self._heap
        while heap and self._due[heap[0][1]] != heap[0][0]:
            heapq.heappop(heap)  # superseded when that camera was rescheduled
        return heap[0][0] if heap else None

    def advance_to(self, until: float) -> None:
        """Play every step due up to ``until`` (at most the scenario's end), routing broadcasts."""
        end = min(until, self.scenario.duration_s)
        while (at := self.next_time()) is not None and at <= end:
            self._step(at)

    def finish(self) -> None:
        """Play to the end and switch every camera off ("scenario ended").

        What the cameras broadcast as they are switched off at the end is not routed: the
        scenario is over for all of them at once.
        """
        self.advance_to(self.scenario.duration_s)
        for run in self.runs:
            run.finish()

    def _step(self, at: float) -> None:
        self.now = at
        due: set[int] = set()
        while self._heap and self._heap[0][0] <= at:
            when, index = heapq.heappop(self._heap)
            if self._due[index] == when:
                due.add(index)
        for index in sorted(due):
            self._advance(index, at)
        self._route(at)

    def _advance(self, index: int, at: float, *, settle: bool = False) -> None:
        """Play camera ``index`` to ``at``; ``settle``: and fill its pre-event buffer up to it."""
        run = self.runs[index]
        if settle:
            run.settle(at)
        else:
            run.advance_to(at)
        self._at[index] = at
        if run.camera is not self._cameras[index]:
            # A power loss booted a new camera object on the same storage: it keeps its GPS fix.
            run.camera.position = self._cameras[index].position
            self._cameras[index] = run.camera
        self._touched.add(index)
        self._schedule(index)

    def _schedule(self, index: int) -> None:
        run = self.runs[index]
        due = run.next_time()
        look_s = self._look_s(run.camera.state) if self._members else None
        if look_s is not None:
            look = self._at[index] + look_s
            due = look if due is None else min(due, look)
        if due is not None:
            due = max(due, self.now)
            heapq.heappush(self._heap, (due, index))
        self._due[index] = due

    def _look_s(self, state: CameraState) -> float | None:
        """How soon a group's member in ``state`` is looked at again, for a stop made as it is fed.

        A lazy feed wakes a recording camera every ``batch_s`` anyway; an eager one is looked at as
        often, so that both route such a stop at the same step.
        """
        if state is CameraState.POST_EVENT:
            return self._step_s
        if state is CameraState.RECORDING:
            return self.feed.batch_s
        return None

    def _route(self, at: float) -> None:
        """Hand every member's broadcasts to the other members, until nobody sends any more."""
        for _ in range(_MAX_ROUNDS):
            touched, self._touched = sorted(self._touched), set()
            sent = [
                (index, message)
                for index in touched
                if self._members
                for message in _drain(self.runs[index].camera)
            ]
            if not sent:
                return
            for index, message in sent:
                self._broadcast(index, message, at)
        raise RuntimeError(f"group broadcasts did not settle at t = {at} s")

    def _broadcast(self, sender: int, message: AnyPeerMessage, at: float) -> None:
        payload = encode_message(message)
        activation = isinstance(message, PeerActivation)
        kind: MessageKind = "peer_activation" if activation else "peer_deactivation"
        position = message.position if isinstance(message, PeerActivation) else None
        reason = None if isinstance(message, PeerActivation) else message.reason
        origin = self.ids[sender]
        self.broadcasts.append(Broadcast(at, origin, kind, message.recording, reason, position))
        for receiver in self._members:
            if receiver == sender:
                continue
            camera = self.runs[receiver].camera
            # Lazily fed, a buffering camera may hold no buffer even when it is at ``at``.
            unsettled = self._at[receiver] < at or (
                self.feed.lazy and camera.state is CameraState.BUFFERING
            )
            if unsettled and _must_catch_up(camera, message, at):
                self._advance(receiver, at, settle=True)
                camera, unsettled = self.runs[receiver].camera, False
            state = camera.state
            delivered = state is not CameraState.OFF  # an off camera hears nothing
            if delivered:
                apply_peer_message(camera, payload, at)
                if unsettled and camera.state is not state:
                    raise RuntimeError(f"{camera.device_id} acted on a peer message unforeseen")
                self._touched.add(receiver)
                self._schedule(receiver)
            distance = distance_m(camera.position, position) if activation else None
            self.deliveries.append(
                Delivery(
                    at, origin, self.ids[receiver], kind, message.recording, distance, delivered
                )
            )


def _must_catch_up(camera: Camera, message: AnyPeerMessage, at: float) -> bool:
    """Whether a receiver must be fed its media up to ``at`` (its buffer filled) before the message.

    Feeding an idle camera is most of a large fleet's cost, and only a recording reads the
    pre-event buffer. A camera that only buffers writes nothing while it is fed, so a message it
    does not act on (a stop when it is not recording; an activation it ignores: out of range,
    not from a master, debounced) may reach it first, and its buffer be filled later exactly as
    it would have been (lazily fed, it may hold none at all). Whether it acts is the camera's
    own pure decision (``decide_trigger``, as ``apply_peer_message`` asks it); a camera in any
    other state always catches up.
    """
    if camera.state is not CameraState.BUFFERING:
        return True
    if not isinstance(message, PeerActivation):
        return False
    event = peer_trigger(message, camera.position)
    verdict = decide_trigger(
        event, camera.rules, camera.levels, at, sleeping=False, recording=False
    )
    return verdict.act is Act.START


def _drain(camera: Camera) -> list[AnyPeerMessage]:
    messages = list(camera.outbox.group)
    camera.outbox.group.clear()
    return messages


def _require_empty(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise ConfigError(
            f"output directory {out} is not empty: a fleet scenario writes a fresh device store "
            "per camera; pick a new directory or remove it"
        )
    out.mkdir(parents=True, exist_ok=True)
