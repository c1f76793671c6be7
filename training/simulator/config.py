"""Typed, frozen configuration of the simulated cluster (``ClusterConfig``) and of each instance.

Who uses this: the eval harness and the RL env build one ``ClusterConfig`` per replay and pass it to
``simulate``. Constructors have no side effects; ``InstanceConfig.from_hardware`` only does
arithmetic. Units: tokens, KV blocks (``block_size`` tokens each), seconds of simulated time, GiB.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

GIB = 1024**3


class QueuePolicy(enum.Enum):
    """Order in which an instance admits its waiting queue (paper, Table 2).

    Preempted requests always go first (vLLM puts them back at the front); the policy orders the rest.
    Ties are broken by the order in which requests were routed to the instance.

    - ``FCFS``: first routed, first admitted (vLLM's default).
    - ``LWL``: least work left: fewest *predicted* decode tokens first (shortest-job-first flavour).
    - ``BINPACK``: most predicted decode tokens first (packs long decodes together).
    """

    FCFS = "fcfs"
    LWL = "lwl"
    BINPACK = "binpack"


class RouterQueueOrder(enum.Enum):
    """Order in which the router offers the requests it holds (after ``DELAY``) at a decision tick.

    - ``ARRIVAL``: first arrived, first offered (the default).
    - ``SHORTEST``: least *predicted* output tokens first, aged: a request's rank is its predicted
      output tokens minus ``ClusterConfig.router_queue_aging_tokens_per_s`` x the seconds it has been
      held, so every held request eventually comes first (no starvation). Ties: arrival order.
    """

    ARRIVAL = "arrival"
    SHORTEST = "shortest"


@dataclass(frozen=True, slots=True)
class InstanceConfig:
    """One vLLM-like engine instance.

    Attributes:
        max_batch_size: most requests in the running batch (vLLM ``max_num_seqs``).
        max_batched_tokens: token budget of one iteration, prefill tokens plus one per decode (vLLM
            ``max_num_batched_tokens``). Without chunked prefill a prompt longer than the budget is
            still admitted, as the only prefill of its iteration (decodes may share it), so that no
            request starves; with chunked prefill prompts are split to fit.
        kv_blocks: KV-cache capacity in blocks of ``block_size`` tokens. ``None`` means unbounded (a
            large sentinel); use ``from_hardware`` to derive it from GPU memory.
        block_size: tokens per KV block (vLLM default 16). A request holds ceil(context / block_size).
        chunked_prefill_tokens: Sarathi-Serve chunk size, or ``None`` for no chunked prefill. When set,
            every iteration's token budget is min(max_batched_tokens, chunked_prefill_tokens),
            decodes included, and prefills are split into chunks that fit what is left of it.
        queue_policy: order of admission from the waiting queue.
        prefix_caching: reuse cached prefix blocks of requests that carry ``prefix_hash_ids``.
        prefix_block_tokens: tokens per prefix hash block (Mooncake: 512); a multiple of block_size.
        max_waiting: when the waiting queue holds this many requests the instance reports
            ``accepting=False`` to the router; ``None`` = no limit.
    """

    max_batch_size: int = 256
    max_batched_tokens: int = 8192
    kv_blocks: int | None = None
    block_size: int = 16
    chunked_prefill_tokens: int | None = None
    queue_policy: QueuePolicy = QueuePolicy.FCFS
    prefix_caching: bool = True
    prefix_block_tokens: int = 512
    max_waiting: int | None = None

    UNBOUNDED_KV_BLOCKS = 1 << 40

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.max_batched_tokens < 1:
            raise ValueError(f"max_batched_tokens must be >= 1, got {self.max_batched_tokens}")
        if self.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {self.block_size}")
        if self.kv_blocks is not None and self.kv_blocks < 1:
            raise ValueError(f"kv_blocks must be >= 1 or None, got {self.kv_blocks}")
        if self.chunked_prefill_tokens is not None and self.chunked_prefill_tokens < 1:
            raise ValueError(
                f"chunked_prefill_tokens must be >= 1 or None, got {self.chunked_prefill_tokens}"
            )
        if self.prefix_block_tokens < self.block_size or self.prefix_block_tokens % self.block_size:
            raise ValueError(
                f"prefix_block_tokens ({self.prefix_block_tokens}) must be a multiple of block_size "
                f"({self.block_size})"
            )
        if self.max_waiting is not None and self.max_waiting < 1:
            raise ValueError(f"max_waiting must be >= 1 or None, got {self.max_waiting}")
        if not isinstance(self.queue_policy, QueuePolicy):
            object.__setattr__(self, "queue_policy", QueuePolicy(self.queue_policy))

    @property
    def total_kv_blocks(self) -> int:
        return self.UNBOUNDED_KV_BLOCKS if self.kv_blocks is None else self.kv_blocks

    @property
    def token_budget(self) -> int:
        """Tokens one iteration may process (prefill tokens + one per decoding request)."""
        if self.chunked_prefill_tokens is None:
            return self.max_batched_tokens
        return min(self.max_batched_tokens, self.chunked_prefill_tokens)

    @classmethod
    def from_hardware(
        cls,
        gpu_mem_gib: float,
        model_params_b: float,
        kv_bytes_per_token: int,
        gpu_memory_utilization: float = 0.9,
        block_size: int = 16,
        bytes_per_param: int = 2,
        **overrides,
    ) -> InstanceConfig:
        """KV capacity as vLLM sizes it: (utilization * GPU memory - fp16 weights) / bytes per block.

        Activations and CUDA graphs are ignored (they take a few % more in vLLM); documented in
        docs/simulator.md. Raises ValueError when the weights do not fit.
        """
        free_bytes = gpu_memory_utilization * gpu_mem_gib * GIB - model_params_b * 1e9 * bytes_per_param
        blocks = math.floor(free_bytes / (kv_bytes_per_token * block_size))
        if blocks < 1:
            raise ValueError(
                f"model weights ({model_params_b} B params) leave no KV memory on a {gpu_mem_gib} GiB GPU"
            )
        return cls(kv_blocks=blocks, block_size=block_size, **overrides)


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """m identical instances of one model behind one router.

    Attributes:
        num_instances: m >= 1.
        instance: the configuration shared by every instance.
        decision_interval_s: the router's action interval: a request the router ``DELAY``s is
            offered again at the next tick; ticks run every ``decision_interval_s`` while any request
            is held at the router (the paper's 0.02 s).
        max_router_wait_s: optional cap on a request's wait at the router. When a held request has
            waited at least this long and the router still returns ``DELAY``, the simulator places it
            itself on the accepting instance with the fewest requests (running + waiting; lowest index
            on ties). If no instance is accepting it keeps waiting. ``None``: no cap.
        request_stats: opt-in (the RL env sets it): every ``InstanceView`` also carries
            ``request_stats``, one ``(prompt_tokens, predicted_output_tokens, generated_tokens,
            decoding)`` tuple per request on the instance (what a proxying router knows per request:
            what it sent and how many tokens it has streamed back). Off by default: it costs one
            tuple per co-resident request per decision.
        router_queue_order: which held request the router is offered first at a tick
            (``RouterQueueOrder``; ``ARRIVAL`` by default). Only routers that hold requests (``+hold``,
            a learned policy with DELAY) are affected.
        router_queue_aging_tokens_per_s: ``SHORTEST``'s aging: predicted tokens a held request's rank
            drops per second held (> 0).
    """

    num_instances: int
    instance: InstanceConfig = field(default_factory=InstanceConfig)
    decision_interval_s: float = 0.02
    max_router_wait_s: float | None = None
    request_stats: bool = False
    router_queue_order: RouterQueueOrder = RouterQueueOrder.ARRIVAL
    router_queue_aging_tokens_per_s: float = 100.0

    def __post_init__(self) -> None:
        if self.num_instances < 1:
            raise ValueError(f"num_instances must be >= 1, got {self.num_instances}")
        if not self.decision_interval_s > 0:
            raise ValueError(f"decision_interval_s must be > 0, got {self.decision_interval_s}")
        if self.max_router_wait_s is not None and self.max_router_wait_s < 0:
            raise ValueError(f"max_router_wait_s must be >= 0 or None, got {self.max_router_wait_s}")
        if not self.router_queue_aging_tokens_per_s > 0:
            raise ValueError(
                f"router_queue_aging_tokens_per_s must be > 0, got {self.router_queue_aging_tokens_per_s}"
            )
