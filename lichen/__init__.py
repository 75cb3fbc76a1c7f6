"""Lichen's protocol core: sans-IO, pure and typed.

Identities, CBOR and COSE, SenML, content addresses, encryption, erasure coding, Merkle
proofs, shards and manifests, placement, proof checking and reward arithmetic. Nothing here
opens a socket, reads a clock or draws randomness: callers pass ``now`` and random bytes in,
so the same logic runs in the agent on a Pi and in a simulation of ten thousand nodes.
"""

__version__ = "0.1.0"
