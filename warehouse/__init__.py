"""The DuckDB trace warehouse: raw → staging → marts, readers per trace format, idempotent ingest.

Public entry points: ``warehouse.ingest.ingest`` (load files), ``warehouse.store.connect_readonly``
(query), ``warehouse.analytics`` (summaries), ``warehouse.synthetic`` (a seeded Azure-like trace).
See docs/warehouse.md.
"""
