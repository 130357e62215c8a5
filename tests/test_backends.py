"""Hardware backends (issue 6): the registry and its plug-ins, the in-memory ``SimBackend``, the
bridge from backend events to the sensor hub, the hardware clock mapping, and the outputs the
camera's indications and state become.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import subprocess
import sys
import tempfile
import textwrap
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.backends import (
    ButtonInput,
    DisplayOutput,
    GpsInput,
    HapticOutput,
    ImuInput,
    LedOutput,
    LineInput,
    LinkDownEvent,
    LinkUpEvent,
    SpeedInput,
    TaserInput,
    ToneOutput,
    available_backends,
    backend_class,
    open_backend,
)
from device.backends.base import HardwareBackend
from device.backends.bridge import MAX_DRIFT, HardwareBridge, HardwareClock
from device.backends.events import CAPABILITIES, BackendEvent, BatteryInput, Output
from device.backends.indication_map import SIGNALS, status_led, status_text
from device.backends.serial_delivery import Delivery, HoldConfig, InputHold
from device.backends.shell import HardwareShell
from device.backends.sim import SimBackend
from device.camera import CameraState
from device.errors import ConfigError, HardwareError
from device.gestures import GestureState
from device.indications import Indication, Signal
from device.rules import PolicyRules
from device.sensorhub import SensorHub
from device.telemetry import merge_counters
from sim.cli import main
from tests.camera_rig import Rig
from tests.mqtt_support import wait_for

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_MODULE = "bwc_fake_bench"

PLUGIN_SOURCE = """
from device.backends import HardwareBackend
from device.errors import HardwareError


class FakeBench(HardwareBackend):
    name = "fakebench"

    def __init__(self, port: str = "", baudrate: int = 115200) -> None:
        self.port = port
        self.baudrate = baudrate

    @property
    def capabilities(self):
        return frozenset({"buttons"})

    async def open(self):
        raise HardwareError(f"{self.port}: no such port; plug the bench in")

    async def close(self):
        pass

    async def events(self):
        return
        yield

    async def output(self, output):
        pass


class NotABackend:
    pass
"""

ENTRY_POINTS = f"""
[bwc_sim.backends]
fakebench = {PLUGIN_MODULE}:FakeBench
notabackend = {PLUGIN_MODULE}:NotABackend
missing = {PLUGIN_MODULE}_gone:Nothing
sim = {PLUGIN_MODULE}:FakeBench
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fake installed distribution declaring backends in the ``bwc_sim.backends`` group."""
    site = tmp_path / "site"
    dist = site / "bwc_fake_bench-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bwc-fake-bench\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    (site / f"{PLUGIN_MODULE}.py").write_text(PLUGIN_SOURCE)
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop(PLUGIN_MODULE, None)


# -- the registry ------------------------------------------------------------------------------


def test_built_in_backends_come_first() -> None:
    assert available_backends()[:2] == ["sim", "serial"]
    assert backend_class("sim") is SimBackend
    assert isinstance(open_backend("sim"), SimBackend)


def test_an_unknown_backend_is_an_error_naming_the_available_ones() -> None:
    with pytest.raises(HardwareError, match=r"no hardware backend named 'nope'; available: sim, "):
        backend_class("nope")


def test_a_plug_in_is_listed_without_being_imported_and_loaded_when_asked(plugin: Path) -> None:
    names = available_backends()
    assert names[:2] == ["sim", "serial"]
    assert {"fakebench", "notabackend", "missing"} <= set(names)
    assert names.count("sim") == 1
    assert PLUGIN_MODULE not in sys.modules, "listing must not import a plug-in"
    backend = open_backend("fakebench", port="/dev/ttyBENCH", baudrate=9600)
    assert PLUGIN_MODULE in sys.modules
    assert backend.name == "fakebench"
    assert backend.capabilities == frozenset({"buttons"})
    # A built-in name wins over a plug-in claiming it.
    assert backend_class("sim") is SimBackend


def test_a_broken_plug_in_is_a_hardware_error(plugin: Path) -> None:
    with pytest.raises(HardwareError, match=r"is not a device\.backends\.HardwareBackend"):
        backend_class("notabackend")
    with pytest.raises(HardwareError, match="cannot be loaded"):
        backend_class("missing")
    with pytest.raises(HardwareError, match="bad options"):
        open_backend("fakebench", colour="blue")


def test_importing_the_device_package_does_not_import_pyserial() -> None:
    code = textwrap.dedent(
        """
        import sys
        import device, device.backends, device.backends.bridge, device.backends.sim
        import device.daemon, sim.live
        from device.backends import available_backends
        available_backends()
        assert "serial" not in sys.modules, sorted(m for m in sys.modules if "serial" in m)
        """
    )
    subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60
    )


def test_run_exits_2_with_the_reason_when_the_hardware_cannot_be_opened(
    plugin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["run", "--backend", "fakebench", "--port", "/dev/ttyBENCH"]
    args += ["--data-dir", str(tmp_path / "cam"), "--broker", "mqtt://127.0.0.1:1"]
    assert main(args) == 2
    assert "/dev/ttyBENCH: no such port; plug the bench in" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend", "nope"], "no hardware backend named 'nope'; available: sim, serial"),
        (["--backend", "serial"], "--backend serial needs --port URL"),
        (["--backend", "serial", "--port", "loop://", "--speed", "2"], "speed must be 1"),
        (["--port", "/dev/ttyUSB0"], "--port and --baud are for hardware backends"),
        (["--backend", "serial", "--port", "loop://", "--baud", "0"], "--baud must be from 50"),
    ],
)
def test_run_refuses_bad_backend_options(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--data-dir", str(tmp_path / "cam"), *args]) == 2
    assert message in capsys.readouterr().err.replace("\n", " ")


# -- the sim backend ---------------------------------------------------------------------------


async def _next(events: Any) -> BackendEvent:
    async with asyncio.timeout(5):
        event: BackendEvent = await anext(events)
    return event


@pytest.mark.asyncio
async def test_sim_backend_links_injects_unplugs_and_replugs() -> None:
    backend = SimBackend()
    await backend.open()
    events = backend.events()
    assert await _next(events) == LinkUpEvent("in-memory simulator", CAPABILITIES)
    press = ButtonInput("event", pressed=True, hw_time_s=1.0)
    backend.inject(press)
    assert await _next(events) == press
    await backend.output(LedOutput(0, (0, 255, 0), "blink_slow"))
    backend.unplug("cable pulled")
    assert await _next(events) == LinkDownEvent("cable pulled")
    backend.inject(ButtonInput("event", pressed=False, hw_time_s=1.1))  # gone: dropped
    red = LedOutput(0, (255, 0, 0), "solid")
    await backend.output(red)
    await backend.output(DisplayOutput("REC"))
    await backend.output(ToneOutput(2000, 0.1, 2))  # sounded into the void
    assert backend.outputs == [LedOutput(0, (0, 255, 0), "blink_slow")]
    assert backend.latest_led(0) == red
    backend.replug(rebooted=True)
    assert await _next(events) == LinkUpEvent("in-memory simulator", CAPABILITIES, rebooted=True)
    # What it was told while gone, shown again; the tone is not.
    assert backend.outputs[1:] == [red, DisplayOutput("REC")]
    assert backend.latest_display() == "REC"
    assert backend.counters() == {"inputs": 1, "dropped": 1, "outputs": 3, "link_downs": 1}
    await backend.close()
    await backend.close()
    with pytest.raises(StopAsyncIteration):
        await _next(events)


@pytest.mark.asyncio
async def test_sim_backend_waits_for_an_output() -> None:
    backend = SimBackend(capabilities={"leds"})
    assert backend.capabilities == frozenset({"leds"})
    waiter = asyncio.create_task(backend.wait_output(lambda o: isinstance(o, HapticOutput)))
    await backend.output(ToneOutput(1000, 0.4))
    await backend.output(HapticOutput(2, 0.4))
    assert await wait_for(waiter, what="haptic output") == HapticOutput(2, 0.4)


def test_sim_backend_refuses_unknown_capabilities() -> None:
    with pytest.raises(ConfigError, match="unknown capabilities"):
        SimBackend(capabilities={"leds", "jetpack"})


# -- the hardware clock ------------------------------------------------------------------------

steps = st.lists(
    st.tuples(
        st.floats(0, 1e5),  # hardware time: anything, in any order
        st.floats(0, 5),  # camera time elapsed since the previous arrival
        st.floats(0, 1),  # how far behind the arrival the caller has advanced the camera
    ),
    min_size=1,
    max_size=60,
)


@given(steps)
def test_camera_times_never_go_back_never_pass_now_never_precede_the_floor(
    arrivals: list[tuple[float, float, float]],
) -> None:
    clock = HardwareClock()
    now, floor, last = 0.0, -math.inf, -math.inf
    for hw_time, elapsed, behind in arrivals:
        now += elapsed
        floor = max(floor, now - behind)
        camera_t = clock.to_camera(hw_time, now, floor=floor)
        assert math.isfinite(camera_t)
        assert floor <= camera_t <= now
        assert camera_t >= last
        last = camera_t


@given(
    st.lists(st.floats(0, 10), min_size=1, max_size=60),  # gaps between inputs (hardware s)
    st.floats(-1e5, 1e5),  # camera clock minus hardware clock
    st.floats(0, 2),  # the smallest transit delay
    st.lists(st.floats(0, 0.5), min_size=60, max_size=60),  # jitter on top of it, per input
    st.sampled_from([0.0, 0.5]),  # no jitter, or up to this much
)
def test_intervals_are_kept_within_the_transit_jitter(
    gaps: list[float], skew: float, transit: float, jitter: list[float], spread: float
) -> None:
    clock = HardwareClock()
    hw_time, arrived, pairs = 1000.0, -math.inf, []
    for gap, extra in zip(gaps, jitter, strict=False):
        hw_time += gap
        delay = transit + extra * (spread / 0.5)
        arrived = max(arrived, hw_time + skew + delay)  # a link delivers in order
        pairs.append((hw_time, clock.to_camera(hw_time, arrived)))
    (hw0, t0) = pairs[0]
    for hw_i, t_i in pairs:
        assert abs((t_i - t0) - (hw_i - hw0)) <= spread + 1e-6 * (1 + abs(skew) + hw_i)


def test_a_late_first_input_does_not_stretch_later_intervals() -> None:
    clock = HardwareClock()
    assert clock.to_camera(10.0, 20.5) == 20.5  # the first frame took 0.5 s longer
    assert clock.to_camera(11.0, 21.0) == 21.0  # a fast one: the estimate follows it
    # Slow again: the hardware's spacing counts, plus the drift allowance (0.5 % of 3 s).
    assert clock.to_camera(14.0, 24.3) == pytest.approx(24.0 + 0.005 * 3)


def test_a_slow_hardware_clock_does_not_leave_inputs_ever_further_behind() -> None:
    clock = HardwareClock()
    lags = []
    for i in range(2000):
        hw_time = i * 1.0
        now = hw_time * 1.001  # the hardware's clock runs 0.1 % slow
        lags.append(now - clock.to_camera(hw_time, now))
    assert max(lags) < 1e-6


def test_a_hardware_clock_that_restarts_unannounced_is_estimated_afresh() -> None:
    clock = HardwareClock()
    assert clock.to_camera(5000.0, 10.0) == 10.0
    assert clock.to_camera(5001.0, 11.0) == 11.0
    assert clock.to_camera(0.5, 12.0) == 12.0  # rebooted: its clock starts again near 0
    assert clock.resyncs == 1
    assert clock.to_camera(1.5, 13.2) == pytest.approx(13.005)  # its intervals count again


def test_after_a_reset_the_offset_is_new_but_time_does_not_go_back() -> None:
    clock = HardwareClock()
    assert clock.to_camera(100.0, 10.0) == 10.0
    clock.reset()
    assert clock.to_camera(3.0, 10.5) == 10.5
    assert clock.to_camera(3.2, 10.9) == pytest.approx(10.701)


# -- the bridge: inputs ------------------------------------------------------------------------


class Bench:
    """A powered-on camera, its hub and a bridge, fed the way the daemon feeds them.

    The hardware clock is 500 s ahead of the camera's; inputs take 20 ms to arrive, some longer.
    """

    SKEW = 500.0
    TRANSIT = 0.02

    def __init__(self, root: Path, capabilities: frozenset[str] = CAPABILITIES) -> None:
        self.rig = Rig(root)
        self.camera = self.rig.camera
        self.hub = SensorHub(self.camera, PolicyRules())
        self.bridge = HardwareBridge(self.camera, self.hub, capabilities=capabilities)
        self.now = 0.0

    def advance(self, until: float) -> None:
        """Run the camera's and the hub's deadlines up to ``until``, as the runner does."""
        while (deadline := self.hub.next_deadline()) is not None and deadline <= until:
            self.rig.at(deadline)
            self.hub.handle_timeout(deadline)
        self.rig.at(until)
        self.now = until

    def send(self, event: BackendEvent, camera_t: float, late: float = 0.0) -> None:
        """``event`` happened at ``camera_t``; the camera loop has run to then, and the event
        arrives ``TRANSIT`` (plus ``late``) after it."""
        self.advance(camera_t)
        arrival = camera_t + self.TRANSIT + late
        self.bridge.apply(event, arrival, floor=self.now, advance=self.advance)

    def state(self) -> CameraState:
        """The camera's state (a call, so that mypy does not narrow it across steps)."""
        return self.camera.state

    def hw(self, camera_t: float) -> float:
        return camera_t + self.SKEW

    def records(self, kind: str) -> list[dict[str, Any]]:
        return self.rig.records(kind)


def test_event_button_edges_make_gestures_with_the_hardware_timing(tmp_path: Path) -> None:
    bench = Bench(tmp_path)
    # The release is 150 ms late (a retransmitted frame): the press lengths stay the hardware's.
    edges = [(1.0, True, 0.0), (1.1, False, 0.15), (1.3, True, 0.0), (1.4, False, 0.05)]
    for camera_t, pressed, late in edges:
        bench.send(
            ButtonInput("event", pressed=pressed, hw_time_s=bench.hw(camera_t)), camera_t, late
        )
    bench.advance(2.0)
    assert bench.state() is CameraState.RECORDING
    [started] = bench.records("recording_started")
    assert started["source"] == "button:event"
    # The second press settled 30 ms (the debounce) after it happened, at the hardware's time
    # plus the 20 ms the first input took: its spacing is kept.
    assert started["mono_s"] == pytest.approx(1.3 + 0.03 + bench.TRANSIT)
    for camera_t, pressed, late in [(5.0, True, 0.0), (8.5, False, 0.2)]:
        bench.send(
            ButtonInput("event", pressed=pressed, hw_time_s=bench.hw(camera_t)), camera_t, late
        )
    bench.advance(9.0)
    assert bench.state() is CameraState.BUFFERING
    [stopped] = bench.records("recording_stopped")
    assert stopped["mono_s"] == pytest.approx(5.0 + 3.0 + bench.TRANSIT)


def test_the_hub_is_advanced_to_an_input_before_it_gets_it(tmp_path: Path) -> None:
    """The holster's debounce ends (1.07) between the loop's position (1.06) and the press's
    camera time (1.08): it must run first, or the hub's clock would go back (an error)."""
    bench = Bench(tmp_path)
    bench.send(LineInput("holster", level=True, hw_time_s=bench.hw(1.0)), 1.0)
    bench.send(ButtonInput("event", pressed=True, hw_time_s=bench.hw(1.06)), 1.06)
    assert bench.now == pytest.approx(1.08)
    bench.advance(2.0)
    [started] = bench.records("recording_started")
    assert started["trigger"] == "holster"
    assert started["mono_s"] == pytest.approx(1.07)


@pytest.mark.parametrize("stall_s", [0.03, 0.05, 0.07, 0.15, 0.3])
def test_a_second_press_stuck_behind_a_host_stall_still_makes_a_double_press(
    tmp_path: Path, stall_s: float
) -> None:
    """The host stalls from the second press for ``stall_s``; the camera loop then runs to the
    end of the stall before the hardware task hands over the press that waited behind it (as the
    daemon's loop can). The press keeps its hardware time for the gesture recognizer, so the
    double press is recognised as pressed, and the camera starts recording at once."""
    bench = Bench(tmp_path)
    edges = [(1.0, True), (1.08, False), (1.2, True), (1.28, False)]
    for camera_t, pressed in edges[:2]:
        bench.send(ButtonInput("event", pressed=pressed, hw_time_s=bench.hw(camera_t)), camera_t)
    stall_end = 1.2 + bench.TRANSIT + stall_s
    bench.advance(stall_end)  # the camera loop first
    for camera_t, pressed in edges[2:]:
        arrival = max(camera_t + bench.TRANSIT, stall_end)
        edge = ButtonInput("event", pressed=pressed, hw_time_s=bench.hw(camera_t))
        bench.bridge.apply(edge, arrival, floor=bench.now, advance=bench.advance)
    bench.advance(2.0)
    assert bench.state() is CameraState.RECORDING
    assert bench.records("input_ignored") == []
    [started] = bench.records("recording_started")
    # Decided by the hardware's times (the second press plus the debounce; the clock's drift
    # allowance may add 0.6 ms to a late input), acted on by the camera no earlier than it got
    # there.
    decided = 1.2 + 0.03 + bench.TRANSIT
    assert started["mono_s"] == pytest.approx(max(decided, stall_end), abs=0.001)


# -- inputs held back after a serial loss ---------------------------------------------------------


class HoldingBackend(HardwareBackend):
    """Delivers as the serial backend does: through an ``InputHold``, on the test's clock (the
    camera's too: hardware lives in real time). ``timed_events`` ends when nothing is ready, so
    the test calls ``HardwareShell.receive`` again for more."""

    name: ClassVar[str] = "holding"

    def __init__(self, clock: Callable[[], float]) -> None:
        self.hold = InputHold(HoldConfig())
        self.clock = clock
        self.ready: deque[Delivery] = deque()

    @property
    def capabilities(self) -> frozenset[str]:
        return CAPABILITIES

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def events(self) -> AsyncIterator[BackendEvent]:
        async for event, _ in self.timed_events():
            yield event

    async def timed_events(self) -> AsyncIterator[tuple[BackendEvent, float]]:
        while self.ready:
            delivery = self.ready.popleft()
            arrived = delivery.arrived
            yield delivery.event, 0.0 if arrived is None else self.clock() - arrived
            if not self.ready:
                self.hold.taken()

    def hold_lag_s(self) -> float | None:
        horizon = self.hold.horizon(self.clock())
        return None if horizon is None else self.clock() - horizon

    async def output(self, output: Output) -> None:
        pass

    def tick(self) -> None:
        self.ready += self.hold.handle_timeout(self.clock())

    def lost(self) -> None:
        self.tick()
        self.hold.lost(self.clock())

    def arrive(self, event: BackendEvent) -> None:
        self.tick()
        if (delivery := self.hold.put(event, self.clock())) is not None:
            self.ready.append(delivery)


Happening = tuple[float, int, BackendEvent | None]
"""(camera time, tie-break, the input that arrives; None: the decoder drops a frame)."""


async def _play_held(bench: Bench, happenings: list[Happening], until: float) -> list[float]:
    """Run a camera loop every 10 ms as the daemon does (play the world to the shell's horizon),
    with ``happenings`` on the line; return the camera times the inputs were placed at."""
    clock = [0.0]
    backend = HoldingBackend(lambda: clock[0])
    placed: list[float] = []

    def advance(at: float) -> None:
        placed.append(at)
        bench.advance(at)

    shell = HardwareShell(
        backend,
        bench.bridge,
        now=lambda: clock[0],
        floor=lambda: bench.now,
        advance=advance,
        wake=lambda: None,
    )
    ticks: list[Happening] = [(i / 100, 1, None) for i in range(round(until * 100) + 1)]
    for at, kind, event in sorted([*happenings, *ticks], key=lambda h: (h[0], h[1])):
        clock[0] = at
        if event is not None:
            backend.arrive(event)
        elif kind == 0:
            backend.lost()
        backend.tick()
        await shell.receive()  # the shell's task takes what is ready at once
        if kind == 1:  # the camera loop's tick
            bench.advance(shell.horizon(at))
    assert shell.counters == {"errors": 0, "failed": 0}
    return placed


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.integers(40, 400), min_size=3, max_size=3),  # click, gap, click (ms)
    st.lists(st.integers(0, 2), min_size=4, max_size=4).filter(any),  # transmissions lost
    st.booleans(),  # the held inputs are the first since a LinkUp: no clock offset yet
)
def test_inputs_held_after_a_loss_reach_the_hub_in_order_with_their_spacing(
    gaps_ms: list[int], losses: list[int], first_after_link_up: bool
) -> None:
    """A double press over a line that loses frames (each resent 0.25 s later): whatever the
    arrival order, the hub gets the edges in t_ms order at their hardware spacing."""
    with tempfile.TemporaryDirectory() as root:
        bench = Bench(Path(root))
        hw_ms = [501_000]  # camera time 1.0
        for gap in gaps_ms:
            hw_ms.append(hw_ms[-1] + gap)
        happenings: list[Happening] = []
        if first_after_link_up:
            happenings.append((0.5, 0, LinkUpEvent("bench", CAPABILITIES)))
        else:  # an input on a clean line first: the clock's offset is known (20 ms transit)
            happenings.append((0.5, 0, ButtonInput("power", pressed=True, hw_time_s=500.48)))
        for index, (t_ms, lost) in enumerate(zip(hw_ms, losses, strict=True)):
            sent = t_ms / 1000 - bench.SKEW + bench.TRANSIT
            happenings += [(sent + 0.25 * attempt, 0, None) for attempt in range(lost)]
            edge = ButtonInput("event", pressed=index % 2 == 0, hw_time_s=t_ms / 1000)
            happenings.append((sent + 0.25 * lost, 0, edge))
        placed = asyncio.run(_play_held(bench, happenings, until=4.0))
        bench.advance(4.0)

        edges = placed[-4:]
        intervals = [later - earlier for earlier, later in itertools.pairwise(edges)]
        for interval, gap in zip(intervals, gaps_ms, strict=True):
            # Exact, but for the clock's drift allowance when a resent edge came alone.
            assert gap / 1000 - 1e-6 <= interval <= gap / 1000 * (1 + MAX_DRIFT) + 1e-6
        on_time = hw_ms[0] / 1000 - bench.SKEW + bench.TRANSIT
        if losses[0] == 0:  # the first edge came on time (only later ones were held)
            assert edges[0] == pytest.approx(on_time, abs=1e-6)
        else:  # as late as the fastest edge held with it, at most; the clock's drift allowance
            assert on_time - 1e-6 <= edges[0] <= on_time + 0.25 * min(losses) + 0.003
        assert bench.state() is CameraState.RECORDING
        [started] = bench.records("recording_started")
        assert started["mono_s"] == pytest.approx(edges[2] + 0.03, abs=1e-6)  # the debounce
        assert bench.records("input_ignored") == []


def test_a_resent_press_is_placed_before_the_release_that_overtook_it(tmp_path: Path) -> None:
    """The clock-only view of the bug: the release arrives first and the world is not held
    back, so the press can only go after it; held and put in order, it keeps its time."""
    clock = HardwareClock()
    assert clock.to_camera(0.25, 10.25) == 10.25
    assert clock.to_camera(0.0, 10.5, floor=10.45) == 10.45  # squeezed after its release

    bench = Bench(tmp_path)
    press = ButtonInput("event", pressed=True, hw_time_s=bench.hw(1.0))
    release = ButtonInput("event", pressed=False, hw_time_s=bench.hw(1.1))
    happenings: list[Happening] = [
        (0.5, 0, ButtonInput("power", pressed=True, hw_time_s=bench.hw(0.48))),
        (1.02, 0, None),  # the press's frame, corrupted
        (1.12, 0, release),
        (1.27, 0, press),  # resent
    ]
    placed = asyncio.run(_play_held(bench, happenings, until=2.0))
    assert placed[1:] == pytest.approx([1.02, 1.12])
    # A click, then the double-press window closed: a single press, a marker.
    assert bench.hub.button.state is GestureState.IDLE
    [marker] = bench.records("marker")
    assert marker["mono_s"] == pytest.approx(1.12 + 0.5)
    assert bench.records("input_ignored") == []


def test_other_buttons_are_ignored_and_counted(tmp_path: Path) -> None:
    bench = Bench(tmp_path)
    bench.send(ButtonInput("power", pressed=True, hw_time_s=bench.hw(1.0)), 1.0)
    bench.send(ButtonInput("volume_up", pressed=True, hw_time_s=bench.hw(1.2)), 1.2)
    assert bench.bridge.counters["ignored"] == 2
    assert bench.records("trigger") == []


def test_lines_speed_and_taser_reach_the_hub(tmp_path: Path) -> None:
    bench = Bench(tmp_path)
    bench.send(LineInput("holster", level=True, hw_time_s=bench.hw(1.0)), 1.0)
    bench.advance(1.5)
    bench.send(TaserInput("taser_arc", bench.hw(2.0)), 2.0)
    bench.send(SpeedInput(130.0, bench.hw(3.0)), 3.0)
    bench.send(LineInput("lightbar", level=True, hw_time_s=bench.hw(4.0)), 4.0)
    bench.advance(5.0)
    triggers = [(r["trigger"], r["source"], r["act"]) for r in bench.records("trigger")]
    assert triggers[0] == ("holster", "input:holster", "start")
    assert ("taser_arc", "taser", "note") in triggers
    assert ("vehicle_lightbar", "input:lightbar", "note") in triggers


def test_imu_gps_and_battery_reports(tmp_path: Path) -> None:
    bench = Bench(tmp_path)
    still = ((0.0, 0.0, 1.0),) * 50
    rest = ((0.0, 0.0, 0.0),) * 50
    bench.send(ImuInput(bench.hw(1.0), 0.01, still, rest), 1.5)
    # A batch overlapping the previous one (a resent FIFO) still reaches the detectors in order.
    bench.send(ImuInput(bench.hw(1.2), 0.01, still, rest), 1.7)
    bench.send(ImuInput(bench.hw(1.0), 0.01, (), ()), 1.8)  # empty: ignored
    bench.send(GpsInput((40.0, -75.0), 5.0, bench.hw(2.0)), 2.0)
    battery = BatteryInput(80, 3900, charging=False, hw_time_s=bench.hw(3.0))
    bench.send(battery, 3.0)
    assert bench.camera.position == (40.0, -75.0)
    assert bench.bridge.battery == battery
    assert bench.bridge.counters["ignored"] == 1


def test_inputs_to_a_camera_that_is_off_are_dropped(tmp_path: Path) -> None:
    bench = Bench(tmp_path)
    bench.camera.power_off(0.5)
    bench.send(LineInput("holster", level=True, hw_time_s=bench.hw(1.0)), 1.0)
    bench.advance(2.0)
    assert bench.bridge.counters["while_off"] == 1
    assert bench.records("trigger") == []


def test_link_changes_are_audited(tmp_path: Path) -> None:
    bench = Bench(tmp_path)
    bench.send(LinkUpEvent("bench v1", frozenset({"leds"})), 1.0)
    bench.send(LinkDownEvent("heartbeats lost"), 2.0)
    bench.send(LinkUpEvent("bench v1", frozenset({"leds"}), rebooted=True), 3.0)
    records = bench.records("hardware_link")
    assert [(r["state"], r.get("reason"), r.get("rebooted")) for r in records] == [
        ("up", None, False),
        ("down", "heartbeats lost", None),
        ("up", None, True),
    ]
    assert bench.bridge.link_up
    assert bench.bridge.capabilities == frozenset({"leds"})
    assert bench.state() is CameraState.BUFFERING  # the camera does not care


# -- the bridge: outputs -----------------------------------------------------------------------


def test_every_signal_has_outputs_and_silent_ones_make_none(tmp_path: Path) -> None:
    assert set(SIGNALS) == set(Signal)
    bench = Bench(tmp_path)
    bench.bridge.outputs([])
    loud = bench.bridge.outputs([Indication(Signal.RECORDING_STARTED, 1.0, silent=False)])
    assert loud == [ToneOutput(2000, 0.1, 2), HapticOutput(1, 0.2)]
    assert bench.bridge.outputs([Indication(Signal.RECORDING_STARTED, 1.0, silent=True)]) == []


def test_status_led_and_display_follow_the_state_and_are_sent_on_change(tmp_path: Path) -> None:
    bench = Bench(tmp_path)
    bridge = bench.bridge
    assert bridge.outputs([]) == [LedOutput(0, (0, 255, 0), "blink_slow"), DisplayOutput("BUF")]
    assert bridge.outputs([]) == []
    bench.send(LineInput("holster", level=True, hw_time_s=bench.hw(1.0)), 1.0)
    bench.advance(1.5)
    assert bridge.outputs(bench.camera.indicator.drain()) == [
        LedOutput(0, (255, 0, 0), "solid"),
        DisplayOutput("REC"),
        ToneOutput(2000, 0.1, 2),
        HapticOutput(1, 0.2),
    ]
    bench.camera.set_mode("stealth", 2.0, enabled=True, source="button")
    assert bridge.outputs([]) == [LedOutput(0, (0, 0, 0), "off"), DisplayOutput("")]
    bench.send(LinkUpEvent("bench", CAPABILITIES, rebooted=True), 3.0)
    assert bridge.outputs([]) == [LedOutput(0, (0, 0, 0), "off"), DisplayOutput("")]


def test_outputs_the_hardware_lacks_are_not_sent(tmp_path: Path) -> None:
    bench = Bench(tmp_path, capabilities=frozenset({"leds", "haptic"}))
    indication = Indication(Signal.CONFIRM_STOP, 1.0, silent=False)
    assert bench.bridge.outputs([indication]) == [
        LedOutput(0, (0, 255, 0), "blink_slow"),
        HapticOutput(3, 0.5),
    ]


@pytest.mark.parametrize(
    ("state", "muted", "stealth", "led", "text"),
    [
        (CameraState.RECORDING, False, False, LedOutput(0, (255, 0, 0), "solid"), "REC"),
        (CameraState.POST_EVENT, True, False, LedOutput(0, (255, 0, 0), "blink_slow"), "REC MUTE"),
        (CameraState.BUFFERING, False, False, LedOutput(0, (0, 255, 0), "blink_slow"), "BUF"),
        (CameraState.BUFFERING, True, False, LedOutput(0, (255, 160, 0), "blink_slow"), "BUF MUTE"),
        (CameraState.SLEEPING, False, False, LedOutput(0, (0, 0, 0), "off"), "SLEEP"),
        (CameraState.OFF, True, False, LedOutput(0, (0, 0, 0), "off"), "OFF"),
        (CameraState.RECORDING, False, True, LedOutput(0, (0, 0, 0), "off"), ""),
    ],
)
def test_status_mapping(
    state: CameraState, muted: bool, stealth: bool, led: LedOutput, text: str
) -> None:
    assert status_led(state, muted=muted, stealth=stealth) == led
    assert status_text(state, muted=muted, stealth=stealth) == text


def test_telemetry_counters_are_prefixed_and_kept_valid() -> None:
    merged = merge_counters(
        ("", {"commands": 2}),
        ("serial", {"crc_errors": 3, "bad name!": 1, "negative": -1}),
        ("hardware", {"ignored": 0}),
    )
    assert merged == {"commands": 2, "serial.crc_errors": 3, "hardware.ignored": 0}
