"""The paper's workload classes (``LL``, ``LH``, ``HL``, ``HH``): the one definition.

Jain et al., EuroMLSys'25 (arXiv 2408.13510), Section 3: a request is prefill-heavy (first letter
``H``) when its prompt's prefill, alone in one engine iteration, takes at least ``HEAVY_PREFILL_S``
seconds, and decode-heavy (second letter ``H``) when decoding its output alone on an idle instance
(one token per iteration, the context growing by one each time) takes at least ``HEAVY_DECODE_S``.

Who uses this, and how the times are obtained:

- the evaluation (``eval.harness.workload_classes``, once per held-out request of every evaluation):
  ``workload_class`` on the times of ``training.routing.estimates.prefill_s`` / ``isolated_decode_s``
  under the replayed profile's ``LatencyModel`` (any profile, linear or not);
- the warehouse (``marts.request_classes``, ``marts.workload_classes``, the pipeline's summary): the
  DuckDB macros of ``SQL``, rendered here from the same constants and rule and created by
  ``warehouse.store.apply_schema`` before the SQL files (``schema.sql`` seeds the shipped profiles'
  thresholds with ``marts.heavy_prefill_s()`` / ``marts.heavy_decode_s()``), on the times of the
  active row of ``marts.latency_profile`` (a linear profile: the closed forms below).

For a linear profile the two give the same times and classes, bit for bit
(``tests/test_workload_classes_agree.py``): prefill = ``base_s + s_per_prompt_token x prompt``
(0 for an empty prompt); decode = ``output x step_s + s_per_context_token x (output x prompt +
output (output - 1) / 2)`` with ``step_s`` = base + per-sequence cost (contexts prompt .. prompt +
output - 1, as ``isolated_decode_s``). Pure stdlib: any layer may import it.
"""

from __future__ import annotations

HEAVY_PREFILL_S = 0.5
"""A prompt is prefill-heavy when its prefill alone takes at least this long, s (paper, Section 3)."""
HEAVY_DECODE_S = 5.0
"""An output is decode-heavy when its decode alone (batch of one) takes at least this long, s."""
LIGHT, HEAVY = "L", "H"
CLASSES = tuple(p + d for p in (LIGHT, HEAVY) for d in (LIGHT, HEAVY))
"""``("LL", "LH", "HL", "HH")``: prefill letter first."""


def workload_class(
    prefill_s: float,
    decode_s: float,
    heavy_prefill_s: float = HEAVY_PREFILL_S,
    heavy_decode_s: float = HEAVY_DECODE_S,
) -> str:
    """The class of a request whose prefill alone takes ``prefill_s`` and decode alone ``decode_s``
    seconds: one of ``CLASSES`` (a time equal to its threshold is heavy)."""
    prefill = HEAVY if prefill_s >= heavy_prefill_s else LIGHT
    decode = HEAVY if decode_s >= heavy_decode_s else LIGHT
    return prefill + decode


def _letter_sql(seconds: str, threshold: str) -> str:
    return f"(CASE WHEN {seconds} >= {threshold} THEN '{HEAVY}' ELSE '{LIGHT}' END)"


SQL = f"""-- Rendered from warehouse/workload_class.py (the one definition); run before warehouse/sql/*.sql.
CREATE SCHEMA IF NOT EXISTS marts;
CREATE OR REPLACE MACRO marts.heavy_prefill_s() AS {HEAVY_PREFILL_S!r}::DOUBLE;
CREATE OR REPLACE MACRO marts.heavy_decode_s() AS {HEAVY_DECODE_S!r}::DOUBLE;
CREATE OR REPLACE MACRO marts.workload_class(prefill_s, decode_s, heavy_prefill_s, heavy_decode_s) AS
    {_letter_sql("prefill_s", "heavy_prefill_s")} || {_letter_sql("decode_s", "heavy_decode_s")};
CREATE OR REPLACE MACRO marts.prefill_s(prompt_tokens, base_s, s_per_prompt_token) AS
    CASE WHEN prompt_tokens > 0 THEN base_s + s_per_prompt_token * prompt_tokens::DOUBLE ELSE 0.0::DOUBLE END;
CREATE OR REPLACE MACRO marts.decode_alone_s(p, n, step_s, s_per_context_token) AS
    n * step_s + s_per_context_token * (n * p + n * (n - 1.0::DOUBLE) / 2.0::DOUBLE);
CREATE OR REPLACE MACRO marts.isolated_decode_s(prompt_tokens, output_tokens, step_s, per_context_s) AS
    marts.decode_alone_s(prompt_tokens::DOUBLE, greatest(output_tokens, 0)::DOUBLE, step_s, per_context_s);
"""
"""DuckDB macros of the warehouse: the thresholds, the rule, and the linear closed forms of the times
(``marts.prefill_s(prompt, base_s, s_per_prompt_token)``, ``marts.isolated_decode_s(prompt, output,
step_s, per_context_s)``, in s)."""
