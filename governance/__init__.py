"""Human review, evaluation runs, promotion gates, the model registry and the regression set.

- `review`: misclassifications as MLflow traces, verdicts fed back into the catalog.
- `eval_run`: evaluate, keep the artifacts and track the run, in one job.
- `gates`, `registry`, `regression`: promotion decisions that fail closed, and the audit log.

This folder is the design card's top-level `governance/`; it is installed only as `toolkit.governance`.
"""

if __name__ != "toolkit.governance":  # one module, one name: never a generic top-level `governance`
    raise ImportError(f"import this package as toolkit.governance, not {__name__}")
