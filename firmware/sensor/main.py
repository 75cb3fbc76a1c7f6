"""Board entry point: MicroPython runs ``main.py`` after boot.

Reads ``lichen.json`` (printed by ``lichen sensor add``), joins the Wi-Fi network, sets the
clock by NTP, finds the agent (the configured address, or mDNS when it is empty), then
measures every ``interval_s`` seconds forever. State that must survive a reboot (the message
counter and the buffer of unsent readings) lives under ``lichen_state/`` on flash.
"""

import binascii
import json
import os
import socket

from lichen_sensor import clock, coap, counter, drivers, mdns, ring
from lichen_sensor.client import Sensor

CONFIG_FILE = "lichen.json"
STATE_DIR = "lichen_state"
DEFAULT_PORT = 5683  # RFC 7252 section 6.1
WIFI_TIMEOUT_MS = 20000


def log(text):
    print("lichen:", text)


def load_config(path=CONFIG_FILE):
    with open(path) as f:
        return json.load(f)


def connect_wifi(wifi):
    """Join the network named in the config; a board already online (or the unix port) skips."""
    if not wifi or not wifi.get("ssid"):
        return
    import network

    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if not wlan.isconnected():
        wlan.connect(wifi["ssid"], wifi.get("password", ""))
        started = clock.ticks_ms()
        while not wlan.isconnected():
            if clock.ticks_diff(clock.ticks_ms(), started) > WIFI_TIMEOUT_MS:
                raise OSError("Wi-Fi network %s did not answer" % wifi["ssid"])
            clock.sleep_ms(200)
    log("on the network as " + wlan.ifconfig()[0])


def set_clock():
    """NTP, where the port has it: readings carry absolute times only with a set clock."""
    try:
        import ntptime

        ntptime.settime()
        log("clock set by NTP")
    except Exception as exc:  # no ntptime module, or no NTP server reachable
        log("clock not set (%s): readings are timed on arrival at the agent" % exc)


def agent_address(config):
    """The agent's socket address: from ``"agent": "host:port"``, or found by mDNS."""
    agent = config.get("agent", "")
    if agent:
        host, port = agent, DEFAULT_PORT
        if agent.count(":") == 1:
            host, port = agent.split(":")
            port = int(port)
    else:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            found = mdns.discover(probe, os.urandom)
        finally:
            probe.close()
        if not found:
            raise OSError('no agent answered on mDNS; set "agent" in ' + CONFIG_FILE)
        host, port = found[0]
    log("agent at %s port %d" % (host, port))
    return socket.getaddrinfo(host, port)[0][-1]


def make_state_dir():
    try:
        os.mkdir(STATE_DIR)
    except OSError:
        pass  # already there


def build(config):
    """The sensor a config describes."""
    make_state_dir()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = coap.Client(
        sock,
        agent_address(config),
        os.urandom,
        ack_timeout_ms=config.get("ack_timeout_ms", coap.ACK_TIMEOUT_MS),
        max_retransmit=config.get("max_retransmit", coap.MAX_RETRANSMIT),
    )
    return Sensor(
        client,
        binascii.unhexlify(config["key"]),
        config["kid"].encode(),
        config["stream"],
        drivers.from_config(config),
        ring.FileRing(STATE_DIR, config.get("buffer", 500), config.get("slot_size", 256)),
        counter.FileCounter(STATE_DIR + "/counter"),
        log=log,
    )


def main():
    config = load_config()
    connect_wifi(config.get("wifi"))
    set_clock()
    sensor = build(config)
    log(
        "sensor %s writing to stream %s every %d s"
        % (config["kid"], config["stream"], config.get("interval_s", 60))
    )
    sensor.run(int(config.get("interval_s", 60) * 1000))


if __name__ == "__main__":
    main()
