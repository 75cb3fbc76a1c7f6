"""Simulations of Lichen meshes on the in-memory network, and emulated deployments."""
