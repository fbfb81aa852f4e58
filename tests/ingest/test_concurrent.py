"""Two ingests of one source at the same time: both succeed, and together they store what one clean run stores."""

from __future__ import annotations

import json
import subprocess

from tests.helpers import catalog_state, ingest_command, toolkit_env, write_noise_manifest


def test_two_concurrent_ingests_of_one_source_equal_one_clean_ingest(catalog_url, tmp_path):
    manifest = write_noise_manifest(tmp_path)
    clean_url = f"sqlite:///{tmp_path / 'clean.db'}"
    subprocess.run(ingest_command(manifest, clean_url), env=toolkit_env(tmp_path / "ws"), check=True,
                   capture_output=True)
    clean = catalog_state(clean_url)

    # Both start on a catalog that does not exist yet, so creation and the chunk inserts race.
    runs = [subprocess.Popen(ingest_command(manifest, catalog_url), env=toolkit_env(tmp_path / "ws"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    for run, (_, stderr) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, stderr[-2000:]
    assert catalog_state(catalog_url) == clean
    reports = [json.loads(stdout) for stdout, _ in outputs]
    assert sum(r["captions_added"] for r in reports) == clean["captions"]
    assert sum(r["images_added"] for r in reports) == clean["images"]
    assert sum(r["sentences_added"] for r in reports) == clean["sentences"]
