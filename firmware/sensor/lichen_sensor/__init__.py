"""Lichen sensor client for MicroPython (and CPython): readings to a Lichen agent over CoAP.

Modules, one job each: ``cbor`` (deterministic encoding), ``hmac256`` (HMAC-SHA-256),
``cose`` (COSE_Mac0), ``senml`` (SenML+CBOR packs), ``coap`` (CoAP over UDP), ``ring``
(the bounded buffer for readings no agent took yet), ``counter`` (the message counter kept
on flash), ``drivers`` (what reads a sensor), ``mdns`` (finding an agent) and ``client``
(the loop that ties them together). Written for the MicroPython subset: no dataclasses,
no typing at run time, no f-strings; I/O goes through injected socket-like objects.
"""

VERSION = "0.1.0"
