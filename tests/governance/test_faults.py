"""Promotion and rollback fail closed: a real `mlflow server` behind a fault-injection proxy (tests.helpers.FaultProxy)
answers 403, 503 or nothing at all to one registry call at a time; the champion must never move.

The registry state is set up directly on the server (not through the proxy), so only the command under test
meets the faults. MLFLOW_HTTP_REQUEST_MAX_RETRIES=0 makes a single 503 final, as a longer outage would be.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from tests.helpers import FaultProxy, run_toolkit

REGISTRY_CALL = r"/api/2\.0/mlflow/(registered-models|model-versions)/"
STRONG = {"composition": 62.5, "retrieval_r5": 80.0, "zeroshot_top1": 60.0, "parity_passed": 1.0,
          "unreviewed_share": 0.0}


@pytest.fixture
def proxy(mlflow_server, monkeypatch):
    faults = FaultProxy(mlflow_server).start()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", faults.uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    yield faults
    faults.stop()


def _direct(mlflow_server):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)


def _registry(mlflow_server, champion: dict[str, float], challenger: dict[str, float], *,
              promoted_over: bool = False) -> str:
    """A model with version 1 (champion) and version 2 (challenger); with `promoted_over`, version 2 is the
    champion and replaced version 1 (a rollback target)."""
    client = _direct(mlflow_server)
    name = f"faults-{uuid.uuid4().hex[:10]}"
    experiment = client.create_experiment(name)
    client.create_registered_model(name)
    for metrics in (champion, challenger):
        run = client.create_run(experiment)
        tags = {f"gate.{k}": str(v) for k, v in metrics.items()}
        client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id, tags=tags)
    if promoted_over:
        client.set_registered_model_alias(name, "champion", "2")
        client.set_model_version_tag(name, "2", "toolkit.previous_champion", "1")
    else:
        client.set_registered_model_alias(name, "champion", "1")
    client.set_registered_model_alias(name, "challenger", "2")
    return name


def _state(mlflow_server, name: str) -> dict[str, object]:
    """What a fault must not change: the aliases, and which versions are retired."""
    client = _direct(mlflow_server)
    model = client.get_registered_model(name)
    retired = [v for v in ("1", "2") if "toolkit.rolled_back" in client.get_model_version(name, v).tags]
    return {"aliases": dict(model.aliases), "retired": retired}


def _audit(db: str, action: str) -> list[dict]:
    from toolkit.catalog import open_store
    from toolkit.catalog.models import AuditEvent

    with open_store(db).session() as session:
        return list(session.scalars(select(AuditEvent.details).where(AuditEvent.action == action)))


def test_a_refused_champion_lookup_does_not_promote_a_worse_challenger(proxy, mlflow_server, tmp_path):
    """The issue's case: the champion lookup answers 403, the challenger (50) is worse than the champion (62.5)."""
    db = f"sqlite:///{tmp_path / 'catalog.db'}"
    name = _registry(mlflow_server, STRONG, {**STRONG, "composition": 50.0})
    before = _state(mlflow_server, name)
    proxy.fail(r"/registered-models/alias", "403", method="GET", query=r"alias=champion")
    proxy.fail(r"/registered-models/get", "403", method="GET")
    result = run_toolkit(["promote", "--name", name, "--db", db])
    assert result.exit_code == 5, result.output
    assert "registry" in result.output and "403" in result.output
    assert _state(mlflow_server, name) == before
    refusals = _audit(db, "registry.refuse")
    assert refusals and "registry unavailable" in refusals[-1]["reason"]
    assert _audit(db, "registry.promote") == []


def _calls_of_a_clean_run(proxy, mlflow_server, args: list[str], **registry) -> int:
    name = _registry(mlflow_server, **registry)
    proxy.clear()
    result = run_toolkit([*args, "--name", name])
    assert result.exit_code == 0, result.output
    calls = [r for r in proxy.requests if "/registered-models/" in r[1] or "/model-versions/" in r[1]]
    assert calls, proxy.requests
    return len(calls)


@pytest.mark.parametrize("fault", ["403", "503", "hang"])
def test_promote_changes_nothing_when_any_registry_call_fails(proxy, mlflow_server, tmp_path, fault):
    db = f"sqlite:///{tmp_path / 'catalog.db'}"
    better = {"champion": STRONG, "challenger": {**STRONG, "composition": 75.0}}
    args = ["promote", "--db", db]
    calls = _calls_of_a_clean_run(proxy, mlflow_server, args, **better)
    for nth in range(calls):
        name = _registry(mlflow_server, **better)
        before = _state(mlflow_server, name)
        proxy.clear()
        proxy.fail_nth(REGISTRY_CALL, nth, fault)
        result = run_toolkit([*args, "--name", name])
        assert proxy.faulted, f"call {nth} of {calls} was never made"
        assert result.exit_code == 5, (nth, proxy.faulted, result.output)
        assert _state(mlflow_server, name) == before, (nth, proxy.faulted)


@pytest.mark.parametrize("fault", ["403", "503", "hang"])
def test_rollback_changes_nothing_when_any_registry_call_fails(proxy, mlflow_server, tmp_path, fault):
    db = f"sqlite:///{tmp_path / 'catalog.db'}"
    setup = {"champion": STRONG, "challenger": STRONG, "promoted_over": True}
    args = ["rollback", "--db", db]
    calls = _calls_of_a_clean_run(proxy, mlflow_server, args, **setup)
    for nth in range(calls):
        name = _registry(mlflow_server, **setup)
        before = _state(mlflow_server, name)
        proxy.clear()
        proxy.fail_nth(REGISTRY_CALL, nth, fault)
        result = run_toolkit([*args, "--name", name])
        assert proxy.faulted, f"call {nth} of {calls} was never made"
        assert result.exit_code == 3, (nth, proxy.faulted, result.output)
        assert _state(mlflow_server, name) == before, (nth, proxy.faulted)
        assert "registry" in result.output
