"""Discrete-event replay of a cluster of vLLM-like LLM instances behind a router.

Pure Python + numpy. Entry point: ``simulate`` (``ReplayState`` for step-wise drivers and forks).
See docs/simulator.md for the semantics, the event order, the latency models and the decode
fast-forward.
"""

from training.simulator.config import ClusterConfig, InstanceConfig, QueuePolicy, RouterQueueOrder
from training.simulator.engine import ReplayState, RoutingError, replay, simulate
from training.simulator.latency import LatencyModel, LinearLatencyModel
from training.simulator.profiles import (
    PROFILE_NAMES,
    HardwareProfile,
    ProfileLatencyModel,
    default_instance_config,
    hardware_profile,
    load_latency_model,
)
from training.simulator.request import Request, RequestStatus
from training.simulator.result import SimResult

__all__ = [
    "PROFILE_NAMES",
    "ClusterConfig",
    "HardwareProfile",
    "InstanceConfig",
    "LatencyModel",
    "LinearLatencyModel",
    "ProfileLatencyModel",
    "QueuePolicy",
    "ReplayState",
    "Request",
    "RequestStatus",
    "RouterQueueOrder",
    "RoutingError",
    "SimResult",
    "default_instance_config",
    "hardware_profile",
    "load_latency_model",
    "replay",
    "simulate",
]
