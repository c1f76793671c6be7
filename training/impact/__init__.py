"""The workload impact estimator: iteration latency vs prefill/decode mix, and the mixing penalty.

``penalty`` is pure (routers and the RL reward import it); fitting from GPU profiles lives in its own
module so that importing the penalty stays cheap.
"""
