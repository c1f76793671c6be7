-- Staging: one view per source format over its raw table. Rename, cast (TRY_CAST: never fails),
-- and give each row a reject_reason (NULL = the row becomes a canonical request).
-- Every view has the same columns, in the same order:
--   file_id, line, record_index, raw_text, reject_reason, request_id, source, trace_id,
--   arrival_abs_s, arrival_ts, prompt_tokens, output_tokens, task, model, prompt_text,
--   prefix_hash_ids, status, sample_index, split
-- arrival_abs_s is in seconds on the source's own clock; marts.requests subtracts each trace's
-- first arrival (except for the canonical format, whose arrival_s is already relative).
-- Run by warehouse.store on every write session (CREATE OR REPLACE).

-- A whole number from text ('12', ' 12 ', '12.0', '1e3'); NULL for '12.5', 'x', 'nan', 'inf'.
-- (A bare TRY_CAST to BIGINT would round '12.5' to 13.)
CREATE OR REPLACE MACRO staging.to_int(x) AS
    CASE WHEN TRY_CAST(x AS DOUBLE) % 1 = 0 THEN TRY_CAST(x AS BIGINT) END;

-- Fast paths (measured on 1M-line files; the ingest benchmark in BENCHMARKS.md): trim() copies every
-- string (~0.2 s per 1M lines), so it is only called where it can matter. Same results as the
-- plain forms, which tests/warehouse/test_staging_fast.py checks on edge cases.
-- staging.is_blank(x) = (x IS NULL OR trim(x) = ''): trim removes spaces (ASCII and Unicode), so a
-- string whose first byte is printable ASCII other than a space ('!'..'~') is never blank.
-- (CASE, unlike OR, evaluates its ELSE only for the rows that reach it.)
CREATE OR REPLACE MACRO staging.is_blank(x) AS
    CASE WHEN x >= '!' AND x < chr(127) THEN false ELSE x IS NULL OR trim(x) = '' END;

-- TRY_CAST(trim(x) AS ...): the casts already skip ASCII spaces around a value, so trim only when
-- the plain cast fails (coalesce evaluates its second argument only for those rows).
CREATE OR REPLACE MACRO staging.try_timestamp(x) AS
    coalesce(TRY_CAST(x AS TIMESTAMP), TRY_CAST(trim(x) AS TIMESTAMP));
CREATE OR REPLACE MACRO staging.try_double(x) AS
    coalesce(TRY_CAST(x AS DOUBLE), TRY_CAST(trim(x) AS DOUBLE));

CREATE OR REPLACE MACRO staging.token_reason(p, o, failed_allowed) AS
    CASE
        WHEN p IS NULL THEN 'bad_prompt_tokens'
        WHEN o IS NULL THEN 'bad_output_tokens'
        WHEN p <= 0 THEN 'prompt_tokens_not_positive'
        WHEN o < 0 THEN 'output_tokens_negative'
        WHEN o = 0 AND NOT failed_allowed THEN 'output_tokens_zero'
    END;

-- Azure LLM inference trace 2023: TIMESTAMP,ContextTokens,GeneratedTokens
CREATE OR REPLACE VIEW staging.stg_azure AS
WITH s AS (
    SELECT r.file_id, r.line, r.text, f.field_pos AS p, f.n_fields AS nf, f.task AS file_task,
           string_split(r.text, ',') AS v
    FROM raw.azure AS r JOIN raw.files AS f USING (file_id)
    WHERE r.line > 1
), c AS (
    SELECT *, len(v) AS got,
           staging.try_timestamp(v[p[1]]) AS ts,
           staging.to_int(v[p[2]]) AS pt,
           staging.to_int(v[p[3]]) AS ot
    FROM s
), chk AS (
    SELECT *,
           CASE
               WHEN staging.is_blank(text) THEN 'empty_line'
               WHEN got <> nf THEN 'field_count: expected ' || nf || ', got ' || got
               WHEN ts IS NULL THEN 'bad_timestamp'
               ELSE staging.token_reason(pt, ot, false)
           END AS row_reason
    FROM c
)
SELECT file_id, line, NULL::INTEGER AS record_index, text AS raw_text,
       coalesce(row_reason, CASE WHEN ts < lag(ts IGNORE NULLS) OVER (PARTITION BY file_id ORDER BY line)
                                 THEN 'time_backwards' END) AS reject_reason,
       NULL::VARCHAR AS request_id, NULL::VARCHAR AS source, NULL::VARCHAR AS trace_id,
       epoch_us(ts) / 1e6 AS arrival_abs_s, ts AS arrival_ts,
       pt AS prompt_tokens, ot AS output_tokens, coalesce(file_task, 'unknown') AS task,
       NULL::VARCHAR AS model, NULL::VARCHAR AS prompt_text, NULL::BIGINT[] AS prefix_hash_ids,
       'ok' AS status, NULL::INTEGER AS sample_index, NULL::VARCHAR AS split
FROM chk;

-- BurstGPT: Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type
-- (Timestamp = seconds from the trace start; 0 response tokens = a failed request, kept as failed)
CREATE OR REPLACE VIEW staging.stg_burstgpt AS
WITH s AS (
    SELECT r.file_id, r.line, r.text, f.field_pos AS p, f.n_fields AS nf,
           string_split(r.text, ',') AS v
    FROM raw.burstgpt AS r JOIN raw.files AS f USING (file_id)
    WHERE r.line > 1
), c AS (
    SELECT *, len(v) AS got,
           staging.try_double(v[p[1]]) AS t,
           nullif(trim(v[p[2]]), '') AS model,
           staging.to_int(v[p[3]]) AS pt,
           staging.to_int(v[p[4]]) AS ot,
           lower(trim(v[p[6]])) AS log_type
    FROM s
), chk AS (
    SELECT *,
           CASE
               WHEN staging.is_blank(text) THEN 'empty_line'
               WHEN got <> nf THEN 'field_count: expected ' || nf || ', got ' || got
               WHEN t IS NULL OR isnan(t) OR isinf(t) THEN 'bad_timestamp'
               ELSE staging.token_reason(pt, ot, true)
           END AS row_reason
    FROM c
)
SELECT file_id, line, NULL::INTEGER AS record_index, text AS raw_text,
       coalesce(row_reason, CASE WHEN t < lag(t IGNORE NULLS) OVER (PARTITION BY file_id ORDER BY line)
                                 THEN 'time_backwards' END) AS reject_reason,
       NULL::VARCHAR AS request_id, NULL::VARCHAR AS source, NULL::VARCHAR AS trace_id,
       t AS arrival_abs_s, NULL::TIMESTAMP AS arrival_ts,
       pt AS prompt_tokens, ot AS output_tokens,
       CASE log_type WHEN 'conversation log' THEN 'conv' WHEN 'api log' THEN 'api'
                     WHEN '' THEN 'unknown' ELSE coalesce(log_type, 'unknown') END AS task,
       model, NULL::VARCHAR AS prompt_text, NULL::BIGINT[] AS prefix_hash_ids,
       CASE WHEN ot = 0 THEN 'failed' ELSE 'ok' END AS status,
       NULL::INTEGER AS sample_index, NULL::VARCHAR AS split
FROM chk;

-- Vidur / Splitwise processed traces: arrived_at,num_prefill_tokens,num_decode_tokens (seconds)
CREATE OR REPLACE VIEW staging.stg_vidur AS
WITH s AS (
    SELECT r.file_id, r.line, r.text, f.field_pos AS p, f.n_fields AS nf, f.task AS file_task,
           string_split(r.text, ',') AS v
    FROM raw.vidur AS r JOIN raw.files AS f USING (file_id)
    WHERE r.line > 1
), c AS (
    SELECT *, len(v) AS got,
           staging.try_double(v[p[1]]) AS t,
           staging.to_int(v[p[2]]) AS pt,
           staging.to_int(v[p[3]]) AS ot
    FROM s
), chk AS (
    SELECT *,
           CASE
               WHEN staging.is_blank(text) THEN 'empty_line'
               WHEN got <> nf THEN 'field_count: expected ' || nf || ', got ' || got
               WHEN t IS NULL OR isnan(t) OR isinf(t) THEN 'bad_timestamp'
               ELSE staging.token_reason(pt, ot, false)
           END AS row_reason
    FROM c
)
SELECT file_id, line, NULL::INTEGER AS record_index, text AS raw_text,
       coalesce(row_reason, CASE WHEN t < lag(t IGNORE NULLS) OVER (PARTITION BY file_id ORDER BY line)
                                 THEN 'time_backwards' END) AS reject_reason,
       NULL::VARCHAR AS request_id, NULL::VARCHAR AS source, NULL::VARCHAR AS trace_id,
       t AS arrival_abs_s, NULL::TIMESTAMP AS arrival_ts,
       pt AS prompt_tokens, ot AS output_tokens, coalesce(file_task, 'unknown') AS task,
       NULL::VARCHAR AS model, NULL::VARCHAR AS prompt_text, NULL::BIGINT[] AS prefix_hash_ids,
       'ok' AS status, NULL::INTEGER AS sample_index, NULL::VARCHAR AS split
FROM chk;

-- Mooncake JSONL: {"timestamp": ms, "input_length", "output_length", "hash_ids": [...]}
CREATE OR REPLACE VIEW staging.stg_mooncake AS
WITH s AS (
    SELECT r.file_id, r.line, r.text, f.task AS file_task,
           CASE WHEN json_valid(r.text) AND json_type(r.text) = 'OBJECT' THEN r.text::JSON END AS j
    FROM raw.mooncake AS r JOIN raw.files AS f USING (file_id)
), c AS (
    SELECT *,
           TRY_CAST(j ->> 'timestamp' AS DOUBLE) AS t_ms,
           staging.to_int(j ->> 'input_length') AS pt,
           staging.to_int(j ->> 'output_length') AS ot,
           j -> 'hash_ids' AS hj,
           TRY_CAST(j -> 'hash_ids' AS BIGINT[]) AS hashes
    FROM s
), chk AS (
    SELECT *,
           CASE
               WHEN staging.is_blank(text) THEN 'empty_line'
               WHEN j IS NULL THEN 'invalid_json'
               WHEN t_ms IS NULL OR isnan(t_ms) OR isinf(t_ms) THEN 'bad_timestamp'
               WHEN staging.token_reason(pt, ot, false) IS NOT NULL THEN staging.token_reason(pt, ot, false)
               WHEN hj IS NOT NULL AND json_type(hj) <> 'NULL' AND hashes IS NULL THEN 'bad_hash_ids'
           END AS row_reason
    FROM c
)
SELECT file_id, line, NULL::INTEGER AS record_index, text AS raw_text,
       coalesce(row_reason, CASE WHEN t_ms < lag(t_ms IGNORE NULLS) OVER (PARTITION BY file_id ORDER BY line)
                                 THEN 'time_backwards' END) AS reject_reason,
       NULL::VARCHAR AS request_id, NULL::VARCHAR AS source, NULL::VARCHAR AS trace_id,
       t_ms / 1000.0 AS arrival_abs_s, NULL::TIMESTAMP AS arrival_ts,
       pt AS prompt_tokens, ot AS output_tokens, coalesce(file_task, 'unknown') AS task,
       NULL::VARCHAR AS model, NULL::VARCHAR AS prompt_text, hashes AS prefix_hash_ids,
       'ok' AS status, NULL::INTEGER AS sample_index, NULL::VARCHAR AS split
FROM chk;

-- OpenTelemetry GenAI spans (flattened by the reader): start time in ns since the Unix epoch.
CREATE OR REPLACE VIEW staging.stg_otel AS
WITH c AS (
    SELECT r.*, TRY_CAST(trim(r.start_ns) AS HUGEINT) AS t_ns,
           staging.to_int(r.input_tokens) AS pt, staging.to_int(r.output_tokens) AS ot
    FROM raw.otel AS r
)
SELECT file_id, line, span_index AS record_index, text AS raw_text,
       CASE
           WHEN parse_error IS NOT NULL THEN parse_error
           WHEN t_ns IS NULL THEN 'bad_timestamp'
           ELSE staging.token_reason(pt, ot, false)
       END AS reject_reason,
       NULL::VARCHAR AS request_id, NULL::VARCHAR AS source, NULL::VARCHAR AS trace_id,
       t_ns / 1e9 AS arrival_abs_s, make_timestamp((t_ns // 1000)::BIGINT) AS arrival_ts,
       pt AS prompt_tokens, ot AS output_tokens, coalesce(operation, 'unknown') AS task,
       model, NULL::VARCHAR AS prompt_text, NULL::BIGINT[] AS prefix_hash_ids,
       'ok' AS status, NULL::INTEGER AS sample_index, NULL::VARCHAR AS split
FROM c;

-- CASTILLO: one row per (prompt, model, sample) from output_sizes (10 generations per row).
CREATE OR REPLACE VIEW staging.stg_castillo AS
WITH u AS (
    SELECT r.*,
           unnest(CASE WHEN output_sizes IS NULL OR len(output_sizes) = 0 THEN [NULL::BIGINT]
                       ELSE range(len(output_sizes)) END) AS si
    FROM raw.castillo AS r
), c AS (
    SELECT *, output_sizes[si + 1] AS ot FROM u
)
SELECT file_id, line, si::INTEGER AS record_index,
       to_json(struct_pack(sample_id, prompt_id, model, dataset, category, input_size, output_sizes,
                           split))::VARCHAR AS raw_text,
       CASE
           WHEN si IS NULL THEN 'missing_output_sizes'
           ELSE staging.token_reason(input_size, ot, false)
       END AS reject_reason,
       NULL::VARCHAR AS request_id, NULL::VARCHAR AS source, NULL::VARCHAR AS trace_id,
       0.0::DOUBLE AS arrival_abs_s, NULL::TIMESTAMP AS arrival_ts,
       input_size AS prompt_tokens, ot AS output_tokens,
       CASE WHEN dataset = 'DollyDataset' THEN dataset || '/' || coalesce(category, 'undefined')
            ELSE coalesce(dataset, 'unknown') END AS task,
       model, prompt_text, NULL::BIGINT[] AS prefix_hash_ids,
       'ok' AS status, si::INTEGER AS sample_index, split
FROM c;

-- AlpacaEval outputs: Llama-2 token counts of instruction and output, generator = model.
CREATE OR REPLACE VIEW staging.stg_alpaca_eval AS
SELECT file_id, line, NULL::INTEGER AS record_index,
       to_json(struct_pack(idx, generator, dataset, instruction_tokens_llama2,
                           output_tokens_llama2))::VARCHAR AS raw_text,
       staging.token_reason(instruction_tokens_llama2, output_tokens_llama2, false) AS reject_reason,
       NULL::VARCHAR AS request_id, NULL::VARCHAR AS source, NULL::VARCHAR AS trace_id,
       0.0::DOUBLE AS arrival_abs_s, NULL::TIMESTAMP AS arrival_ts,
       instruction_tokens_llama2 AS prompt_tokens, output_tokens_llama2 AS output_tokens,
       coalesce(dataset, 'unknown') AS task, generator AS model, instruction AS prompt_text,
       NULL::BIGINT[] AS prefix_hash_ids, 'ok' AS status, NULL::INTEGER AS sample_index,
       NULL::VARCHAR AS split
FROM raw.alpaca_eval;

-- Dolly: no token counts upstream. Approximation: ceil(1.3 x whitespace-separated words);
-- prompt = instruction + context, output = response. Responses are human-written (model 'human').
CREATE OR REPLACE MACRO staging.approx_tokens(x) AS
    CASE WHEN x IS NULL OR trim(x) = '' THEN 0
         ELSE ceil(1.3 * len(regexp_split_to_array(trim(x), '\s+')))::BIGINT END;

CREATE OR REPLACE VIEW staging.stg_dolly AS
WITH c AS (
    SELECT r.*,
           staging.approx_tokens(concat_ws(' ', instruction, context)) AS pt,
           staging.approx_tokens(response) AS ot
    FROM raw.dolly AS r
)
SELECT file_id, line, NULL::INTEGER AS record_index,
       to_json(struct_pack(instruction, context, response, category))::VARCHAR AS raw_text,
       staging.token_reason(pt, ot, false) AS reject_reason,
       NULL::VARCHAR AS request_id, NULL::VARCHAR AS source, NULL::VARCHAR AS trace_id,
       0.0::DOUBLE AS arrival_abs_s, NULL::TIMESTAMP AS arrival_ts,
       pt AS prompt_tokens, ot AS output_tokens, coalesce(nullif(category, ''), 'unknown') AS task,
       'human' AS model,
       CASE WHEN context IS NULL OR trim(context) = '' THEN instruction
            ELSE instruction || chr(10) || chr(10) || context END AS prompt_text,
       NULL::BIGINT[] AS prefix_hash_ids, 'ok' AS status, NULL::INTEGER AS sample_index,
       NULL::VARCHAR AS split
FROM c;

-- The canonical schema itself: values arrive as text and are cast here.
CREATE OR REPLACE VIEW staging.stg_canonical AS
WITH c AS (
    SELECT r.*,
           staging.try_double(r.arrival_s) AS t,
           staging.to_int(r.prompt_tokens) AS pt,
           staging.to_int(r.output_tokens) AS ot,
           coalesce(nullif(trim(r.status), ''), 'ok') AS st,
           TRY_CAST(nullif(trim(r.prefix_hash_ids), '') AS BIGINT[]) AS hashes,
           TRY_CAST(nullif(trim(r.sample_index), '') AS INTEGER) AS si,
           TRY_CAST(nullif(trim(r.arrival_ts), '') AS TIMESTAMP) AS ts
    FROM raw.canonical AS r
)
SELECT file_id, line, NULL::INTEGER AS record_index, coalesce(text, to_json(struct_pack(
           request_id, source, trace_id, arrival_s, prompt_tokens, output_tokens, task, model,
           prefix_hash_ids, status, sample_index, split, arrival_ts))::VARCHAR) AS raw_text,
       CASE
           WHEN text IS NOT NULL AND staging.is_blank(text) THEN 'empty_line'
           WHEN text IS NOT NULL AND NOT (json_valid(text) AND json_type(text) = 'OBJECT') THEN 'invalid_json'
           WHEN t IS NULL OR isnan(t) OR isinf(t) THEN 'bad_arrival_s'
           WHEN t < 0 THEN 'arrival_s_negative'
           WHEN st NOT IN ('ok', 'failed') THEN 'bad_status'
           WHEN staging.token_reason(pt, ot, st = 'failed') IS NOT NULL
               THEN staging.token_reason(pt, ot, st = 'failed')
           WHEN nullif(trim(prefix_hash_ids), '') IS NOT NULL AND hashes IS NULL THEN 'bad_prefix_hash_ids'
           WHEN nullif(trim(sample_index), '') IS NOT NULL AND si IS NULL THEN 'bad_sample_index'
           WHEN nullif(trim(arrival_ts), '') IS NOT NULL AND ts IS NULL THEN 'bad_arrival_ts'
       END AS reject_reason,
       nullif(trim(request_id), '') AS request_id, nullif(trim(source), '') AS source,
       nullif(trim(trace_id), '') AS trace_id,
       t AS arrival_abs_s, ts AS arrival_ts, pt AS prompt_tokens, ot AS output_tokens,
       coalesce(nullif(trim(task), ''), 'unknown') AS task, nullif(model, '') AS model, prompt_text,
       hashes AS prefix_hash_ids, st AS status, si AS sample_index, nullif(trim(split), '') AS split
FROM c;
