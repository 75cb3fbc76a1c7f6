"""What reads a sensor. A driver has one method, ``read()``, returning a list of
``(name, value, unit)`` tuples: one per measurement taken at that moment (a DHT22 gives two).
``value`` is a number, a str, a bool or bytes; ``unit`` a SenML unit such as ``"Cel"`` or
``"%RH"`` (RFC 8428 section 12.1), or None.

:class:`SimulatedDriver` needs no hardware: the tests use it, and so does a board whose
``lichen.json`` says ``"driver": "simulated"`` (what ``lichen sensor add`` writes, to be
changed once a real part is wired). The others are small examples for common parts; add your
own beside them.
"""


class SimulatedDriver:
    """A repeatable sawtooth: ``start``, ``start + step``, ... for ``period`` readings."""

    def __init__(self, name="temperature", unit="Cel", start=20.0, step=0.25, period=40):
        self.name = name
        self.unit = unit
        self.start = start
        self.step = step
        self.period = period
        self.taken = 0

    def read(self):
        value = self.start + self.step * (self.taken % self.period)
        self.taken += 1
        return [(self.name, value, self.unit)]


class CountingDriver:
    """Reading number i has value i: lets a test name every reading it sent."""

    def __init__(self, name="count", unit=None, first=0):
        self.name = name
        self.unit = unit
        self.taken = first

    def read(self):
        value = self.taken
        self.taken += 1
        return [(self.name, value, self.unit)]


class DHTDriver:
    """A DHT11 or DHT22 on one GPIO pin (MicroPython's ``dht`` module)."""

    def __init__(self, pin, model="DHT22"):
        import dht
        import machine

        kind = dht.DHT22 if model == "DHT22" else dht.DHT11
        self.sensor = kind(machine.Pin(pin))

    def read(self):
        self.sensor.measure()
        return [
            ("temperature", self.sensor.temperature(), "Cel"),
            ("humidity", self.sensor.humidity(), "%RH"),
        ]


class InternalTemperatureDriver:
    """The ESP32's own die temperature (``esp32.mcu_temperature``): a first real reading."""

    def __init__(self):
        import esp32

        self.esp32 = esp32

    def read(self):
        return [("mcu_temperature", self.esp32.mcu_temperature(), "Cel")]


def from_config(config):
    """The driver a board's config names: ``{"driver": "simulated"|"dht22"|..., ...}``."""
    name = config.get("driver", "simulated")
    if name == "simulated":
        return SimulatedDriver()
    if name in ("dht22", "dht11"):
        return DHTDriver(config.get("pin", 4), name.upper())
    if name == "mcu_temperature":
        return InternalTemperatureDriver()
    raise ValueError("unknown driver " + repr(name))
