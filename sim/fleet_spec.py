"""The ``[fleet]`` table of a scenario file: several cameras, their group and where they stand.

A fleet scenario runs N cameras on one virtual clock (``sim.fleet_run``). ``[fleet]`` names them
(``ids``, or ``count`` IDs made from ``id_prefix``), puts them in a ``group`` for peer activation,
and places them (``positions``, or a seeded spread of ``radius_m`` around ``center``) for the
range check of a peer broadcast. Timeline entries pick their cameras with ``camera``
(``resolve_cameras``). The format is documented in ``docs/scenarios.md``.
"""

from __future__ import annotations

import difflib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Annotated, Final

from device.errors import ConfigError
from device.peers import EARTH_RADIUS_M
from device.tomlfields import Bounds, Document, build, check_fields, describe
from device.tomllines import Path
from protocol.ids import is_safe_id
from sim.media import derive_seed

MAX_CAMERAS: Final = 1000
"""The most cameras one scenario may declare."""

MAX_SPREAD_M: Final = 10_000.0
"""The largest ``radius_m`` of a spread (positions stay a local, flat-earth approximation)."""

DEFAULT_ID_PREFIX: Final = "cam-"

Position = tuple[float, float]
"""(latitude, longitude) in degrees."""

_SEED_MASK: Final = 2**63 - 1
_M_PER_DEGREE: Final = EARTH_RADIUS_M * math.pi / 180
_ID_RULE: Final = "1-64 characters from A-Z a-z 0-9 _ . -, starting with a letter or digit"

LatLon = Annotated[tuple[float, ...], Bounds(2, 2)]
IdText = Annotated[str, Bounds(1, 64)]


@dataclass(frozen=True, slots=True)
class FleetTable:
    """``[fleet]`` as written: checked key by key, then against each other."""

    count: Annotated[int, Bounds(1, MAX_CAMERAS)] | None = None
    ids: Annotated[tuple[IdText, ...], Bounds(1, MAX_CAMERAS)] | None = None
    id_prefix: Annotated[str, Bounds(1, 59)] | None = None
    group: IdText | None = None
    positions: Annotated[tuple[LatLon, ...], Bounds(1, MAX_CAMERAS)] | None = None
    center: LatLon | None = None
    radius_m: Annotated[float, Bounds(0, MAX_SPREAD_M)] | None = None

    def __post_init__(self) -> None:
        check_fields(self, "fleet")
        if self.count is None and self.ids is None:
            raise ConfigError(f"fleet needs count (1 to {MAX_CAMERAS}) or ids")
        if self.ids is not None:
            if self.id_prefix is not None:
                raise ConfigError("fleet.id_prefix makes IDs from count: leave it out with ids")
            if self.count is not None and self.count != len(self.ids):
                raise ConfigError(
                    f"fleet.count does not match ids: {self.count} counted, {len(self.ids)} named"
                )
        if self.ids is not None:
            _check_ids("fleet.ids has", self.ids)
        else:
            _check_ids("fleet.id_prefix makes", self.camera_ids)
        if self.group is not None and not is_safe_id(self.group):
            raise ConfigError(f"fleet.group must be {_ID_RULE}, got {self.group!r}")
        self._check_places()

    def _check_places(self) -> None:
        if self.positions is not None:
            if self.center is not None or self.radius_m is not None:
                raise ConfigError("fleet.positions places every camera: leave out center/radius_m")
            if len(self.positions) != len(self.camera_ids):
                raise ConfigError(
                    f"fleet.positions has {len(self.positions)} items; expected one per camera "
                    f"({len(self.camera_ids)})"
                )
            for index, position in enumerate(self.positions):
                _check_position(f"fleet.positions item {index + 1}", position)
        if self.radius_m is not None and self.center is None:
            raise ConfigError("fleet.radius_m spreads cameras around a center: add fleet.center")
        if self.center is not None:
            _check_position("fleet.center", self.center)
            if abs(self.center[0]) > 89.0:
                raise ConfigError("fleet.center must be within 89 degrees of the equator")

    @property
    def camera_ids(self) -> tuple[str, ...]:
        """The IDs as written, or made from the prefix: ``cam-001`` ... (3 digits or more)."""
        if self.ids is not None:
            return self.ids
        assert self.count is not None
        prefix = DEFAULT_ID_PREFIX if self.id_prefix is None else self.id_prefix
        width = max(3, len(str(self.count)))
        return tuple(f"{prefix}{number:0{width}d}" for number in range(1, self.count + 1))


@dataclass(frozen=True, slots=True)
class FleetDevice:
    """One camera of a fleet: its ID, its seed (derived) and its GPS fix at t = 0, if any."""

    id: str
    seed: int
    position: Position | None = None

    def __post_init__(self) -> None:
        _check_ids("fleet camera", (self.id,))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"fleet camera seed must be an integer, got {self.seed!r}")
        if not 0 <= self.seed <= _SEED_MASK:
            raise ConfigError(f"fleet camera seed must be from 0 to 2^63 - 1, got {self.seed}")
        if self.position is not None:
            _check_position(f"fleet camera {self.id}: position", self.position)


@dataclass(frozen=True, slots=True)
class Fleet:
    """The cameras of a fleet scenario, in file order, and their group (None: no group)."""

    cameras: tuple[FleetDevice, ...]
    group: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= len(self.cameras) <= MAX_CAMERAS:
            raise ConfigError(f"a fleet has 1 to {MAX_CAMERAS} cameras, got {len(self.cameras)}")
        _check_ids("fleet has", self.ids)
        if self.group is not None and not is_safe_id(self.group):
            raise ConfigError(f"fleet.group must be {_ID_RULE}, got {self.group!r}")

    @property
    def ids(self) -> tuple[str, ...]:
        """The cameras' IDs, in file order."""
        return tuple(camera.id for camera in self.cameras)


def parse_fleet(doc: Document, table: dict[str, object], root_seed: int) -> Fleet:
    """``[fleet]`` read, checked and resolved: IDs, per-camera seeds and positions."""
    path = ("fleet",)
    doc.check_keys(path, table, [f.name for f in fields(FleetTable)])
    if "count" not in table and "ids" not in table:
        raise doc.error(path, f"missing count; expected count (1 to {MAX_CAMERAS}) or ids")
    return resolve_fleet(build(doc, path, FleetTable, table), root_seed)


def resolve_fleet(written: FleetTable, root_seed: int) -> Fleet:
    """Each camera's seed is derived from the scenario's seed and its ID; spreads are seeded."""
    ids = written.camera_ids
    positions: Sequence[Position | None]
    if written.positions is not None:
        positions = [(p[0], p[1]) for p in written.positions]
    elif written.center is not None:
        center = (written.center[0], written.center[1])
        positions = spread(center, written.radius_m or 0.0, len(ids), root_seed)
    else:
        positions = [None] * len(ids)
    cameras = tuple(
        FleetDevice(id=camera_id, seed=camera_seed(root_seed, camera_id), position=position)
        for camera_id, position in zip(ids, positions, strict=True)
    )
    return Fleet(cameras=cameras, group=written.group)


def camera_seed(root_seed: int, camera_id: str) -> int:
    """The seed of one camera of a fleet: from the scenario's seed and the camera's ID."""
    return derive_seed(root_seed, "fleet", camera_id) & _SEED_MASK


def spread(center: Position, radius_m: float, count: int, seed: int) -> list[Position]:
    """``count`` positions uniformly at random within ``radius_m`` of ``center`` (seeded)."""
    rng = random.Random(derive_seed(seed, "fleet", "positions"))
    lat0, lon0 = center
    out = []
    for _ in range(count):
        distance = radius_m * math.sqrt(rng.random())
        bearing = 2 * math.pi * rng.random()
        lat = lat0 + distance * math.cos(bearing) / _M_PER_DEGREE
        lon = lon0 + distance * math.sin(bearing) / (_M_PER_DEGREE * math.cos(math.radians(lat0)))
        out.append((lat, (lon + 180.0) % 360.0 - 180.0))
    return out


def resolve_cameras(
    doc: Document, path: Path, value: object, ids: Sequence[str]
) -> tuple[str, ...]:
    """A timeline entry's ``camera``: an ID, a number from 1, or an array of them."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise doc.error(path, "must name at least one camera, got an empty array")
    resolved: list[str] = []
    for index, item in enumerate(items):
        where = (*path, index) if isinstance(value, list) else path
        camera = _one_camera(doc, where, item, ids)
        if camera in resolved:
            raise doc.error(where, f"names camera {camera!r} twice")
        resolved.append(camera)
    return tuple(resolved)


def _one_camera(doc: Document, path: Path, item: object, ids: Sequence[str]) -> str:
    count = len(ids)
    choices = f"a camera ID of the fleet ({_span(ids)}) or its number from 1 to {count}"
    if isinstance(item, int) and not isinstance(item, bool):
        if not 1 <= item <= count:
            raise doc.error(path, f"camera number {item} is out of range; expected {choices}")
        return ids[item - 1]
    if isinstance(item, str):
        if item in ids:
            return item
        close = difflib.get_close_matches(item, list(ids), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise doc.error(path, f"unknown camera {item!r}{hint}; expected {choices}")
    raise doc.error(path, f"must be {choices}, or an array of them, got {describe(item)}")


def _span(ids: Sequence[str]) -> str:
    if len(ids) <= 4:
        return ", ".join(ids)
    return f"{ids[0]}, {ids[1]} ... {ids[-1]}"


def _check_ids(what: str, ids: Sequence[str]) -> None:
    """``what`` starts the message: "fleet.ids has" 'x y', which is not an ID..."""
    seen: set[str] = set()
    for camera_id in ids:
        if not isinstance(camera_id, str) or not is_safe_id(camera_id):
            raise ConfigError(f"{what} {camera_id!r}, which is not an ID of {_ID_RULE}")
        if camera_id in seen:
            raise ConfigError(f"{what} {camera_id!r} twice: every camera needs its own ID")
        seen.add(camera_id)


def _check_position(what: str, position: Sequence[float]) -> None:
    """Messages avoid ", got": a config file error would show the whole array instead."""
    if len(position) != 2 or not (-90.0 <= position[0] <= 90.0 and -180.0 <= position[1] <= 180.0):
        raise ConfigError(
            f"{what} ({list(position)!r}) is not [latitude -90 to 90, longitude -180 to 180]"
        )
