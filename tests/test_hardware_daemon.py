"""The connected camera with a hardware backend (issue 6): the scenario's hardware actions through
the sim backend and the bridge, the camera carrying on while its hardware is unplugged, outputs
reaching the hardware, link counters in telemetry, and where hardware actions go per backend.

The live tests run a ``LiveCamera`` against the private mosquitto (``mosquitto`` fixture), faster
than real time where the sim backend allows it, and wait on events or on the camera's state with
timeouts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from device.backends import HardwareBackend, LedOutput, LineInput, Output
from device.backends.events import CAPABILITIES, BackendEvent, ButtonInput, LinkUpEvent, SpeedInput
from device.backends.indication_map import DARK, GREEN, RED
from device.backends.sim import SimBackend
from device.camera import CameraState
from device.errors import ConfigError
from device.mqtt.settings import parse_broker_url
from protocol.topics import DeviceChannel, Topics
from sim.broker import PrivateBroker
from sim.live import LiveCamera, LiveOptions, hardware_routing
from sim.runner import ScenarioRun
from sim.scenario import Scenario
from sim.sensor_schedule import SensorSchedule
from tests.connected_support import (
    DEVICE,
    EPOCH,
    WAIT_S,
    Step,
    audit_records,
    broker_settings,
    playing,
    scenario,
    subscriber,
)
from tests.mqtt_support import wait_for, wait_until

pytestmark = [pytest.mark.timeout(90)]

SHIFT: list[Step] = [
    (0, "power_on", {}),
    (1, "button", {"gesture": "double_press", "bounce": False}),
    (3, "button", {"gesture": "press", "bounce": False}),
    (4, "input", {"line": "holster", "level": True}),
    (5, "input", {"line": "holster", "level": False}),
    (5.5, "input", {"line": "lightbar", "level": True}),
    (6, "mode", {"mode": "mute", "enabled": True}),
    (6.5, "input", {"line": "lightbar", "level": False}),
    (7, "button", {"gesture": "hold", "bounce": False, "reason": "call ended"}),
    (13, "power_off", {}),
]
"""Double press to start, a marker, holster drawn and returned, lightbar, mute, hold to stop."""

DECISION_KINDS = ("trigger", "mode", "marker", "recording_started", "recording_stopped")


def decisions(data_dir: Path) -> list[tuple[object, ...]]:
    """What the camera decided, from its audit log, without the times."""
    out: list[tuple[object, ...]] = []
    for record in audit_records(data_dir):
        kind = record["kind"]
        if kind in ("trigger", "mode", "marker"):
            request = record.get("request") or record.get("mode")
            out.append((kind, request, record.get("trigger"), record.get("source")))
            out[-1] += (record["accepted"], record.get("act"))
        elif kind in ("recording_started", "recording_stopped"):
            out.append((kind, record["trigger"], record["source"], record.get("reason")))
    return out


def shown(backend: SimBackend, kind: type) -> list[Output]:
    """The outputs of one kind the backend showed, in order."""
    return [output for output in backend.outputs if isinstance(output, kind)]


@pytest.mark.asyncio
async def test_the_sim_backend_makes_the_decisions_of_the_virtual_run(
    tmp_path: Path, mosquitto: PrivateBroker
) -> None:
    plan = scenario(SHIFT, duration=14)
    virtual = ScenarioRun(plan, tmp_path / "virtual")
    virtual.run()
    expected = decisions(tmp_path / "virtual")
    assert ("recording_started", "button", "button:event", None) in expected
    assert ("recording_stopped", "button", "button:event", "call ended") in expected
    assert ("marker", None, None, "button:event", True, None) in expected

    backend = SimBackend()
    options = LiveOptions(
        data_dir=tmp_path / "live", broker=broker_settings(mosquitto.url), speed=2, backend=backend
    )
    live = LiveCamera(plan, options, utc_now=EPOCH)
    async with playing(live, until_uploaded=False):
        await wait_until(
            lambda: live.run.done and live.run.camera.state is CameraState.OFF,
            timeout_s=WAIT_S,
            what="the scenario played to its power_off",
        )
    assert decisions(tmp_path / "live") == expected
    # Every edge and line change went through the backend and the bridge.
    assert backend.counters()["inputs"] == 12
    assert live.bridge is not None
    assert live.bridge.counters["inputs"] == 12
    assert [
        r["state"] for r in audit_records(tmp_path / "live") if r["kind"] == "hardware_link"
    ] == ["up"]
    # What the officer saw: green while buffering, red while recording, dark when off.
    leds = shown(backend, LedOutput)
    assert LedOutput(0, RED, "solid") in leds
    assert LedOutput(0, RED, "blink_slow") in leds  # muted
    assert leds[-1] == LedOutput(0, DARK, "off")
    texts = [getattr(output, "text", None) for output in backend.outputs]
    assert [t for t in texts if t is not None][-4:] == ["REC", "REC MUTE", "BUF MUTE", "OFF"]
    assert backend.closed


@pytest.mark.asyncio
async def test_unplugged_hardware_does_not_stop_buffering(
    tmp_path: Path, mosquitto: PrivateBroker
) -> None:
    backend = SimBackend()
    options = LiveOptions(
        data_dir=tmp_path / "cam",
        broker=broker_settings(mosquitto.url),
        speed=5,
        backend=backend,
        telemetry_interval_s=1.0,
    )
    live = LiveCamera(scenario([(0, "power_on", {})], duration=3600), options, utc_now=EPOCH)
    bridge, camera = live.bridge, live.run.camera
    assert bridge is not None
    telemetry = Topics().device(DEVICE, DeviceChannel.TELEMETRY)

    def holster_drawn() -> LineInput:
        return LineInput("holster", level=True, hw_time_s=live.daemon.now())

    async with (
        subscriber("127.0.0.1", mosquitto.port, [telemetry]) as watcher,
        playing(live, until_uploaded=False),
    ):
        await _shown(backend, LedOutput(0, GREEN, "blink_slow"))
        backend.unplug("cable pulled")
        await wait_until(lambda: not bridge.link_up, timeout_s=WAIT_S, what="link down")
        packets, unplugged_at = live.run.stats.packets, live.daemon.now()
        backend.inject(holster_drawn())  # nobody is there to report it
        await wait_until(
            lambda: live.daemon.now() >= unplugged_at + 3 and live.run.stats.packets > packets,
            timeout_s=WAIT_S,
            what="three camera seconds of media while unplugged",
        )
        assert camera.state is CameraState.BUFFERING
        assert backend.counters()["dropped"] == 1
        backend.replug()
        await wait_until(lambda: bridge.link_up, timeout_s=WAIT_S, what="link up again")
        backend.inject(holster_drawn())
        await _shown(backend, LedOutput(0, RED, "solid"))
        await wait_until(
            lambda: any(_counters(m).get("hardware.link_ups") == 2 for m in watcher.on(telemetry)),
            timeout_s=WAIT_S,
            what="telemetry with the backend's and the bridge's counters after the replug",
        )
    counters = _counters(watcher.on(telemetry)[-1])
    assert counters["sim.link_downs"] == counters["hardware.link_downs"] == 1
    assert counters["sim.dropped"] == 1
    records = audit_records(tmp_path / "cam")
    links = [(r["state"], r.get("reason")) for r in records if r["kind"] == "hardware_link"]
    assert links == [("up", None), ("down", "cable pulled"), ("up", None)]
    [started] = [r for r in records if r["kind"] == "recording_started"]
    assert started["trigger"] == "holster"
    assert started["delivered_pre_roll_s"] >= 0.5  # the buffer kept filling while unplugged


async def _shown(backend: SimBackend, wanted: Output) -> None:
    await wait_for(
        backend.wait_output(lambda output: output == wanted), timeout_s=WAIT_S, what=f"{wanted}"
    )


def _counters(message: Mapping[str, Any]) -> dict[str, int]:
    counters: dict[str, int] = message.get("counters", {})
    return counters


class ScriptedBench(HardwareBackend):
    """Hardware that is not the simulator: it plays a script of inputs on its own clock (1000 s
    ahead of the camera's), as the fake bench microcontroller plays a scenario's hardware
    actions, and keeps what it is asked to show."""

    name = "bench-scripted"
    CLOCK = 1000.0

    def __init__(self, script: list[tuple[float, bool]]) -> None:
        self.script = script
        self.shown: list[Output] = []
        self.closed = asyncio.Event()

    @property
    def capabilities(self) -> frozenset[str]:
        return CAPABILITIES

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        self.closed.set()

    async def events(self) -> AsyncIterator[BackendEvent]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        yield LinkUpEvent("scripted bench", CAPABILITIES)
        for at, pressed in self.script:
            await asyncio.sleep(start + at - loop.time())  # the officer's timing, not a wait
            yield ButtonInput("event", pressed=pressed, hw_time_s=self.CLOCK + at)
        await self.closed.wait()

    async def output(self, output: Output) -> None:
        self.shown.append(output)


@pytest.mark.asyncio
async def test_with_real_hardware_the_camera_leaves_hardware_actions_to_it(
    tmp_path: Path, mosquitto: PrivateBroker
) -> None:
    plan = scenario(
        [
            (0, "power_on", {}),
            (0.5, "button", {"gesture": "double_press", "bounce": False}),  # the bench's to play
            (2.0, "mode", {"mode": "mute", "enabled": True}),
        ],
        duration=3,
    )
    bench = ScriptedBench([(0.6, True), (0.7, False), (0.9, True), (1.0, False)])
    options = LiveOptions(
        data_dir=tmp_path / "cam", broker=broker_settings(mosquitto.url), backend=bench
    )
    live = LiveCamera(plan, options, utc_now=EPOCH)
    async with playing(live, until_uploaded=False):
        await wait_until(
            lambda: live.run.done and live.run.camera.muted,
            timeout_s=WAIT_S,
            what="the scenario's camera-side actions played",
        )
    found = decisions(tmp_path / "cam")
    started = [d for d in found if d[0] == "recording_started"]
    assert started == [("recording_started", "button", "button:event", None)]  # once: the bench's
    assert ("mode", "mute", None, "button", True, None) in found
    assert LedOutput(0, RED, "solid") in bench.shown
    assert bench.closed.is_set()


# -- routing and configuration, no broker -------------------------------------------------------


class BenchStub(HardwareBackend):
    """A hardware backend that is not the simulator (as far as the camera can tell)."""

    name = "bench-stub"

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset()

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def events(self) -> AsyncIterator[BackendEvent]:
        return
        yield

    async def output(self, output: Output) -> None:
        pass


def test_real_hardware_runs_in_real_time(tmp_path: Path) -> None:
    settings = parse_broker_url("mqtt://127.0.0.1:1")
    plan = scenario([(0, "power_on", {})], duration=60)
    options = LiveOptions(data_dir=tmp_path, broker=settings, speed=2, backend=BenchStub())
    with pytest.raises(ConfigError, match="runs in real time: speed must be 1"):
        LiveCamera(plan, options, utc_now=EPOCH)


def test_hardware_actions_go_where_the_backend_says() -> None:
    sim = SimBackend()
    assert hardware_routing(None) == ("hub", None)
    assert hardware_routing(sim) == ("backend", sim.inject)
    assert hardware_routing(BenchStub()) == ("external", None)
    with pytest.raises(ValueError, match="a sink is needed"):
        SensorSchedule("backend")
    with pytest.raises(ValueError, match="a sink is needed"):
        SensorSchedule("hub", print)


ROUTED: list[Step] = [
    (0, "power_on", {}),
    (1, "button", {"gesture": "double_press"}),
    (3, "input", {"line": "holster", "level": True, "glitch_s": 0.01}),
    (4, "speed", {"kmh": 50}),
    (6, "remote_activate", {}),
]


def _play(plan: Scenario, out: Path, **options: Any) -> list[tuple[object, ...]]:
    ScenarioRun(plan, out, **options).run()
    return decisions(out)


def test_virtual_time_routes_hardware_actions_to_the_hub_a_sink_or_nowhere(
    tmp_path: Path,
) -> None:
    plan = scenario(ROUTED, duration=10)
    by_hub = _play(plan, tmp_path / "hub")
    assert by_hub[0] == ("recording_started", "button", "button:event", None)
    sunk: list[object] = []
    by_sink = _play(plan, tmp_path / "sink", hardware_inputs="backend", hardware_sink=sunk.append)
    by_nobody = _play(plan, tmp_path / "external", hardware_inputs="external")
    # Without the hub the button and holster decide nothing; the remote command still records.
    assert by_sink == by_nobody
    assert by_sink[0] == ("recording_started", "remote", "mqtt:dispatch", None)
    # The sink got the raw inputs, stamped with their instants, in order.
    buttons = [event for event in sunk if isinstance(event, ButtonInput)]
    assert buttons[0].pressed
    assert not buttons[-1].pressed
    assert all(1.0 <= b.hw_time_s < 3.0 for b in buttons)
    assert sunk[len(buttons) :] == [
        LineInput("holster", level=True, hw_time_s=3.0),
        LineInput("holster", level=False, hw_time_s=3.01),
        SpeedInput(50.0, 4.0),
    ]
    times = [event.hw_time_s for event in sunk if isinstance(event, ButtonInput)]
    assert times == sorted(times)
