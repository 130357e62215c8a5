"""Hardware backends: where the camera's buttons, switches and sensors come from, and where its
LEDs, haptics, tones and display go.

``HardwareBackend`` is the interface; ``open_backend`` builds one by name from the registry
(``sim``, ``serial``, and any backend a third-party package adds through the entry-point group
``bwc_sim.backends``). Importing this package never imports pyserial: the serial backend is loaded
only when asked for.
"""

from device.backends.base import HardwareBackend
from device.backends.events import (
    BackendEvent,
    BatteryInput,
    ButtonInput,
    DisplayOutput,
    GpsInput,
    HapticOutput,
    HardwareInput,
    ImuInput,
    LedOutput,
    LineInput,
    LinkDownEvent,
    LinkUpEvent,
    Output,
    SpeedInput,
    TaserInput,
    ToneOutput,
)
from device.backends.registry import available_backends, backend_class, open_backend

__all__ = [
    "BackendEvent",
    "BatteryInput",
    "ButtonInput",
    "DisplayOutput",
    "GpsInput",
    "HapticOutput",
    "HardwareBackend",
    "HardwareInput",
    "ImuInput",
    "LedOutput",
    "LineInput",
    "LinkDownEvent",
    "LinkUpEvent",
    "Output",
    "SpeedInput",
    "TaserInput",
    "ToneOutput",
    "available_backends",
    "backend_class",
    "open_backend",
]
