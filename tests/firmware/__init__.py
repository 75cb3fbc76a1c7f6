"""Tests of the sensor firmware (``firmware/sensor``), which is not an installed package: its
directory goes on the module search path here, as it is the root of the board's filesystem."""

import sys
from pathlib import Path

_FIRMWARE = str(Path(__file__).resolve().parents[2] / "firmware" / "sensor")
if _FIRMWARE not in sys.path:
    sys.path.insert(0, _FIRMWARE)
