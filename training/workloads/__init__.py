"""Workload building, in one place: the requests a replay or an RL episode is made of.

Modules, in import order (each imports only those before it):
``rows`` (canonical request rows, Arrow -> ``Request``), ``sources`` (requests read through the
warehouse: a published warehouse or trace files), ``catalog`` (``Workload``, ``WorkloadOptions``, the
registered workloads ``main`` / ``table2`` / ``azure`` / ``prefix`` and the trace and warehouse
workloads), ``synthetic`` (the benchmarks' seeded conversation trace), ``episodes`` (a training
setting -> its workload, cluster and ``EpisodeSampler`` over the training pool).

Below ``routing`` and ``rl`` in the order of ``training`` (see tests/test_import_layers.py): the
evaluation (``eval``) and the RL trainer both take their requests from here.
"""
