-- Tables of the warehouse (raw layer, canonical marts table, latency profiles).
-- Run by warehouse.store on every write session (idempotent: IF NOT EXISTS).
CREATE SCHEMA IF NOT EXISTS raw;
CREATE SCHEMA IF NOT EXISTS staging;
CREATE SCHEMA IF NOT EXISTS marts;

-- File registry: one row per ingested file content (content_hash is the idempotency key).
CREATE TABLE IF NOT EXISTS raw.files (
    file_id INTEGER NOT NULL,
    content_hash VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    format VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    task VARCHAR,
    trace_id VARCHAR NOT NULL,
    field_pos INTEGER[],
    n_fields INTEGER,
    size_bytes BIGINT,
    rows_read BIGINT,
    ingested BIGINT,
    quarantined BIGINT,
    load_id VARCHAR NOT NULL,
    ingested_at TIMESTAMPTZ NOT NULL
);
-- The request-id prefix of the file's rows (source:content-hash[:16]:): marts.requests.request_id of
-- a trace row is this || line (NULL on files registered before ids were derived).
ALTER TABLE raw.files ADD COLUMN IF NOT EXISTS id_prefix VARCHAR;
-- The file's arrival origin [epoch s]: the first accepted arrival of a trace file with absolute
-- timestamps (marts.trace_requests_timed derives arrival_s from it); NULL for the other files.
ALTER TABLE raw.files ADD COLUMN IF NOT EXISTS arrival_origin_s DOUBLE;

-- Load log: one row per published load (a failed load publishes nothing, so it leaves no row).
CREATE TABLE IF NOT EXISTS raw.load_log (
    load_id VARCHAR NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL,
    files_loaded INTEGER NOT NULL,
    files_duplicate INTEGER NOT NULL,
    rows_read BIGINT NOT NULL,
    ingested BIGINT NOT NULL,
    quarantined BIGINT NOT NULL,
    duplicates_skipped BIGINT NOT NULL
);
-- Files of the load skipped as unreadable (not a trace, not text, unreadable): reported, not loaded.
ALTER TABLE raw.load_log ADD COLUMN IF NOT EXISTS files_skipped INTEGER DEFAULT 0;

-- Rows that could not become canonical requests, with the reason and the source line.
CREATE TABLE IF NOT EXISTS raw.quarantine (
    file_id INTEGER NOT NULL,
    path VARCHAR NOT NULL,
    line BIGINT NOT NULL,
    record_index INTEGER,
    raw_text VARCHAR,
    reason VARCHAR NOT NULL
);

-- Line-oriented sources (Azure, BurstGPT, Vidur, Mooncake): the raw layer is the source file itself,
-- registered in raw.files by its content hash; a load stages its lines straight from the file
-- (warehouse/ingest.py) and keeps the text of rejected lines in raw.quarantine. These tables hold the
-- lines of files loaded before that change (the line as read, its 1-based number, and what the line
-- reader could not read: invalid_utf8, nul_byte, line_too_long; NULL normally); new loads add nothing.
CREATE TABLE IF NOT EXISTS raw.azure (file_id INTEGER NOT NULL, line BIGINT NOT NULL, text VARCHAR);
CREATE TABLE IF NOT EXISTS raw.burstgpt (file_id INTEGER NOT NULL, line BIGINT NOT NULL, text VARCHAR);
CREATE TABLE IF NOT EXISTS raw.vidur (file_id INTEGER NOT NULL, line BIGINT NOT NULL, text VARCHAR);
CREATE TABLE IF NOT EXISTS raw.mooncake (file_id INTEGER NOT NULL, line BIGINT NOT NULL, text VARCHAR);
ALTER TABLE raw.azure ADD COLUMN IF NOT EXISTS parse_error VARCHAR;
ALTER TABLE raw.burstgpt ADD COLUMN IF NOT EXISTS parse_error VARCHAR;
ALTER TABLE raw.vidur ADD COLUMN IF NOT EXISTS parse_error VARCHAR;
ALTER TABLE raw.mooncake ADD COLUMN IF NOT EXISTS parse_error VARCHAR;

-- OpenTelemetry GenAI spans, flattened by the Python reader (values as found, text).
CREATE TABLE IF NOT EXISTS raw.otel (
    file_id INTEGER NOT NULL,
    line BIGINT NOT NULL,
    span_index INTEGER NOT NULL,
    text VARCHAR,
    parse_error VARCHAR,
    otel_trace_id VARCHAR,
    span_id VARCHAR,
    name VARCHAR,
    start_ns VARCHAR,
    end_ns VARCHAR,
    input_tokens VARCHAR,
    output_tokens VARCHAR,
    model VARCHAR,
    operation VARCHAR
);

-- Prompt sets with true output lengths. Numbers are kept as text, as found (a Parquet file may hold
-- them as integers, doubles -- 12.5, NaN -- or strings): staging casts and checks them.
CREATE TABLE IF NOT EXISTS raw.castillo (
    file_id INTEGER NOT NULL,
    line BIGINT NOT NULL,
    sample_id VARCHAR,
    prompt_id VARCHAR,
    model VARCHAR,
    dataset VARCHAR,
    category VARCHAR,
    prompt_text VARCHAR,
    input_size VARCHAR,
    output_sizes VARCHAR[],
    split VARCHAR
);
-- Warehouses created before numbers were kept as text (a no-op on newer ones).
ALTER TABLE raw.castillo ALTER input_size SET DATA TYPE VARCHAR;
ALTER TABLE raw.castillo ALTER output_sizes SET DATA TYPE VARCHAR[];
CREATE TABLE IF NOT EXISTS raw.alpaca_eval (
    file_id INTEGER NOT NULL,
    line BIGINT NOT NULL,
    idx VARCHAR,
    generator VARCHAR,
    dataset VARCHAR,
    instruction VARCHAR,
    instruction_tokens_llama2 VARCHAR,
    output_tokens_llama2 VARCHAR
);
ALTER TABLE raw.alpaca_eval ALTER idx SET DATA TYPE VARCHAR;
ALTER TABLE raw.alpaca_eval ALTER instruction_tokens_llama2 SET DATA TYPE VARCHAR;
ALTER TABLE raw.alpaca_eval ALTER output_tokens_llama2 SET DATA TYPE VARCHAR;
CREATE TABLE IF NOT EXISTS raw.dolly (
    file_id INTEGER NOT NULL,
    line BIGINT NOT NULL,
    instruction VARCHAR,
    context VARCHAR,
    response VARCHAR,
    category VARCHAR
);
-- The record's JSON text as read (the JSONL line, or the array element) and the reader's verdict.
ALTER TABLE raw.dolly ADD COLUMN IF NOT EXISTS text VARCHAR;
ALTER TABLE raw.dolly ADD COLUMN IF NOT EXISTS parse_error VARCHAR;

-- The canonical schema itself (CSV / JSONL / Parquet), every value as text.
CREATE TABLE IF NOT EXISTS raw.canonical (
    file_id INTEGER NOT NULL,
    line BIGINT NOT NULL,
    text VARCHAR,
    request_id VARCHAR,
    source VARCHAR,
    trace_id VARCHAR,
    arrival_s VARCHAR,
    prompt_tokens VARCHAR,
    output_tokens VARCHAR,
    task VARCHAR,
    model VARCHAR,
    prompt_text VARCHAR,
    prefix_hash_ids VARCHAR,
    status VARCHAR,
    sample_index VARCHAR,
    split VARCHAR,
    arrival_ts VARCHAR
);
-- What the reader could not read (empty_line, invalid_json, field_count, csv_error, invalid_utf8...).
ALTER TABLE raw.canonical ADD COLUMN IF NOT EXISTS parse_error VARCHAR;

-- The canonical requests are the view marts.requests (marts.sql) over two tables (no PRIMARY KEY:
-- keys are enforced by the post-load checks, warehouse/checks.py):
-- marts.trace_requests: the rows of the Vidur traces (and of Azure files loaded before
-- marts.trace_requests_timed), narrow: only what varies per row.
-- The per-file constants (source, trace_id, format, the request-id prefix, the task) stay in
-- raw.files. Every further column, even all NULL, costs a load ~5-8 % of DuckDB's own CSV load.
CREATE TABLE IF NOT EXISTS marts.trace_requests (
    file_id INTEGER NOT NULL,
    line BIGINT NOT NULL,
    arrival_s DOUBLE,
    prompt_tokens BIGINT,
    output_tokens BIGINT,
    arrival_ts TIMESTAMP
);
-- marts.trace_requests_timed: the rows of the Azure traces (absolute timestamps), narrower still:
-- arrival_s is not stored but derived by marts.requests from arrival_ts and the file's
-- raw.files.arrival_origin_s, with the expression the load used to compute it (the same DOUBLE, bit
-- for bit). A stored DOUBLE per row costs ~10 % of a load and doubles the table on disk. Azure files
-- loaded before this table existed keep their rows in marts.trace_requests.
CREATE TABLE IF NOT EXISTS marts.trace_requests_timed (
    file_id INTEGER NOT NULL,
    line BIGINT NOT NULL,
    prompt_tokens BIGINT,
    output_tokens BIGINT,
    arrival_ts TIMESTAMP NOT NULL
);
-- marts.trace_requests_labelled: the rows of the BurstGPT and Mooncake traces, which also vary per
-- row in task, model, status (BurstGPT) or prefix hash ids (Mooncake).
CREATE TABLE IF NOT EXISTS marts.trace_requests_labelled (
    file_id INTEGER NOT NULL,
    line BIGINT NOT NULL,
    arrival_s DOUBLE,
    prompt_tokens BIGINT,
    output_tokens BIGINT,
    task VARCHAR,
    model VARCHAR,
    status VARCHAR,
    prefix_hash_ids BIGINT[]
);
-- marts.requests_stored: every other row with all its columns (prompt sets, OTel, canonical files,
-- rows loaded before trace rows were narrow: warehouse.store renames the old marts.requests table).
CREATE TABLE IF NOT EXISTS marts.requests_stored (
    request_id VARCHAR,
    source VARCHAR,
    trace_id VARCHAR,
    arrival_s DOUBLE,
    prompt_tokens BIGINT,
    output_tokens BIGINT,
    task VARCHAR,
    model VARCHAR,
    prompt_text VARCHAR,
    prefix_hash_ids BIGINT[],
    status VARCHAR,
    sample_index INTEGER,
    split VARCHAR,
    arrival_ts TIMESTAMP,
    format VARCHAR,
    file_id INTEGER,
    line BIGINT
);

-- Latency profiles for the workload classes (the active row is used by marts.request_classes; the
-- thresholds of the shipped rows are warehouse/workload_class.py's, through its macros).
-- A decode iteration costs decode_base_s + decode_s_per_seq per decoding sequence
-- + decode_s_per_context_token per token of context: the two readings of the paper's grad2
-- (training/simulator/profiles.py: v100-llama2-7b-paper and v100-llama2-7b-paper-context).
CREATE TABLE IF NOT EXISTS marts.latency_profile (
    name VARCHAR NOT NULL,
    prefill_s_per_token DOUBLE NOT NULL,
    decode_base_s DOUBLE NOT NULL,
    decode_s_per_context_token DOUBLE NOT NULL,
    heavy_prefill_s DOUBLE NOT NULL,
    heavy_decode_s DOUBLE NOT NULL,
    active BOOLEAN NOT NULL,
    note VARCHAR
);
-- Added after the first release: warehouses created before get it (0 = the per-context reading).
ALTER TABLE marts.latency_profile ADD COLUMN IF NOT EXISTS decode_s_per_seq DOUBLE DEFAULT 0.0;
INSERT INTO marts.latency_profile
    (name, prefill_s_per_token, decode_base_s, decode_s_per_context_token, heavy_prefill_s,
     heavy_decode_s, active, note, decode_s_per_seq)
SELECT 'v100-llama2-7b-paper', 3.2e-4, 0.02, 0.0, marts.heavy_prefill_s(), marts.heavy_decode_s(),
       NOT EXISTS (SELECT 1 FROM marts.latency_profile),
       'Jain et al. EuroMLSys''25 (arXiv 2408.13510), Llama-2-7B on V100; grad2 per decode token in the batch',
       3.3e-5
WHERE NOT EXISTS (SELECT 1 FROM marts.latency_profile WHERE name = 'v100-llama2-7b-paper');
INSERT INTO marts.latency_profile
    (name, prefill_s_per_token, decode_base_s, decode_s_per_context_token, heavy_prefill_s,
     heavy_decode_s, active, note, decode_s_per_seq)
SELECT 'v100-llama2-7b-paper-context', 3.2e-4, 0.02, 3.3e-5, marts.heavy_prefill_s(), marts.heavy_decode_s(), false,
       'Jain et al. EuroMLSys''25 (arXiv 2408.13510), Llama-2-7B on V100; grad2 per token of decode context',
       0.0
WHERE NOT EXISTS (SELECT 1 FROM marts.latency_profile WHERE name = 'v100-llama2-7b-paper-context');

-- Output-length predictions: one row per (request, length-predictor version), written in batches by
-- warehouse/predictions.py (`loadwise predict`, the nightly predict-lengths step, a replay that finds
-- some missing). Replays read them through training/length/stored.py instead of calling the model.
CREATE TABLE IF NOT EXISTS marts.length_predictions (
    request_id VARCHAR NOT NULL,
    model_name VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,
    input_hash VARCHAR NOT NULL,
    expected_output_tokens DOUBLE NOT NULL,
    bucket_probs DOUBLE[] NOT NULL,
    bucket_edges DOUBLE[] NOT NULL,
    answered_by VARCHAR NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (request_id, model_name, model_version)
);

-- Evaluation results (eval/sinks.py: `loadwise compare --store`, the nightly evaluate-router step,
-- evaluate-routers-distributed): long format, one row per (evaluation, router, group, metric, statistic).
-- Warehouses made before evaluation ids had run_id (a hash of the report) in place of evaluation_id:
-- warehouse.store.apply_schema renames it before this runs (the old hashes stay as the old ids).
CREATE TABLE IF NOT EXISTS marts.eval_results (
    evaluation_id VARCHAR NOT NULL,
    evaluated_at TIMESTAMPTZ,
    workload VARCHAR NOT NULL,
    synthetic BOOLEAN NOT NULL,
    latency_model VARCHAR NOT NULL,
    router VARCHAR NOT NULL,
    oracle BOOLEAN NOT NULL,
    predictor VARCHAR NOT NULL,
    group_kind VARCHAR NOT NULL,
    group_name VARCHAR NOT NULL,
    metric VARCHAR NOT NULL,
    stat VARCHAR NOT NULL,
    mean DOUBLE,
    ci95 DOUBLE,
    n_seeds INTEGER NOT NULL,
    vs_round_robin_pct DOUBLE,
    PRIMARY KEY (evaluation_id, router, group_kind, group_name, metric, stat)
);
ALTER TABLE marts.eval_results ADD COLUMN IF NOT EXISTS evaluated_at TIMESTAMPTZ;

-- The nightly flow's run log and watermark (warehouse/ops.py, written by flows/nightly/report.py).
CREATE SCHEMA IF NOT EXISTS ops;
CREATE TABLE IF NOT EXISTS ops.nightly_runs (
    run_id VARCHAR NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL,
    status VARCHAR NOT NULL,
    watermark_file_id INTEGER,
    new_requests BIGINT,
    drifted BOOLEAN,
    drift_reasons VARCHAR,
    retrained VARCHAR,
    challenger_version VARCHAR,
    promoted BOOLEAN,
    decision VARCHAR,
    details JSON
);
ALTER TABLE ops.nightly_runs ADD COLUMN IF NOT EXISTS evaluation_id VARCHAR;
