"""Reproduce the screenshots in docs/reviewer-guide.md from a real MLflow UI in headless Chromium.

    python docs/review_screenshot.py            # needs Debian's chromium (apt-get install chromium)

It builds a small evaluation run whose failures are review traces (the same code path as `toolkit eval`),
records one verdict as MLflow feedback, serves the MLflow UI on localhost and photographs it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image, ImageDraw

DOCS = Path(__file__).resolve().parent


def _scene(path: Path, left: str, right: str) -> None:
    image = Image.new("RGB", (224, 224), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((20, 80, 90, 150), fill=left)
    draw.ellipse((130, 80, 200, 150), fill=right)
    image.save(path)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _shoot(url: str, target: Path, profile: Path) -> None:
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={profile}", "--window-size=1500,950", "--virtual-time-budget=20000",
                    "--hide-scrollbars", f"--screenshot={target}", url], check=True, capture_output=True, timeout=180)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="review-shot-"))
    os.environ["TOOLKIT_WORKSPACE"] = str(work / "ws")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    import mlflow
    from mlflow.entities import AssessmentSource

    from toolkit.catalog import open_store
    from toolkit.governance.review import Failure, log_review_traces, record_failures
    from toolkit.tracking import Lineage, tracked_run

    store = open_store(f"sqlite:///{work / 'ws' / 'catalog.db'}")
    scenes = [("red", "blue", "a red cube left of a blue ball", "a blue cube left of a red ball", "swap_across"),
              ("green", "yellow", "a green cube left of a yellow ball", "a yellow cube left of a green ball",
               "swap_within"),
              ("purple", "orange", "a purple cube left of an orange ball", "a purple cube left of an orange cone",
               "replace")]
    failures = []
    for index, (left, right, positive, confuser, generator) in enumerate(scenes):
        path = work / f"scene-{index}.png"
        _scene(path, left, right)
        failures.append(Failure("domain", f"swap/acc/{index}", "composition", str(path), positive, confuser,
                                0.241 + index / 100, 0.263 + index / 100, generator))
    with tracked_run(Lineage(kind="eval"), {"models": {"m0": "runs/clic"}}, run_name="eval") as run:
        from toolkit.governance.eval_run import _log_failure_images

        ids = record_failures(store, run.run_id, "runs/clic", failures)
        log_review_traces(store, ids, _log_failure_images(run, ids, failures))
    experiment_id = mlflow.get_run(run.run_id).info.experiment_id
    traces = mlflow.search_traces(locations=[experiment_id], run_id=run.run_id, return_type="list")
    first = next(t for t in traces if t.data.spans[0].attributes["toolkit.review_item"] == ids[0])
    mlflow.log_feedback(trace_id=first.info.trace_id, name="verdict", value="model_error",
                        source=AssessmentSource(source_type="HUMAN", source_id="reviewer@example.com"),
                        rationale="The image clearly shows the red cube on the left.")

    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{work / 'ws' / 'mlflow.db'}", "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        _shoot(f"{base}/#/experiments/{experiment_id}/traces", DOCS / "review-traces.png", work / "profile1")
        _shoot(f"{base}/#/experiments/{experiment_id}/traces?selectedEvaluationId={first.info.trace_id}"
               f"&selectedTraceId={first.info.trace_id}", DOCS / "review-trace-verdict.png", work / "profile2")
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"wrote {DOCS / 'review-traces.png'} and {DOCS / 'review-trace-verdict.png'}")


if __name__ == "__main__":
    main()
