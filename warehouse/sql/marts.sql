-- Analytics views over marts.requests, with column descriptions (units in brackets).
-- Run by warehouse.store on every write session (CREATE OR REPLACE), then the COMMENTs.

-- The canonical request table analysts read: the narrow trace rows with their file's constants
-- (raw.files: source, trace_id, format, request-id prefix, task), then every other row as stored.
-- A trace row's request_id is raw.files.id_prefix || line; a labelled trace row's NULL task is the
-- file's task ('unknown' if none) and its NULL status is 'ok' (warehouse/ingest.py writes them so: a
-- NULL costs the load far less than a repeated string). A timed trace row's arrival_s is computed
-- here as the load computed it before storing it (staging.stg_azure_fields' arrival_abs_s less the
-- file's first accepted arrival, raw.files.arrival_origin_s). LEFT JOINs, so a trace row whose file is
-- missing still shows (with NULL request_id, source...) and fails the not-null checks.
CREATE OR REPLACE VIEW marts.requests AS
SELECT f.id_prefix || t.line AS request_id, f.source, f.trace_id, t.arrival_s, t.prompt_tokens,
       t.output_tokens, coalesce(f.task, 'unknown') AS task, NULL::VARCHAR AS model,
       NULL::VARCHAR AS prompt_text, NULL::BIGINT[] AS prefix_hash_ids, 'ok' AS status,
       NULL::INTEGER AS sample_index, NULL::VARCHAR AS split, t.arrival_ts, f.format, t.file_id, t.line
FROM marts.trace_requests AS t LEFT JOIN raw.files AS f ON f.file_id = t.file_id
UNION ALL
SELECT f.id_prefix || t.line, f.source, f.trace_id, epoch_us(t.arrival_ts) / 1e6 - f.arrival_origin_s,
       t.prompt_tokens, t.output_tokens, coalesce(f.task, 'unknown'), NULL, NULL, NULL, 'ok', NULL, NULL,
       t.arrival_ts, f.format, t.file_id, t.line
FROM marts.trace_requests_timed AS t LEFT JOIN raw.files AS f ON f.file_id = t.file_id
UNION ALL
SELECT f.id_prefix || t.line, f.source, f.trace_id, t.arrival_s, t.prompt_tokens, t.output_tokens,
       coalesce(t.task, f.task, 'unknown'), t.model, NULL, t.prefix_hash_ids, coalesce(t.status, 'ok'),
       NULL, NULL, NULL, f.format, t.file_id, t.line
FROM marts.trace_requests_labelled AS t LEFT JOIN raw.files AS f ON f.file_id = t.file_id
UNION ALL
SELECT request_id, source, trace_id, arrival_s, prompt_tokens, output_tokens, task, model, prompt_text,
       prefix_hash_ids, status, sample_index, split, arrival_ts, format, file_id, line
FROM marts.requests_stored;

-- Requests per minute of trace time, per source and task. Only traces with arrival times: the prompt
-- sets (formats castillo, alpaca-eval, dolly: every request at arrival_s 0) would put a whole data
-- set in minute 0. Token sums are BIGINT (DuckDB's sum of a BIGINT is a HUGEINT).
CREATE OR REPLACE MACRO marts.has_arrival_times(fmt) AS fmt NOT IN ('castillo', 'alpaca-eval', 'dolly');

CREATE OR REPLACE VIEW marts.requests_per_minute AS
SELECT source, trace_id, task,
       floor(arrival_s / 60)::BIGINT AS minute,
       min(date_trunc('minute', arrival_ts)) AS minute_ts,
       count(*) AS requests,
       sum(prompt_tokens)::BIGINT AS prompt_tokens,
       sum(output_tokens)::BIGINT AS output_tokens
FROM marts.requests
WHERE marts.has_arrival_times(format)
GROUP BY ALL;

-- Prompt and output token distributions per source and task.
CREATE OR REPLACE VIEW marts.token_percentiles AS
SELECT source, task, count(*) AS requests,
       quantile_disc(prompt_tokens, 0.5) AS prompt_p50,
       quantile_disc(prompt_tokens, 0.9) AS prompt_p90,
       quantile_disc(prompt_tokens, 0.99) AS prompt_p99,
       quantile_disc(output_tokens, 0.5) AS output_p50,
       quantile_disc(output_tokens, 0.9) AS output_p90,
       quantile_disc(output_tokens, 0.99) AS output_p99
FROM marts.requests
WHERE status = 'ok'
GROUP BY ALL;

-- Per-request predicted prefill and decode time under the active latency profile, and the
-- paper's workload class. The rule, the thresholds and the closed forms are the macros rendered from
-- warehouse/workload_class.py (the one definition, also used by the evaluation): prefill alone =
-- decode_base_s + prefill_s_per_token * prompt; decode alone = output * (decode_base_s +
-- decode_s_per_seq) + decode_s_per_context_token * (output * prompt + output * (output - 1) / 2).
CREATE OR REPLACE VIEW marts.request_classes AS
WITH p AS (SELECT * FROM marts.latency_profile WHERE active LIMIT 1), t AS (
    SELECT r.request_id, r.source, r.task, r.model, r.prompt_tokens, r.output_tokens, p.name AS profile,
           marts.prefill_s(r.prompt_tokens, p.decode_base_s, p.prefill_s_per_token) AS prefill_s,
           marts.isolated_decode_s(r.prompt_tokens, r.output_tokens, p.decode_base_s + p.decode_s_per_seq,
                                   p.decode_s_per_context_token) AS decode_s,
           p.heavy_prefill_s, p.heavy_decode_s
    FROM marts.requests AS r CROSS JOIN p
    WHERE r.status = 'ok'
)
SELECT request_id, source, task, model, prompt_tokens, output_tokens, profile, prefill_s, decode_s,
       marts.workload_class(prefill_s, decode_s, heavy_prefill_s, heavy_decode_s) AS workload_class
FROM t;

-- Workload class mix per source and task.
CREATE OR REPLACE VIEW marts.workload_classes AS
SELECT source, task, workload_class, count(*) AS requests,
       count(*) / sum(count(*)) OVER (PARTITION BY source, task) AS share
FROM marts.request_classes
GROUP BY source, task, workload_class;

-- Daily summary (day of the absolute arrival timestamp; NULL day = no timestamp, e.g. prompt sets).
CREATE OR REPLACE VIEW marts.daily_summary AS
SELECT arrival_ts::DATE AS day, source, count(*) AS requests,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       sum(prompt_tokens)::BIGINT AS prompt_tokens, sum(output_tokens)::BIGINT AS output_tokens,
       avg(prompt_tokens) AS mean_prompt_tokens, avg(output_tokens) AS mean_output_tokens,
       min(arrival_ts) AS first_arrival_ts, max(arrival_ts) AS last_arrival_ts
FROM marts.requests
GROUP BY ALL;

-- Counts per source and task (the pipeline's first summary table).
CREATE OR REPLACE VIEW marts.source_summary AS
SELECT source, task, count(*) AS requests, count(*) FILTER (WHERE status = 'failed') AS failed,
       count(DISTINCT trace_id) AS traces, min(arrival_s) AS first_arrival_s, max(arrival_s) AS last_arrival_s
FROM marts.requests
GROUP BY ALL;

-- Every request that has its serving prompt text, with the one prompt split (warehouse/prompt_split.py:
-- the macro marts.prompt_split). Rows without text (Azure, BurstGPT, Mooncake) are split by time
-- window by the workloads instead, so they are not listed.
CREATE OR REPLACE VIEW marts.prompt_split AS
SELECT request_id, source, format, model, task, sha256(prompt_text) AS prompt_sha256,
       marts.prompt_split(prompt_text) AS split
FROM marts.requests
WHERE prompt_text IS NOT NULL AND prompt_text <> '';

-- One row per stored prediction of a request that succeeded: predicted vs true output length, the
-- predicted bucket (argmax; ties to the lower bucket) and its probability, the true bucket (same
-- edges: bucket i holds edges[i-1] < n <= edges[i]).
CREATE OR REPLACE VIEW marts.length_prediction_errors AS
SELECT p.model_name, p.model_version, p.request_id, r.source, coalesce(r.task, '') AS task, p.answered_by,
       p.expected_output_tokens AS predicted_tokens, r.output_tokens AS actual_tokens,
       abs(p.expected_output_tokens - r.output_tokens) AS abs_error_tokens,
       list_position(p.bucket_probs, list_max(p.bucket_probs)) - 1 AS predicted_bucket,
       list_max(p.bucket_probs) AS confidence,
       len(list_filter(p.bucket_edges, lambda e: e < r.output_tokens)) AS actual_bucket
FROM marts.length_predictions AS p JOIN marts.requests AS r USING (request_id)
WHERE r.status = 'ok';

-- Calibration per predictor version, task and predicted bucket: mean predicted vs true length, MAE,
-- how often the true length fell in the predicted bucket and the mean probability the predictor gave it.
CREATE OR REPLACE VIEW marts.length_calibration AS
SELECT model_name, model_version, task, predicted_bucket, count(*) AS requests,
       avg(predicted_tokens) AS mean_predicted_tokens, avg(actual_tokens) AS mean_actual_tokens,
       avg(abs_error_tokens) AS mae_tokens,
       avg((actual_bucket = predicted_bucket)::DOUBLE) AS bucket_accuracy,
       avg(confidence) AS mean_confidence
FROM marts.length_prediction_errors
GROUP BY ALL;

-- Per predictor version and task (task '(all)': every request): MAE, bucket accuracy and the expected
-- calibration error (ECE) over 10 equal-width bins of the predicted bucket's probability.
CREATE OR REPLACE VIEW marts.length_calibration_summary AS
WITH scoped AS (
    SELECT *, least(floor(confidence * 10), 9)::INTEGER AS conf_bin FROM marts.length_prediction_errors
    UNION ALL BY NAME
    SELECT * REPLACE ('(all)' AS task), least(floor(confidence * 10), 9)::INTEGER AS conf_bin
    FROM marts.length_prediction_errors
), bins AS (
    SELECT model_name, model_version, task, conf_bin, count(*) AS n,
           avg((actual_bucket = predicted_bucket)::DOUBLE) AS accuracy, avg(confidence) AS confidence
    FROM scoped GROUP BY ALL
), ece AS (
    SELECT model_name, model_version, task, sum(n * abs(accuracy - confidence)) / sum(n) AS ece
    FROM bins GROUP BY ALL
)
SELECT s.model_name, s.model_version, s.task, count(*) AS requests,
       avg(s.predicted_tokens) AS mean_predicted_tokens, avg(s.actual_tokens) AS mean_actual_tokens,
       avg(s.abs_error_tokens) AS mae_tokens,
       avg((s.actual_bucket = s.predicted_bucket)::DOUBLE) AS bucket_accuracy,
       any_value(e.ece) AS ece
FROM scoped AS s JOIN ece AS e USING (model_name, model_version, task)
GROUP BY s.model_name, s.model_version, s.task;
