"""The Lichen community hub: control plane, proofs, rewards, repair, API and dashboard."""
