"""Run the sensor firmware from the command line, under CPython or MicroPython alike.

    fw_run.py unit SCRATCH_DIR          run fw_unit's tests; one "PASS name" or
                                        "FAIL name: why" line each, then "N passed, M failed"
    fw_run.py discover TIMEOUT_MS       one mDNS query; prints "agent HOST PORT" per answer
    fw_run.py main ROUNDS               the board's main.py, in the current directory (where
                                        lichen.json is), for ROUNDS readings; prints stats
    fw_run.py sensor CONFIG_JSON        a sensor with a counting driver (reading i has value
                                        i and time start_time + i) sending to a real agent

``sensor`` prints "acked I" for each reading as its 2.04 arrives, "buffered I" for each one
that goes to the buffer instead of out at once, then "stats {...}" once
every reading was taken and the buffer drained (or ``drain_ms`` ran out), and writes every
datagram it sent, in hex, one a line, to the config's ``log``. The module search path must
hold ``firmware/sensor`` and this directory (MICROPYPATH or PYTHONPATH).
"""

import json
import os
import socket
import sys

from lichen_sensor import clock, coap, counter, ring
from lichen_sensor.client import BUFFERED, Sensor
from lichen_sensor.drivers import CountingDriver


class Context:
    def __init__(self, scratch):
        self.scratch = scratch


def run_unit(scratch):
    import fw_unit

    names = sorted(name for name in dir(fw_unit) if name.startswith("test_"))
    passed = failed = 0
    for index, name in enumerate(names):
        directory = scratch + "/" + str(index)
        os.mkdir(directory)
        try:
            getattr(fw_unit, name)(Context(directory))
        except Exception as exc:  # report every failure, keep going
            failed += 1
            print("FAIL " + name + ": " + type(exc).__name__ + " " + repr(exc.args))
            if hasattr(sys, "print_exception"):
                sys.print_exception(exc)
            else:
                import traceback

                traceback.print_exc()
        else:
            passed += 1
            print("PASS " + name)
    print(str(passed) + " passed, " + str(failed) + " failed")
    return 1 if failed else 0


class LoggingSocket:
    """A real UDP socket that keeps a copy of every datagram sent."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sent = []

    def sendto(self, data, address):
        self.sent.append(bytes(data))
        return self.sock.sendto(data, address)

    def recvfrom(self, size):
        return self.sock.recvfrom(size)

    def settimeout(self, timeout):
        self.sock.settimeout(timeout)


def run_sensor(config_path):
    import fw_unit

    with open(config_path) as f:
        config = json.load(f)
    sock = LoggingSocket()
    address = socket.getaddrinfo(config["host"], config["port"])[0][-1]
    client = coap.Client(
        sock,
        address,
        fw_unit.Seeded(config["seed"].encode()),
        ack_timeout_ms=config["ack_timeout_ms"],
        max_retransmit=config["max_retransmit"],
    )
    buffer = ring.FileRing(config["state"], config["capacity"], config.get("slot_size", 128))
    counters = counter.FileCounter(config["state"] + "/counter")
    driver = CountingDriver()
    start = config["start_time"]
    values = {}

    def now():
        return start + driver.taken

    def acked(message):
        print("acked " + str(values.pop(message)))

    sensor = Sensor(
        client,
        binascii_unhex(config["key"]),
        config["kid"].encode(),
        config["stream"],
        driver,
        buffer,
        counters,
        time_source=now,
        min_backoff_ms=config["min_backoff_ms"],
        max_backoff_ms=config["max_backoff_ms"],
        on_acked=acked,
    )
    for _ in range(config["count"]):
        started = clock.ticks_ms()
        value = driver.taken
        message = sensor.measure()
        values[message] = value
        if sensor.submit(message) == BUFFERED:
            print("buffered " + str(value))
        sensor.flush()
        wait = config["interval_ms"] - clock.ticks_diff(clock.ticks_ms(), started)
        if wait > 0:
            clock.sleep_ms(wait)
    deadline = clock.ticks_add(clock.ticks_ms(), config["drain_ms"])
    while len(buffer) and clock.ticks_diff(deadline, clock.ticks_ms()) > 0:
        sensor.flush()
        clock.sleep_ms(10)
    with open(config["log"], "w") as f:
        for datagram in sock.sent:
            f.write(hex_of(datagram) + "\n")
    stats = sensor.stats()
    if sensor.last_refusal is not None:
        stats["last_refusal"] = [sensor.last_refusal[0], sensor.last_refusal[1].decode()]
    print("stats " + json.dumps(stats))
    return 0


def binascii_unhex(text):
    import binascii

    return binascii.unhexlify(text)


def hex_of(data):
    import binascii

    return binascii.hexlify(data).decode()


def run_discover(timeout_ms):
    from lichen_sensor import mdns

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        found = mdns.discover(sock, os.urandom, timeout_ms)
    finally:
        sock.close()
    for host, port in found:
        print("agent " + host + " " + str(port))
    return 0 if found else 1


def run_main(rounds):
    import main as board

    sensor = board.build(board.load_config())
    sensor.run(0, rounds)
    print("stats " + json.dumps(sensor.stats()))
    return 0


def main(argv):
    if len(argv) != 3 or argv[1] not in ("unit", "sensor", "discover", "main"):
        print("usage: fw_run.py unit DIR | sensor CONFIG | discover TIMEOUT_MS | main ROUNDS")
        return 2
    if argv[1] == "main":
        return run_main(int(argv[2]))
    if argv[1] == "unit":
        return run_unit(argv[2])
    if argv[1] == "discover":
        return run_discover(int(argv[2]))
    return run_sensor(argv[2])


sys.exit(main(sys.argv))
