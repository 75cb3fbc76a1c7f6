"""The Lichen edge agent: asyncio adapters (CoAP, mDNS, MQTT, disk) around the core."""
