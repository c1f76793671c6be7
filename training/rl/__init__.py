"""The learned (RL) router: the gymnasium env (``loadwise/Router-v0``), its rewards and observation
builder, the training config and loop (stable-baselines3), the harness adapter, the self-contained
serving code and the env benchmark.

Modules, in import order (each imports only those before it; tests/test_import_layers.py checks it):

1. ``policy_serving``: snapshot schema, THE observation encoder, the numpy policy, the pyfunc.
   Imports nothing of the project (the ``llm-router`` model's code).
2. ``rewards``: the paper's reward as named components, ``RewardConfig``.
3. ``observation``: router views -> the serving snapshot (``SnapshotBuilder``), reward inputs.
4. ``env``: ``RouterEnv`` and its gymnasium registration.
5. ``config``: ``RouterTrainConfig``.
6. ``algos``: masked Double DQN (torch, stable-baselines3).
7. ``train``: ``train_router`` -> ``TrainedRouter`` (imports ``algos`` and sb3 only when training).
8. ``distill``: ``distill_router`` -> ``TrainedRouter`` (the lookahead teacher imitated: behaviour
   cloning, then DAgger; issue 17).
9. ``router``: ``LearnedRouter``, the exported policy behind the Router protocol (registered lazily
   as ``rl``).
10. ``bench``: ``run_env_benchmark`` (``loadwise bench env``).

Importing the package or ``env`` / ``router`` imports no torch and does not load the router
registry's built-ins: the admission rule they share with the ``+hold`` routers is
``training.routing.admission_rule``, not ``admission`` (which loads them all to wrap them). The
observation builder's ``latency_aware`` import registers that module's routers only;
``router_names`` lists the built-ins in one fixed order whatever a process imported first.
"""
