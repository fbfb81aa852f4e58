"""The MLflow model registry as the rollout ledger: candidates are model versions, aliases mark stages.

    challenger  the newest registered candidate, e.g. in shadow rollout
    champion    what production serves; moved only by `promote` (gates passed) or `rollback`

Every promotion, refusal and rollback is appended to the catalog's audit log and written as a tag on
the model version, so either system alone tells the story. A rolled-back version is retired: it loses the
`challenger` alias and `promote` refuses it; registering the model again gives it a new version and evidence.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from toolkit.catalog.db import Store
from toolkit.core.config import current_actor, redact_url, resolve_tracking_uri
from toolkit.core.errors import InputError, Refused
from toolkit.governance.gates import GateReport, GateThresholds, evaluate_gates
from toolkit.governance.review import regression_set, review_progress
from toolkit.runtime.manifest import MANIFEST, BundleError, parity_passed, verify_bundle
from toolkit.tracking import Lineage, tracked_run, tracking_client

CHALLENGER = "challenger"
CHAMPION = "champion"
GATE_TAG = "gate."
PREVIOUS_CHAMPION_TAG = "toolkit.previous_champion"
ROLLED_BACK_TAG = "toolkit.rolled_back"


class RegistryError(InputError):
    pass


class RegistryUnavailable(RegistryError):
    """The registry could not be read or written (server down, refused, timed out). Never read as "absent"."""


class PromotionRefused(Refused):
    """Promotion refused because a fact it needs (champion, challenger, scores) could not be read (exit 5)."""


def _is_not_found(err: Exception) -> bool:
    """Only the server's explicit "does not exist" means absent; 403, 503, timeouts and the like do not."""
    return getattr(err, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def _unavailable(what: str, err: Exception) -> RegistryUnavailable:

    reason = " ".join(str(err).split())[:300]
    return RegistryUnavailable(f"cannot {what} in the model registry {redact_url(resolve_tracking_uri())}: "
                               f"{type(err).__name__}: {reason}")


@dataclass(frozen=True)
class PromotionResult:
    name: str
    version: str
    previous_champion: str | None
    report: GateReport

    @property
    def promoted(self) -> bool:
        return self.report.passed

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "previous_champion": self.previous_champion,
                "promoted": self.promoted, **self.report.as_dict()}


def _client() -> Any:

    return tracking_client()


def check_model_folder(model_dir: Path) -> None:
    """Refuse a folder that `load_model` cannot load (no card, an empty card, missing or mismatched weights):
    a registered version must be a model that promotion can score and serving can load."""
    from toolkit.adapters.base import ModelLoadError  # torch loads only when a model does (here, not at the top)
    from toolkit.adapters.loading import MODEL_CARD, load_model

    if not (model_dir / MODEL_CARD).is_file():
        raise RegistryError(f"{model_dir} is not a toolkit model folder (no {MODEL_CARD})")
    try:
        load_model(str(model_dir))
    except ModelLoadError as err:
        raise RegistryError(f"{model_dir} cannot be loaded as a model: {err}") from err
    except (KeyError, TypeError, ValueError) as err:  # a card with the family but not the adapter's keys
        raise RegistryError(f"{model_dir / MODEL_CARD} is incomplete ({type(err).__name__}: {err}); "
                            "was it written by `toolkit train` or `toolkit interpolate`?") from err


def unreviewed_share_of_run(store: Store, eval_run_id: str) -> float:
    """The unreviewed share of an evaluation's failures. A run with no review items counts as 0.0 only if it
    is a run of the tracking store (an evaluation without failures), not a mistyped id."""
    progress = review_progress(store, eval_run_id)
    if progress["items"] == 0:
        try:
            _client().get_run(eval_run_id)
        except Exception as err:  # MLflow: not found; or the tracking server cannot be reached
            from toolkit.core.config import redact_url, resolve_tracking_uri

            raise RegistryError(
                f"evaluation run {eval_run_id!r} has no review items in the catalog and is not a run of the "
                f"tracking store {redact_url(resolve_tracking_uri())} ({err}); "
                "pass the id `toolkit eval` printed") from err
    return float(progress["unreviewed_share"])


def bundle_parity(bundle_dir: Path, model_dir: Path) -> float:
    """1.0 if the intact bundle exported from `model_dir`'s very weights passed fp32 parity, else 0.0.

    A bundle of other weights (another run, an older checkpoint) is no evidence about this model: refused."""
    from toolkit.adapters.base import ModelLoadError  # torch loads only when a model does (here, not at the top)
    from toolkit.adapters.outputs import weights_sha256

    try:
        manifest = verify_bundle(bundle_dir)
    except BundleError as err:
        raise RegistryError(str(err)) from err
    try:
        own = weights_sha256(str(model_dir))
    except (ModelLoadError, OSError, KeyError, TypeError) as err:
        raise RegistryError(f"cannot hash the weights of {model_dir}: {err}") from err
    exported = manifest.get("weights_sha256")
    if exported != own:
        raise RegistryError(f"bundle {bundle_dir} was exported from other weights than {model_dir}: "
                            f"{bundle_dir / MANIFEST} records weights_sha256 {exported}, the model's is {own}; "
                            f"export this model (`toolkit export --model {model_dir}`)")
    return 1.0 if parity_passed(manifest) else 0.0


def register_candidate(model_dir: Path, name: str, gate_metrics: dict[str, float], *,
                       lineage: Lineage | None = None, description: str = "") -> str:
    """Log `model_dir` as a model version of `name`, tag its gate metrics, and point `challenger` at it."""
    client = _client()  # first: a dead registry is refused before the model is loaded
    check_model_folder(model_dir)
    with tracked_run(lineage or Lineage(kind="register"), {"model_dir": str(model_dir)},
                     run_name=f"register-{name}") as run:
        run.log_artifact(model_dir, artifact_path="model")
        import mlflow

        source = mlflow.get_artifact_uri("model")
    try:
        client.get_registered_model(name)
    except Exception as err:
        if not _is_not_found(err):
            raise _unavailable(f"read registered model {name!r}", err) from err
        client.create_registered_model(name, description="CLIC-tuned text encoder (image tower frozen)")
    tags = {GATE_TAG + k: str(float(v)) for k, v in gate_metrics.items()}
    version = client.create_model_version(name, source=source, run_id=run.run_id, tags=tags, description=description)
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    return str(version.version)


def _aliases_of(client: Any, name: str) -> dict[str, str]:
    """alias -> version of a registered model, read in one call; {} only if the model does not exist.

    One read of the model (not one lookup per alias) so that a refused or failed lookup can never be
    mistaken for "this alias is not set": any error but the server's "does not exist" is raised."""
    try:
        model = client.get_registered_model(name)
    except Exception as err:
        if _is_not_found(err):
            return {}
        raise _unavailable(f"read the aliases of {name!r}", err) from err
    return {str(alias): str(version) for alias, version in (model.aliases or {}).items()}


def _version(client: Any, name: str, version: str, role: str) -> Any:
    try:
        return client.get_model_version(name, version)
    except Exception as err:
        if _is_not_found(err):
            raise RegistryError(f"model {name!r} has no version {version!r} ({role})") from err
        raise _unavailable(f"read version {version} of {name!r} ({role})", err) from err


def gate_metrics_of(version: Any) -> dict[str, float]:
    return {k[len(GATE_TAG):]: float(v) for k, v in version.tags.items() if k.startswith(GATE_TAG)}


def promote(store: Store, name: str, version: str, thresholds: GateThresholds, *,
            regression_accuracy: Callable[[str], float] | None = None, actor: str | None = None) -> PromotionResult:
    """Move `champion` to `version` only if every gate passes against the current champion.

    `regression_accuracy(model_source_uri)` re-scores a model on today's regression set, so candidate and
    champion are compared on the same items even when the set has grown since the champion was promoted
    (see `toolkit.governance.regression.regression_scorer`). While the set is not empty, a candidate
    without that score fails the regression gate.

    Fails closed: if the registry cannot be read or written, the champion is left as it was, the refusal is
    audited and `PromotionRefused` (exit 5) names what could not be read.
    """
    actor = actor or current_actor()
    try:
        return _promote(store, name, version, thresholds, regression_accuracy, actor)
    except RegistryUnavailable as err:
        store.audit("registry.refuse", f"{name}/{version}", {
            "actor": actor, "at": datetime.now(timezone.utc).isoformat(), "passed": False,
            "reason": f"registry unavailable: {err}"}, actor=actor)
        raise PromotionRefused(f"promotion of {name} v{version} refused, champion unchanged: {err}") from err


def _promote(store: Store, name: str, version: str, thresholds: GateThresholds,
             regression_accuracy: Callable[[str], float] | None, actor: str) -> PromotionResult:
    client = _client()
    candidate = _version(client, name, version, "candidate")
    if ROLLED_BACK_TAG in candidate.tags:
        raise RegistryError(f"version {version} of {name!r} was rolled back ({candidate.tags[ROLLED_BACK_TAG]}); "
                            "its evidence is spent: register it again with fresh evidence (`toolkit register`)")
    champion_version = _aliases_of(client, name).get(CHAMPION)
    champion = _version(client, name, champion_version, "champion") if champion_version is not None else None
    if champion is not None and str(champion.version) == str(version):
        raise RegistryError(f"version {version} of {name!r} is already the champion")
    candidate_metrics = gate_metrics_of(candidate)
    champion_metrics = gate_metrics_of(champion) if champion is not None else None
    if regression_accuracy is not None:
        candidate_metrics["regression_acc"] = regression_accuracy(candidate.source)
        if champion is not None and champion_metrics is not None:
            champion_metrics["regression_acc"] = regression_accuracy(champion.source)
    required = frozenset({"regression_acc"}) if regression_set(store) else frozenset()
    report = evaluate_gates(candidate_metrics, champion_metrics, thresholds, required=required)
    previous = str(champion.version) if champion is not None else None
    result = PromotionResult(name, str(version), previous, report)
    record = {"actor": actor, "at": datetime.now(timezone.utc).isoformat(), "thresholds": thresholds.__dict__,
              "champion_before": previous, **report.as_dict()}
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    try:
        if report.passed:
            # Tags first, the alias last: a failure part-way leaves the champion where it was.
            if previous is not None:
                client.set_model_version_tag(name, str(version), PREVIOUS_CHAMPION_TAG, previous)
            client.set_model_version_tag(name, str(version), f"toolkit.promotion.{stamp}", json.dumps(record)[:5000])
            if _aliases_of(client, name).get(CHAMPION) != previous:  # someone else moved it meanwhile
                raise RegistryUnavailable(f"the champion of {name!r} changed during promotion; run it again")
            client.set_registered_model_alias(name, CHAMPION, str(version))
        else:
            client.set_model_version_tag(name, str(version), f"toolkit.refusal.{stamp}", json.dumps(record)[:5000])
    except RegistryUnavailable:
        raise
    except Exception as err:
        raise _unavailable(f"record the promotion of version {version} of {name!r}", err) from err
    store.audit("registry.promote" if report.passed else "registry.refuse", f"{name}/{version}", record, actor=actor)
    return result


def rollback(store: Store, name: str, *, actor: str | None = None) -> tuple[str, str]:
    """Point `champion` back at the version it replaced. Returns (from_version, to_version).

    Every fact is read before anything is written, and the alias moves before the tags; if a later write
    fails the alias is moved back, so a registry fault leaves the champion as it was."""
    client = _client()
    actor = actor or current_actor()
    current = _aliases_of(client, name)
    if CHAMPION not in current:
        raise RegistryError(f"model {name!r} has no champion to roll back")
    champion = _version(client, name, current[CHAMPION], "champion")
    previous = champion.tags.get(PREVIOUS_CHAMPION_TAG)
    if not previous:
        raise RegistryError(f"champion version {champion.version} of {name!r} replaced nothing; no rollback target")
    _version(client, name, previous, "rollback target")
    record = {"actor": actor, "at": datetime.now(timezone.utc).isoformat(), "from": str(champion.version),
              "to": previous}
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    undo: list[Callable[[], Any]] = []  # what to run, newest first, if a later write fails
    try:
        client.set_registered_model_alias(name, CHAMPION, previous)
        undo.append(lambda: client.set_registered_model_alias(name, CHAMPION, str(champion.version)))
        client.set_model_version_tag(name, str(champion.version), f"toolkit.rollback.{stamp}", json.dumps(record))
        # Retired: without this, a plain `promote` re-promotes it through the challenger alias.
        client.set_model_version_tag(name, str(champion.version), ROLLED_BACK_TAG, json.dumps(record))
        undo.append(lambda: client.delete_model_version_tag(name, str(champion.version), ROLLED_BACK_TAG))
        if current.get(CHALLENGER) == str(champion.version):
            client.delete_registered_model_alias(name, CHALLENGER)
    except Exception as err:
        failed_undo = []
        for step in reversed(undo):
            try:
                step()
            except Exception as undo_err:  # report it; the operator must look
                failed_undo.append(str(undo_err)[:200])
        state = (f"undoing ALSO failed ({'; '.join(failed_undo)}): check the registry" if failed_undo
                 else "nothing changed")
        raise _unavailable(f"roll back the champion of {name!r} ({state})", err) from err
    store.audit("registry.rollback", f"{name}/{champion.version}", record, actor=actor)
    return str(champion.version), previous


def promotion_target(store: Store, name: str, version: str | None, *, actor: str | None = None) -> str:
    """The version to promote: `version`, or the challenger. An unreadable registry is an audited refusal."""
    if version is not None:
        return version
    try:
        target = aliases(name)[CHALLENGER]
    except RegistryUnavailable as err:
        actor = actor or current_actor()
        store.audit("registry.refuse", f"{name}/?", {"actor": actor, "at": datetime.now(timezone.utc).isoformat(),
                                                     "passed": False, "reason": f"registry unavailable: {err}"},
                    actor=actor)
        raise PromotionRefused(f"promotion of {name} refused, champion unchanged: cannot read the challenger: "
                               f"{err}") from err
    if target is None:
        raise RegistryError(f"model {name!r} has no challenger; register one, or pass --version")
    return target


def aliases(name: str) -> dict[str, str | None]:
    current = _aliases_of(_client(), name)
    return {alias: current.get(alias) for alias in (CHALLENGER, CHAMPION)}
