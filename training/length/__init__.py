"""The task-aware output-length predictor (Jain et al., arXiv 2408.13510): training, report, serving.

Modules: ``config`` (PredictorConfig), ``data`` (warehouse rows -> prompts, split by prompt),
``buckets`` (edges, labels), ``tfidf`` (the TF-IDF text model and the validation-only choices),
``serving`` (self-contained inference + MLflow pyfunc), ``train``
(``train_length_predictor`` -> ``TrainedLengthPredictor``), ``metrics`` (``LengthReport``),
``report`` (Table 1 sweep, ``python -m training.length.report``), ``predictor`` (the simulator's
``LengthPredictor`` adapter), ``baselines`` (the reference predictors every replay can use without a
model: oracle, task mean), ``bench`` (CPU latency). Importing this package imports no torch.
"""
