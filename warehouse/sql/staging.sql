-- Staging: one view per source format over its raw table (a table macro over the file's lines for
-- the line formats, below). Rename, cast (TRY_CAST: never fails), and give each row a reject_reason
-- (NULL = the row becomes a canonical request). Every view and macro has the same columns, in order:
--   file_id, line, record_index, raw_text, reject_reason, request_id, source, trace_id,
--   arrival_abs_s, arrival_ts, prompt_tokens, output_tokens, task, model, prompt_text,
--   prefix_hash_ids, status, sample_index, split
-- arrival_abs_s is in seconds on the source's own clock; marts.requests subtracts each trace's
-- first accepted arrival (except for the canonical format, whose arrival_s is already relative).
-- The first check of every view is the reader's parse_error (a line that is not UTF-8, holds a NUL
-- byte, is too long, is not JSON, a CSV record with the wrong field count...: warehouse/lines.py,
-- warehouse/ingest.py), so a row the reader could not read is never parsed further.
-- Run by warehouse.store on every write session (CREATE OR REPLACE).
-- The line formats (Azure, BurstGPT, Vidur, Mooncake) are table macros staging.stg_<format>_lines(t),
-- not views: their raw layer is the source file itself (registered in raw.files by its hash), so a
-- load passes the lines it reads from the file (warehouse/ingest.py: _open_lines) as t, with columns
-- (file_id, line, text, parse_error, field_pos, n_fields, task): ONE file's lines IN LINE ORDER,
-- each with its file's constants (raw.files.field_pos, n_fields, task). The order is what the
-- time_backwards running max relies on (below). Their views over raw.<format> are dropped: those
-- tables only hold lines of files loaded before (issue 16), which no load stages again.
DROP VIEW IF EXISTS staging.stg_azure;
DROP VIEW IF EXISTS staging.stg_burstgpt;
DROP VIEW IF EXISTS staging.stg_vidur;
DROP VIEW IF EXISTS staging.stg_mooncake;

-- Plausible values: the ONE definition of the range each stored value must fall in, used by every
-- format's view below (docs/warehouse.md, "Plausible values", lists them with their reasons). A
-- value outside its range is quarantined with the reason given in the *_reason macros below, never
-- stored, so one outlier cannot shift or cut a whole trace.
--   tokens (prompt, output): whole numbers, 1 .. max_tokens() (output 0 only for a failed request).
--     10 M is 5x the longest context window of 2025 models (2 M): a larger count is a corrupt value.
--   absolute arrivals (Azure TIMESTAMP, OTel startTimeUnixNano, canonical arrival_ts):
--     min_arrival_ts() <= ts < max_arrival_ts(): years 2000 .. 2099 ('infinity', years 0001 or 9999,
--     a start time of -1 ns or >= 2^63 ns are out).
--   arrivals on a source's own clock, in seconds (BurstGPT Timestamp, Vidur arrived_at, Mooncake
--     timestamp / 1000, canonical arrival_s): 0 <= t < max_clock_s(), the Unix time of 2100-01-01,
--     so clocks that start at 0 and Unix-epoch clocks both fit (-1e300, 1e308, NaN, inf are out).
CREATE OR REPLACE MACRO staging.max_tokens() AS 10000000::BIGINT;
CREATE OR REPLACE MACRO staging.min_arrival_ts() AS TIMESTAMP '2000-01-01 00:00:00';
CREATE OR REPLACE MACRO staging.max_arrival_ts() AS TIMESTAMP '2100-01-01 00:00:00';
CREATE OR REPLACE MACRO staging.max_clock_s() AS 4102444800.0::DOUBLE;

-- A whole number from text ('12', ' 12 ', '12.0', '1e3'); NULL for '12.5', 'x', 'nan', 'inf'.
-- (A bare TRY_CAST to BIGINT would round '12.5' to 13.) Exact for every value up to 2^53, so for
-- every token count in range. Numbers read from Parquet reach it as text too (raw.castillo,
-- raw.alpaca_eval keep them as text), so 12.5, NaN or 'x' there get the same answer as in a CSV.
-- The whole-number test is trunc(d) = d, not d % 1 = 0 (fmod; ~40 % slower per value): the same
-- for every finite d, and for NaN / inf (where only the first holds) TRY_CAST(x AS BIGINT) is NULL
-- anyway (tests/warehouse/test_staging_fast.py compares the two on edge cases).
CREATE OR REPLACE MACRO staging.to_int(x) AS
    CASE WHEN trunc(TRY_CAST(x AS DOUBLE)) = TRY_CAST(x AS DOUBLE) THEN TRY_CAST(x AS BIGINT) END;

-- A list of whole numbers from a list of text elements (prefix hash ids): NULL when an element is
-- NULL or not an integer literal ('7' or '7.0'; '1.5' is not rounded, 'a' does not become NULL:
-- a regex, not a DOUBLE test, since ids use all 64 bits); an element beyond BIGINT becomes NULL.
-- staging.bad_int_list flags both.
CREATE OR REPLACE MACRO staging.int_list(v) AS
    CASE WHEN len(list_filter(v, lambda e: e IS NULL OR NOT regexp_full_match(e, '\s*-?[0-9]+(\.0*)?\s*'))) = 0
         THEN list_transform(v, lambda e: TRY_CAST(e AS BIGINT)) END;
CREATE OR REPLACE MACRO staging.bad_int_list(h) AS h IS NULL OR list_count(h) <> len(h);

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

-- The reasons of the plausible ranges (NULL = the value is fine).
CREATE OR REPLACE MACRO staging.ts_reason(ts) AS
    CASE
        WHEN ts IS NULL THEN 'bad_timestamp'
        WHEN NOT (ts >= staging.min_arrival_ts() AND ts < staging.max_arrival_ts())
            THEN 'timestamp_out_of_range'
    END;
CREATE OR REPLACE MACRO staging.clock_reason(t) AS
    CASE
        WHEN t IS NULL OR isnan(t) OR isinf(t) THEN 'bad_timestamp'
        WHEN NOT (t >= 0 AND t < staging.max_clock_s()) THEN 'timestamp_out_of_range'
    END;
CREATE OR REPLACE MACRO staging.token_reason(p, o, failed_allowed) AS
    CASE
        WHEN p IS NULL THEN 'bad_prompt_tokens'
        WHEN o IS NULL THEN 'bad_output_tokens'
        WHEN p <= 0 THEN 'prompt_tokens_not_positive'
        WHEN p > staging.max_tokens() THEN 'prompt_tokens_too_large'
        WHEN o < 0 THEN 'output_tokens_negative'
        WHEN o > staging.max_tokens() THEN 'output_tokens_too_large'
        WHEN o = 0 AND NOT failed_allowed THEN 'output_tokens_zero'
    END;

-- time_backwards (trace formats: Azure, BurstGPT, Vidur, Mooncake): a row is accepted only when its
-- arrival is >= that of the last ACCEPTED row before it (sequential acceptance: a bad row -- NaN,
-- unparsable, out of range -- never rejects the good row after it). Written as a running max over
-- the rows that pass every other check ("valid"), which is the same thing: by induction over the
-- lines, the max of the valid arrivals so far equals the max (= the last, accepted arrivals being
-- non-decreasing) of the accepted ones, since a valid row that is rejected lies below that max and
-- an accepted one raises both to its own arrival. The frame includes the current row: for a valid
-- row t, t < max(earlier, t) iff t < max(earlier). tests/warehouse/test_hostile_input.py compares it
-- with the sequential definition on random traces. The window has no PARTITION BY / ORDER BY: the
-- lines arrive in line order (one file, numbered by row_number() OVER () in the same single-threaded
-- pipeline, or read from a table written in that order), so DuckDB computes it as a streaming
-- window in that order instead of sorting every row by line (the sort was ~40 % of staging).
-- Each format has two macros: staging.stg_<format>_rows (every reason but time_backwards, plus the
-- window's key as order_key) and staging.stg_<format>_lines (the same rows with time_backwards, the
-- column list of every staging view). A load stages the _rows macro and adds time_backwards itself
-- (warehouse.ingest._stage_lines): one cheap lag pass proves that no accepted row goes backwards
-- (the streaming running max costs ~0.2 s per 1 M lines, the lag pass ~0.01 s), and only when the
-- proof fails does it compute the running max, ordered by line.

-- Azure LLM inference trace 2023: TIMESTAMP,ContextTokens,GeneratedTokens
CREATE OR REPLACE MACRO staging.stg_azure_rows(lines) AS TABLE
WITH s AS (
    SELECT r.file_id, r.line, r.text, r.parse_error, r.field_pos AS p, r.n_fields AS nf,
           r.task AS file_task, string_split(r.text, ',') AS v
    FROM query_table(lines) AS r
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
               WHEN parse_error IS NOT NULL THEN parse_error
               WHEN staging.is_blank(text) THEN 'empty_line'
               WHEN got <> nf THEN 'field_count: expected ' || nf || ', got ' || got
               ELSE coalesce(staging.ts_reason(ts), staging.token_reason(pt, ot, false))
           END AS row_reason
    FROM c
)
SELECT file_id, line, NULL::INTEGER AS record_index, text AS raw_text,
       row_reason AS reject_reason,
       NULL::VARCHAR AS request_id, NULL::VARCHAR AS source, NULL::VARCHAR AS trace_id,
       epoch_us(ts) / 1e6 AS arrival_abs_s, ts AS arrival_ts,
       pt AS prompt_tokens, ot AS output_tokens, coalesce(file_task, 'unknown') AS task,
       NULL::VARCHAR AS model, NULL::VARCHAR AS prompt_text, NULL::BIGINT[] AS prefix_hash_ids,
       'ok' AS status, NULL::INTEGER AS sample_index, NULL::VARCHAR AS split,
       ts AS order_key
FROM chk;

-- The fast path of a CSV line format (warehouse.ingest._stage_fast): DuckDB's parallel CSV reader
-- splits the lines (no quoting, like string_split above) into the fields f1, f2, ... (the header's
-- columns at field_pos), with the file's constants file_id and file_task. It passes only the lines
-- that have exactly n_fields fields (the load takes this path only for files where no line ends
-- with a comma, which the reader would drop), those lines have no parse_error, are never blank, so
-- the reject reason is the rest of the CASE above, from the same casts and range macros. Columns:
-- what the load stages (the _rows macro's, less line and the columns it leaves NULL), in the same
-- order for every CSV format. No line number: the load numbers the rows afterwards.
CREATE OR REPLACE MACRO staging.stg_azure_fields(fields) AS TABLE
WITH c AS (
    SELECT r.file_id, r.file_task, staging.try_timestamp(r.f1) AS ts,
           staging.to_int(r.f2) AS pt, staging.to_int(r.f3) AS ot
    FROM query_table(fields) AS r
)
SELECT file_id, coalesce(staging.ts_reason(ts), staging.token_reason(pt, ot, false)) AS reject_reason,
       epoch_us(ts) / 1e6 AS arrival_abs_s, ts AS arrival_ts, pt AS prompt_tokens, ot AS output_tokens,
       coalesce(file_task, 'unknown') AS task, NULL::VARCHAR AS model, NULL::BIGINT[] AS prefix_hash_ids,
       'ok' AS status, ts AS order_key
FROM c;

CREATE OR REPLACE MACRO staging.stg_azure_lines(lines) AS TABLE
SELECT * EXCLUDE (order_key) REPLACE (
    coalesce(reject_reason, CASE WHEN order_key < max(CASE WHEN reject_reason IS NULL THEN order_key END)
                                 OVER (ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
                                 THEN 'time_backwards' END) AS reject_reason)
FROM staging.stg_azure_rows(lines);

-- BurstGPT: Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type
-- (Timestamp = seconds from the trace start; 0 response tokens = a failed request, kept as failed)
CREATE OR REPLACE MACRO staging.stg_burstgpt_rows(lines) AS TABLE
WITH s AS (
    SELECT r.file_id, r.line, r.text, r.parse_error, r.field_pos AS p, r.n_fields AS nf,
           string_split(r.text, ',') AS v
    FROM query_table(lines) AS r
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
               WHEN parse_error IS NOT NULL THEN parse_error
               WHEN staging.is_blank(text) THEN 'empty_line'
               WHEN got <> nf THEN 'field_count: expected ' || nf || ', got ' || got
               ELSE coalesce(staging.clock_reason(t), staging.token_reason(pt, ot, true))
           END AS row_reason
    FROM c
)
SELECT file_id, line, NULL::INTEGER AS record_index, text AS raw_text,
       row_reason AS reject_reason,
       NULL::VARCHAR AS request_id, NULL::VARCHAR AS source, NULL::VARCHAR AS trace_id,
       t AS arrival_abs_s, NULL::TIMESTAMP AS arrival_ts,
       pt AS prompt_tokens, ot AS output_tokens,
       CASE log_type WHEN 'conversation log' THEN 'conv' WHEN 'api log' THEN 'api'
                     WHEN '' THEN 'unknown' ELSE coalesce(log_type, 'unknown') END AS task,
       model, NULL::VARCHAR AS prompt_text, NULL::BIGINT[] AS prefix_hash_ids,
       CASE WHEN ot = 0 THEN 'failed' ELSE 'ok' END AS status,
       NULL::INTEGER AS sample_index, NULL::VARCHAR AS split,
       t AS order_key
FROM chk;

CREATE OR REPLACE MACRO staging.stg_burstgpt_fields(fields) AS TABLE
WITH c AS (
    SELECT r.file_id, staging.try_double(r.f1) AS t, nullif(trim(r.f2), '') AS model,
           staging.to_int(r.f3) AS pt, staging.to_int(r.f4) AS ot, lower(trim(r.f6)) AS log_type
    FROM query_table(fields) AS r
)
SELECT file_id, coalesce(staging.clock_reason(t), staging.token_reason(pt, ot, true)) AS reject_reason,
       t AS arrival_abs_s, NULL::TIMESTAMP AS arrival_ts, pt AS prompt_tokens, ot AS output_tokens,
       CASE log_type WHEN 'conversation log' THEN 'conv' WHEN 'api log' THEN 'api'
                     WHEN '' THEN 'unknown' ELSE coalesce(log_type, 'unknown') END AS task,
       model, NULL::BIGINT[] AS prefix_hash_ids, CASE WHEN ot = 0 THEN 'failed' ELSE 'ok' END AS status,
       t AS order_key
FROM c;

CREATE OR REPLACE MACRO staging.stg_burstgpt_lines(lines) AS TABLE
SELECT * EXCLUDE (order_key) REPLACE (
    coalesce(reject_reason, CASE WHEN order_key < max(CASE WHEN reject_reason IS NULL THEN order_key END)
                                 OVER (ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
                                 THEN 'time_backwards' END) AS reject_reason)
FROM staging.stg_burstgpt_rows(lines);

-- Vidur / Splitwise processed traces: arrived_at,num_prefill_tokens,num_decode_tokens (seconds)
CREATE OR REPLACE MACRO staging.stg_vidur_rows(lines) AS TABLE
WITH s AS (
    SELECT r.file_id, r.line, r.text, r.parse_error, r.field_pos AS p, r.n_fields AS nf,
           r.task AS file_task, string_split(r.text, ',') AS v
    FROM query_table(lines) AS r
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
               WHEN parse_error IS NOT NULL THEN parse_error
               WHEN staging.is_blank(text) THEN 'empty_line'
               WHEN got <> nf THEN 'field_count: expected ' || nf || ', got ' || got
               ELSE coalesce(staging.clock_reason(t), staging.token_reason(pt, ot, false))
           END AS row_reason
    FROM c
)
SELECT file_id, line, NULL::INTEGER AS record_index, text AS raw_text,
       row_reason AS reject_reason,
       NULL::VARCHAR AS request_id, NULL::VARCHAR AS source, NULL::VARCHAR AS trace_id,
       t AS arrival_abs_s, NULL::TIMESTAMP AS arrival_ts,
       pt AS prompt_tokens, ot AS output_tokens, coalesce(file_task, 'unknown') AS task,
       NULL::VARCHAR AS model, NULL::VARCHAR AS prompt_text, NULL::BIGINT[] AS prefix_hash_ids,
       'ok' AS status, NULL::INTEGER AS sample_index, NULL::VARCHAR AS split,
       t AS order_key
FROM chk;

CREATE OR REPLACE MACRO staging.stg_vidur_fields(fields) AS TABLE
WITH c AS (
    SELECT r.file_id, r.file_task, staging.try_double(r.f1) AS t,
           staging.to_int(r.f2) AS pt, staging.to_int(r.f3) AS ot
    FROM query_table(fields) AS r
)
SELECT file_id, coalesce(staging.clock_reason(t), staging.token_reason(pt, ot, false)) AS reject_reason,
       t AS arrival_abs_s, NULL::TIMESTAMP AS arrival_ts, pt AS prompt_tokens, ot AS output_tokens,
       coalesce(file_task, 'unknown') AS task, NULL::VARCHAR AS model, NULL::BIGINT[] AS prefix_hash_ids,
       'ok' AS status, t AS order_key
FROM c;

CREATE OR REPLACE MACRO staging.stg_vidur_lines(lines) AS TABLE
SELECT * EXCLUDE (order_key) REPLACE (
    coalesce(reject_reason, CASE WHEN order_key < max(CASE WHEN reject_reason IS NULL THEN order_key END)
                                 OVER (ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
                                 THEN 'time_backwards' END) AS reject_reason)
FROM staging.stg_vidur_rows(lines);

-- Mooncake JSONL: {"timestamp": ms, "input_length", "output_length", "hash_ids": [...]}
CREATE OR REPLACE MACRO staging.stg_mooncake_rows(lines) AS TABLE
WITH s AS (
    SELECT r.file_id, r.line, r.text, r.parse_error, r.task AS file_task,
           CASE WHEN r.parse_error IS NULL AND json_valid(r.text) AND json_type(r.text) = 'OBJECT'
                THEN r.text::JSON END AS j
    FROM query_table(lines) AS r
), c AS (
    SELECT *,
           TRY_CAST(j ->> 'timestamp' AS DOUBLE) AS t_ms,
           staging.to_int(j ->> 'input_length') AS pt,
           staging.to_int(j ->> 'output_length') AS ot,
           j -> 'hash_ids' AS hj,
           staging.int_list(TRY_CAST(j -> 'hash_ids' AS VARCHAR[])) AS hashes
    FROM s
), chk AS (
    SELECT *,
           CASE
               WHEN parse_error IS NOT NULL THEN parse_error
               WHEN staging.is_blank(text) THEN 'empty_line'
               WHEN j IS NULL THEN 'invalid_json'
               WHEN staging.clock_reason(t_ms / 1000.0) IS NOT NULL THEN staging.clock_reason(t_ms / 1000.0)
               WHEN staging.token_reason(pt, ot, false) IS NOT NULL THEN staging.token_reason(pt, ot, false)
               WHEN hj IS NOT NULL AND json_type(hj) <> 'NULL' AND staging.bad_int_list(hashes)
                   THEN 'bad_hash_ids'
           END AS row_reason
    FROM c
)
SELECT file_id, line, NULL::INTEGER AS record_index, text AS raw_text,
       row_reason AS reject_reason,
       NULL::VARCHAR AS request_id, NULL::VARCHAR AS source, NULL::VARCHAR AS trace_id,
       t_ms / 1000.0 AS arrival_abs_s, NULL::TIMESTAMP AS arrival_ts,
       pt AS prompt_tokens, ot AS output_tokens, coalesce(file_task, 'unknown') AS task,
       NULL::VARCHAR AS model, NULL::VARCHAR AS prompt_text,
       CASE WHEN json_type(hj) <> 'NULL' THEN hashes END AS prefix_hash_ids,
       'ok' AS status, NULL::INTEGER AS sample_index, NULL::VARCHAR AS split,
       t_ms AS order_key
FROM chk;

CREATE OR REPLACE MACRO staging.stg_mooncake_lines(lines) AS TABLE
SELECT * EXCLUDE (order_key) REPLACE (
    coalesce(reject_reason, CASE WHEN order_key < max(CASE WHEN reject_reason IS NULL THEN order_key END)
                                 OVER (ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
                                 THEN 'time_backwards' END) AS reject_reason)
FROM staging.stg_mooncake_rows(lines);

-- OpenTelemetry GenAI spans (flattened by the reader): start time in ns since the Unix epoch.
-- The range check comes before any cast to BIGINT/TIMESTAMP, so a start time >= 2^63 or < 0 is
-- quarantined (timestamp_out_of_range), never an overflow error.
CREATE OR REPLACE VIEW staging.stg_otel AS
WITH c AS (
    SELECT r.*, TRY_CAST(trim(r.start_ns) AS HUGEINT) AS t_ns,
           staging.to_int(r.input_tokens) AS pt, staging.to_int(r.output_tokens) AS ot
    FROM raw.otel AS r
), t AS (
    SELECT *,
           CASE WHEN t_ns >= 0 AND t_ns <= 9223372036854775807
                THEN make_timestamp((t_ns // 1000)::BIGINT) END AS ts
    FROM c
)
SELECT file_id, line, span_index AS record_index, text AS raw_text,
       CASE
           WHEN parse_error IS NOT NULL THEN parse_error
           WHEN t_ns IS NULL THEN 'bad_timestamp'
           WHEN ts IS NULL THEN 'timestamp_out_of_range'
           ELSE coalesce(staging.ts_reason(ts), staging.token_reason(pt, ot, false))
       END AS reject_reason,
       NULL::VARCHAR AS request_id, NULL::VARCHAR AS source, NULL::VARCHAR AS trace_id,
       t_ns / 1e9 AS arrival_abs_s, ts AS arrival_ts,
       pt AS prompt_tokens, ot AS output_tokens, coalesce(operation, 'unknown') AS task,
       model, NULL::VARCHAR AS prompt_text, NULL::BIGINT[] AS prefix_hash_ids,
       'ok' AS status, NULL::INTEGER AS sample_index, NULL::VARCHAR AS split
FROM t;

-- CASTILLO: one row per (prompt, model, sample) from output_sizes (10 generations per row).
-- input_size and the output_sizes elements are text in raw.castillo (as found in the Parquet file,
-- whatever its column types): 12.5, NaN or 'x' are quarantined like in every other format.
CREATE OR REPLACE VIEW staging.stg_castillo AS
WITH u AS (
    SELECT r.*,
           unnest(CASE WHEN output_sizes IS NULL OR len(output_sizes) = 0 THEN [NULL::BIGINT]
                       ELSE range(len(output_sizes)) END) AS si
    FROM raw.castillo AS r
), c AS (
    SELECT *, staging.to_int(input_size) AS pt, staging.to_int(output_sizes[si + 1]) AS ot FROM u
)
SELECT file_id, line, si::INTEGER AS record_index,
       to_json(struct_pack(sample_id, prompt_id, model, dataset, category, input_size, output_sizes,
                           split))::VARCHAR AS raw_text,
       CASE
           WHEN si IS NULL THEN 'missing_output_sizes'
           WHEN split NOT IN ('train', 'validate', 'test') THEN 'bad_split'
           ELSE staging.token_reason(pt, ot, false)
       END AS reject_reason,
       NULL::VARCHAR AS request_id, NULL::VARCHAR AS source, NULL::VARCHAR AS trace_id,
       0.0::DOUBLE AS arrival_abs_s, NULL::TIMESTAMP AS arrival_ts,
       pt AS prompt_tokens, ot AS output_tokens,
       CASE WHEN dataset = 'DollyDataset' THEN dataset || '/' || coalesce(category, 'undefined')
            ELSE coalesce(dataset, 'unknown') END AS task,
       model, prompt_text, NULL::BIGINT[] AS prefix_hash_ids,
       'ok' AS status, si::INTEGER AS sample_index, split
FROM c;

-- AlpacaEval outputs: Llama-2 token counts of instruction and output, generator = model.
CREATE OR REPLACE VIEW staging.stg_alpaca_eval AS
WITH c AS (
    SELECT r.*, staging.to_int(instruction_tokens_llama2) AS pt,
           staging.to_int(output_tokens_llama2) AS ot
    FROM raw.alpaca_eval AS r
)
SELECT file_id, line, NULL::INTEGER AS record_index,
       to_json(struct_pack(idx, generator, dataset, instruction_tokens_llama2,
                           output_tokens_llama2))::VARCHAR AS raw_text,
       staging.token_reason(pt, ot, false) AS reject_reason,
       NULL::VARCHAR AS request_id, NULL::VARCHAR AS source, NULL::VARCHAR AS trace_id,
       0.0::DOUBLE AS arrival_abs_s, NULL::TIMESTAMP AS arrival_ts,
       pt AS prompt_tokens, ot AS output_tokens,
       coalesce(dataset, 'unknown') AS task, generator AS model, instruction AS prompt_text,
       NULL::BIGINT[] AS prefix_hash_ids, 'ok' AS status, NULL::INTEGER AS sample_index,
       NULL::VARCHAR AS split
FROM c;

-- Dolly: no token counts upstream. Approximation: ceil(1.3 x whitespace-separated words);
-- prompt = instruction + context, output = response. Responses are human-written (model 'human').
-- The reader keeps each record's JSON text (raw_text) and its parse_error (empty_line,
-- invalid_json, invalid_record: a field that is not a string).
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
       coalesce(text, to_json(struct_pack(instruction, context, response, category))::VARCHAR) AS raw_text,
       coalesce(parse_error, staging.token_reason(pt, ot, false)) AS reject_reason,
       NULL::VARCHAR AS request_id, NULL::VARCHAR AS source, NULL::VARCHAR AS trace_id,
       0.0::DOUBLE AS arrival_abs_s, NULL::TIMESTAMP AS arrival_ts,
       pt AS prompt_tokens, ot AS output_tokens, coalesce(nullif(category, ''), 'unknown') AS task,
       'human' AS model,
       CASE WHEN context IS NULL OR trim(context) = '' THEN instruction
            ELSE instruction || chr(10) || chr(10) || context END AS prompt_text,
       NULL::BIGINT[] AS prefix_hash_ids, 'ok' AS status, NULL::INTEGER AS sample_index,
       NULL::VARCHAR AS split
FROM c;

-- The canonical schema itself: values arrive as text and are cast here. The reader sets
-- parse_error (empty_line, invalid_json, field_count, csv_error, invalid_utf8, nul_byte...).
CREATE OR REPLACE VIEW staging.stg_canonical AS
WITH c AS (
    SELECT r.*,
           staging.try_double(r.arrival_s) AS t,
           staging.to_int(r.prompt_tokens) AS pt,
           staging.to_int(r.output_tokens) AS ot,
           coalesce(nullif(trim(r.status), ''), 'ok') AS st,
           staging.int_list(TRY_CAST(nullif(trim(r.prefix_hash_ids), '') AS VARCHAR[])) AS hashes,
           TRY_CAST(staging.to_int(nullif(trim(r.sample_index), '')) AS INTEGER) AS si,
           staging.try_timestamp(nullif(trim(r.arrival_ts), '')) AS ts,
           nullif(trim(r.split), '') AS sp
    FROM raw.canonical AS r
)
SELECT file_id, line, NULL::INTEGER AS record_index, coalesce(text, to_json(struct_pack(
           request_id, source, trace_id, arrival_s, prompt_tokens, output_tokens, task, model,
           prefix_hash_ids, status, sample_index, split, arrival_ts))::VARCHAR) AS raw_text,
       CASE
           WHEN parse_error IS NOT NULL THEN parse_error
           WHEN t IS NULL OR isnan(t) OR isinf(t) THEN 'bad_arrival_s'
           WHEN NOT (t >= 0 AND t < staging.max_clock_s()) THEN 'arrival_s_out_of_range'
           WHEN st NOT IN ('ok', 'failed') THEN 'bad_status'
           WHEN staging.token_reason(pt, ot, st = 'failed') IS NOT NULL
               THEN staging.token_reason(pt, ot, st = 'failed')
           WHEN nullif(trim(prefix_hash_ids), '') IS NOT NULL AND staging.bad_int_list(hashes)
               THEN 'bad_prefix_hash_ids'
           WHEN nullif(trim(sample_index), '') IS NOT NULL AND (si IS NULL OR si < 0) THEN 'bad_sample_index'
           WHEN sp NOT IN ('train', 'validate', 'test') THEN 'bad_split'
           WHEN nullif(trim(arrival_ts), '') IS NOT NULL AND ts IS NULL THEN 'bad_arrival_ts'
           WHEN ts IS NOT NULL AND staging.ts_reason(ts) IS NOT NULL THEN 'arrival_ts_out_of_range'
       END AS reject_reason,
       nullif(trim(request_id), '') AS request_id, nullif(trim(source), '') AS source,
       nullif(trim(trace_id), '') AS trace_id,
       t AS arrival_abs_s, ts AS arrival_ts, pt AS prompt_tokens, ot AS output_tokens,
       coalesce(nullif(trim(task), ''), 'unknown') AS task, nullif(model, '') AS model, prompt_text,
       hashes AS prefix_hash_ids, st AS status, si AS sample_index, sp AS split
FROM c;
