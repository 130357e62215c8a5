"""Hypothesis strategies and an in-memory pipe shared by the serial tests.

Every message strategy draws from the full valid range of every field, so round-trip tests
exercise the edges (0, max, negative int16, 64-byte text) as well as typical values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import strategies as st

from protocol.serial import (
    MAX_DISPLAY_TEXT,
    MAX_IMU_SAMPLES,
    MAX_PAYLOAD,
    Ack,
    Battery,
    Button,
    ButtonEdge,
    Capability,
    DisplayText,
    Frame,
    GpsFix,
    GpsFixType,
    Haptic,
    Heartbeat,
    Hello,
    Holster,
    ImuBatch,
    ImuSample,
    Led,
    LedPattern,
    LinkConfig,
    LinkEvent,
    Nak,
    NakReason,
    Role,
    SerialLink,
    SerialMessage,
    Taser,
    TaserEvent,
    Tone,
    VehicleInput,
    VehicleInputKind,
)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
i16 = st.integers(-0x8000, 0x7FFF)


def _utf8_at_most(max_bytes: int) -> st.SearchStrategy[str]:
    chars = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
    # Cut at a byte limit without splitting a character: decoding with "ignore" drops the stub.
    return st.text(chars, max_size=max_bytes).map(
        lambda text: text.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")
    )


imu_samples = st.builds(ImuSample, i16, i16, i16, i16, i16, i16)

_vehicle_inputs = st.one_of(
    st.builds(VehicleInput, u32, st.just(VehicleInputKind.SPEED), u16),
    st.builds(
        VehicleInput,
        u32,
        st.sampled_from([k for k in VehicleInputKind if k is not VehicleInputKind.SPEED]),
        st.integers(0, 1),
    ),
)

STRATEGIES: dict[type[SerialMessage], st.SearchStrategy[SerialMessage]] = {
    Hello: st.builds(
        Hello,
        protocol_version=st.integers(1, 0xFF),
        role=st.sampled_from(Role),
        capabilities=u32.map(Capability),
        boot_id=st.integers(1, 0xFFFF_FFFF),
        firmware=_utf8_at_most(32),
        peer_boot_id=u32,
    ),
    Heartbeat: st.builds(Heartbeat, u32),
    Ack: st.builds(Ack, u16),
    Nak: st.builds(Nak, u16, st.sampled_from(NakReason)),
    ButtonEdge: st.builds(ButtonEdge, u32, st.sampled_from(Button), st.booleans()),
    Holster: st.builds(Holster, u32, st.booleans()),
    VehicleInput: _vehicle_inputs,
    Taser: st.builds(Taser, u32, st.sampled_from(TaserEvent)),
    ImuBatch: st.builds(
        ImuBatch,
        u32,
        st.integers(1, 0xFFFF),
        st.lists(imu_samples, min_size=1, max_size=MAX_IMU_SAMPLES).map(tuple),
    ),
    GpsFix: st.builds(
        GpsFix,
        u32,
        st.sampled_from(GpsFixType),
        st.integers(-900_000_000, 900_000_000),
        st.integers(-1_800_000_000, 1_800_000_000),
        u16,
    ),
    Battery: st.builds(Battery, u32, st.integers(0, 100), u16, st.booleans()),
    Led: st.builds(Led, u8, u8, u8, u8, st.sampled_from(LedPattern)),
    Haptic: st.builds(Haptic, u8, u16),
    Tone: st.builds(Tone, st.integers(20, 20_000), st.integers(1, 0xFFFF), st.integers(1, 0xFF)),
    DisplayText: st.builds(DisplayText, _utf8_at_most(MAX_DISPLAY_TEXT)),
}
"""A strategy for every message type, over the full valid range of each field."""

messages = st.one_of(*STRATEGIES.values())
inputs = st.one_of([STRATEGIES[t] for t in (ButtonEdge, Holster, VehicleInput, Taser)])
"""Reliable MCU-to-host messages."""
outputs = st.one_of([STRATEGIES[t] for t in (Led, Haptic, Tone, DisplayText)])
"""Reliable host-to-MCU messages."""

frames = st.builds(
    Frame,
    type_code=u8,
    seq=u16,
    payload=st.binary(max_size=MAX_PAYLOAD),
    flags=u8,
)

FAST = LinkConfig()
"""Default timing; tests drive the clock, so defaults cost nothing."""


def make_link(role: Role, boot_id: int, config: LinkConfig = FAST) -> SerialLink:
    """A link endpoint with every capability its role has."""
    caps = (
        Capability.BUTTONS | Capability.HOLSTER | Capability.IMU
        if role is Role.MCU
        else Capability(0)
    )
    return SerialLink(role, caps, boot_id, f"test-{role.name.lower()}", config)


@dataclass
class LinkPair:
    """Host and MCU endpoints joined by a lossless, instant, in-memory pipe; a fake clock."""

    host: SerialLink
    mcu: SerialLink
    now: float = 0.0
    host_events: list[LinkEvent] = field(default_factory=list)
    mcu_events: list[LinkEvent] = field(default_factory=list)

    @classmethod
    def connected(cls, config: LinkConfig = FAST) -> LinkPair:
        """A pair that has completed its handshake at t=0."""
        pair = cls(make_link(Role.HOST, 0x1111, config), make_link(Role.MCU, 0x2222, config))
        pair.host.connect(0.0)
        pair.mcu.connect(0.0)
        pair.pump()
        return pair

    def pump(self) -> None:
        """Deliver bytes both ways until neither side has anything more to say."""
        for _ in range(100):
            to_mcu, to_host = self.host.data_to_send(), self.mcu.data_to_send()
            if not to_mcu and not to_host:
                return
            self.mcu_events += self.mcu.receive_data(to_mcu, self.now)
            self.host_events += self.host.receive_data(to_host, self.now)
        raise AssertionError("the two sides never went quiet")

    def advance(self, seconds: float) -> None:
        """Move the clock forward, firing every deadline on the way and delivering the bytes."""
        target = self.now + seconds
        while True:
            pending = (self.host.next_deadline(), self.mcu.next_deadline())
            deadlines = [deadline for deadline in pending if deadline is not None]
            if not deadlines or min(deadlines) > target:
                break
            self.now = max(self.now, min(deadlines))
            self.host_events += self.host.handle_timeout(self.now)
            self.mcu_events += self.mcu.handle_timeout(self.now)
            self.pump()
        self.now = target
