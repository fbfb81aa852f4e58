"""Evaluation: benchmarks, domain test sets, pure metrics, scoring models, and reports.

- `metrics`: pure ITT/TOT, accuracy, R@k, paired differences (NumPy only).
- `benchmarks`: benchmark specs and loaders (SugarCrepe, SugarCrepe++, Winoground, retrieval, zero-shot, domain).
- `domain_sets`: compositional test sets generated from a customer's held-out captions.
- `evaluate`: embeds and scores models on benchmarks; `report`: tables, plots and MLflow metrics.
"""
