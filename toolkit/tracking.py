"""MLflow tracking for every command: parameters, step metrics, lineage tags, dataset input, artifacts.

Default: a SQLite-backed MLflow store in the workspace (registry included, no server). At scale:
`MLFLOW_TRACKING_URI=http://mlflow:5000` pointing at a real `mlflow server` with a SQL backend.

Lineage is written as tags so that it can be read back from MLflow alone:
    toolkit.kind, toolkit.actor, toolkit.code_version, toolkit.catalog.snapshot, toolkit.base_weights_sha256,
    toolkit.parent_run, toolkit.catalog (password redacted)
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from toolkit import __version__
from toolkit.core.components import require
from toolkit.core.config import current_actor, resolve_tracking_uri, workspace_dir
from toolkit.core.config import redact_url as redact_url  # re-exported: it used to live here
from toolkit.core.errors import InputError
from toolkit.core.locks import exclusive_file_lock

DEFAULT_EXPERIMENT = "clic-toolkit"
TAG_PREFIX = "toolkit."
_MAX_PARAM_CHARS = 6000  # MLflow's limit for one parameter value
REACHABILITY_TIMEOUT_S = 5.0
# MLflow's own defaults (120 s per request, 7 retries with backoff factor 2) turn a dead server into many
# minutes of silence. Bounded here unless the user set them: worst case per call ~ 3 x 15 s + 1 + 2 s.
_CLIENT_BOUNDS = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "15", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                  "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5"}


class TrackingUnavailable(InputError):
    """The tracking server does not answer, or answers with an error (exit 3)."""


@dataclass(frozen=True)
class Lineage:
    """Where a run comes from. Every field lands as a `toolkit.*` tag."""

    kind: str  # train | eval | export | promote | review | ingest
    snapshot: str | None = None
    base_weights_sha256: str | None = None
    parent_run: str | None = None
    catalog: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def tags(self, actor: str) -> dict[str, str]:
        tags = {"kind": self.kind, "actor": actor, "code_version": code_version(),
                "snapshot": self.snapshot, "base_weights_sha256": self.base_weights_sha256,
                "parent_run": self.parent_run, "catalog": self.catalog, **self.extra}
        return {TAG_PREFIX + k: str(v) for k, v in tags.items() if v is not None}


def code_version() -> str:
    """The package version plus the git commit of the source tree, when it is a checkout."""
    source = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return f"{__version__}+g{commit}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return __version__


def bound_client_retries() -> None:
    for name, value in _CLIENT_BOUNDS.items():
        os.environ.setdefault(name, value)


_ready: set[str] = set()  # URIs this process has checked: servers that answered, SQLite stores it created


def check_tracking_reachable(uri: str) -> None:
    """For a server URI: one GET /health with a short timeout, so a dead or silent server is an exit-3 line
    in seconds rather than minutes of retries. A local SQLite store is created on first use, one process at a
    time (`_create_local_store`); other local stores need no check."""

    bound_client_retries()
    _check_tracking_uri(uri)
    if uri in _ready:
        return
    if uri.startswith("sqlite:///"):
        _create_local_store(uri)
        _ready.add(uri)
        return
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=REACHABILITY_TIMEOUT_S) as response:
            status = response.status
    except urllib.error.HTTPError as err:
        status = err.code
    except (OSError, ValueError) as err:  # refused, timed out, no route, a port that is not a number
        reason = getattr(err, "reason", err)
        raise TrackingUnavailable(f"tracking server {redact_url(uri)} does not answer within "
                                  f"{REACHABILITY_TIMEOUT_S:.0f} s ({reason}); start it, or point "
                                  "MLFLOW_TRACKING_URI at one that runs") from err
    if status != 200:
        raise TrackingUnavailable(f"tracking server {redact_url(uri)} answers /health with HTTP {status}; "
                                  "is MLFLOW_TRACKING_URI an MLflow server?")
    _ready.add(uri)


def _create_local_store(uri: str) -> None:
    """MLflow creates and migrates a new SQLite store's tables on first open, unguarded: two commands started
    together on a new workspace both migrate, and one dies ("duplicate column name: step"). The first open
    happens here, one process at a time; later opens find the tables made and migrate nothing."""
    require("tracking")  # a clear fix to print when MLflow is not installed
    from mlflow.tracking import MlflowClient

    database = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
    with exclusive_file_lock(database.with_name(database.name + ".init-lock")):
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)


def _check_tracking_uri(uri: str) -> None:
    """Faults MLflow would report with a traceback deep inside a command: a port that is not a number, and
    a file store (`./mlruns`), which MLflow 3 refuses unless MLFLOW_ALLOW_FILE_STORE is set."""
    parts = urlsplit(uri)
    try:
        parts.port  # noqa: B018  # the property is what raises
    except ValueError as err:
        raise InputError(f"tracking URI {redact_url(uri)}: {err}; fix the port in MLFLOW_TRACKING_URI") from err
    file_store = parts.scheme == "file" or (parts.scheme == "" and not uri.startswith("databricks"))
    if file_store and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("true", "1"):
        raise InputError(f"tracking URI {redact_url(uri)} is an MLflow file store, which this MLflow no longer "
                         "opens; migrate it (`mlflow migrate-filestore`) to sqlite:///mlflow.db and set "
                         "MLFLOW_TRACKING_URI to that, or unset MLFLOW_TRACKING_URI to use the workspace store")


def require_tracking(tracking_uri: str | None = None) -> None:
    """Called first by every command that will track: a dead server fails it in seconds, before the work."""
    check_tracking_reachable(resolve_tracking_uri(tracking_uri))


def tracking_client(tracking_uri: str | None = None) -> Any:
    """An MlflowClient (tracking and registry) for the resolved URI, after the reachability check."""
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = resolve_tracking_uri(tracking_uri)
    check_tracking_reachable(uri)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> dotted MLflow parameters (values as strings, clipped to MLflow's limit)."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            flat[name] = text[:_MAX_PARAM_CHARS]
    return flat


class TrackedRun:
    """The handle commands log through. Mirrors the callback protocol the trainer expects."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def log_params(self, params: dict[str, Any]) -> None:
        import mlflow

        flat = flatten(params)
        items = list(flat.items())
        for start in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            mlflow.log_params(dict(items[start:start + 100]))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        import mlflow

        path = Path(path)
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=artifact_path)
        else:
            mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def log_dict(self, payload: dict[str, Any], name: str) -> None:
        import mlflow

        mlflow.log_dict(payload, name)

    def set_tags(self, tags: dict[str, str]) -> None:
        import mlflow

        mlflow.set_tags(tags)

    def log_snapshot_input(self, snapshot_hash: str, catalog_url: str, counts: dict[str, Any]) -> None:
        """Record the catalog snapshot as the run's dataset input (MLflow's lineage view shows it)."""
        import mlflow
        from mlflow.data.meta_dataset import MetaDataset

        source = CatalogSnapshotSource(redact_url(catalog_url), snapshot_hash)
        # mlflow declares `profile` abstract on MetaDataset, yet instantiates it itself.
        dataset = MetaDataset(  # type: ignore[abstract]
            source=source, name=f"snapshot-{snapshot_hash[:12]}", digest=snapshot_hash[:36])
        mlflow.log_input(dataset, context="training", tags={k: str(v) for k, v in counts.items()})


@functools.cache
def _snapshot_source_class() -> type:
    from mlflow.data.dataset_source import DatasetSource

    class _CatalogSnapshotSource(DatasetSource):
        """A snapshot in the toolkit's SQL catalog (not loadable by MLflow itself)."""

        def __init__(self, catalog: str, snapshot: str) -> None:
            self.catalog = catalog
            self.snapshot = snapshot

        @staticmethod
        def _get_source_type() -> str:
            return "toolkit_catalog"

        def load(self, **_: Any) -> Any:
            raise NotImplementedError("load snapshots with the toolkit: `toolkit data snapshots`")

        @staticmethod
        def _can_resolve(raw_source: Any) -> bool:
            return False

        @classmethod
        def _resolve(cls, raw_source: Any) -> Any:
            raise NotImplementedError

        def to_dict(self) -> dict[str, Any]:
            return {"catalog": self.catalog, "snapshot": self.snapshot}

        @classmethod
        def from_dict(cls, source_dict: dict[Any, Any]) -> Any:
            return cls(source_dict["catalog"], source_dict["snapshot"])

    return _CatalogSnapshotSource


def CatalogSnapshotSource(catalog: str, snapshot: str) -> Any:
    return _snapshot_source_class()(catalog, snapshot)


def ensure_experiment(name: str = DEFAULT_EXPERIMENT, tracking_uri: str | None = None) -> str:
    """Create the experiment if needed, with artifacts in the workspace for the local default store."""
    import mlflow

    uri = resolve_tracking_uri(tracking_uri)
    check_tracking_reachable(uri)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    location = None
    if not uri.startswith(("http://", "https://", "databricks")):
        location = (workspace_dir() / "mlartifacts" / name).as_uri()
    try:
        return str(mlflow.create_experiment(name, artifact_location=location))
    except mlflow.exceptions.MlflowException:
        # Another command started at the same time may have created it first: then it is that one.
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


@contextmanager
def tracked_run(lineage: Lineage, params: dict[str, Any] | None = None, *, run_name: str | None = None,
                experiment: str = DEFAULT_EXPERIMENT, tracking_uri: str | None = None) -> Iterator[TrackedRun]:
    """Open an MLflow run with lineage tags; it ends FAILED if the body raises."""

    import mlflow

    # MLflow writes "View run at …" to stdout for server URIs; our stdout is reserved for --json output.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    experiment_id = ensure_experiment(experiment, tracking_uri)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name,
                          tags=lineage.tags(current_actor())) as active:
        run = TrackedRun(active.info.run_id)
        if params:
            run.log_params(params)
        yield run


def read_lineage(run_id: str, tracking_uri: str | None = None) -> dict[str, Any]:
    """Lineage as MLflow alone knows it: tags, dataset inputs, parameters, and the parent chain."""
    client = tracking_client(tracking_uri)
    chain: list[dict[str, Any]] = []
    current: str | None = run_id
    while current:
        run = client.get_run(current)
        tags = {k[len(TAG_PREFIX):]: v for k, v in run.data.tags.items() if k.startswith(TAG_PREFIX)}
        datasets = [{"name": d.dataset.name, "digest": d.dataset.digest, "source": d.dataset.source}
                    for d in (run.inputs.dataset_inputs if run.inputs else [])]
        chain.append({"run_id": current, "status": run.info.status, "tags": tags, "datasets": datasets,
                      "params": dict(run.data.params), "metrics": dict(run.data.metrics)})
        current = tags.get("parent_run")
    return {"run_id": run_id, "chain": chain}
