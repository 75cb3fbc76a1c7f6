"""The hub's Prometheus metrics, in a registry of its own, served at ``/metrics``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class HubMetrics:
    """Every figure the hub exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.messages = Counter(
            "lichen_hub_messages", "Agent messages accepted, by topic", ["topic"], registry=r
        )
        self.refused = Counter(
            "lichen_hub_refused", "Agent messages refused, by reason", ["reason"], registry=r
        )
        self.proofs = Counter(
            "lichen_hub_proofs", "Proof items judged, by outcome", ["outcome"], registry=r
        )
        self.epochs = Counter("lichen_hub_epochs", "Epochs closed", registry=r)
        self.rewards_paid = Counter("lichen_hub_rewards_paid", "Reward units paid", registry=r)
        self.repairs = Counter(
            "lichen_hub_repairs", "Repairs ordered, done or failed", ["state"], registry=r
        )
        self.readings = Counter(
            "lichen_hub_readings", "Stream readings stored from agents' reports", registry=r
        )
