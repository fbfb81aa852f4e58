"""Benchmark loaders: public compositional sets from local files, retrieval and domain sets from the catalog.

`--benchmark KIND:PATH` forms (see `parse_benchmark_spec`):
    sugarcrepe_pp:<folder>   replace_att.json replace_obj.json replace_rel.json swap_att.json swap_obj.json,
                             each a list of {id, filename, caption, caption2, negative_caption}
    sugarcrepe:<folder>      add_att.json add_obj.json replace_att.json replace_obj.json replace_rel.json
                             swap_att.json swap_obj.json, each a dict "0","1",… of
                             {filename, caption, negative_caption}
    winoground:<folder>      examples.jsonl (id, caption_0, caption_1, image_0, image_1) + images/<name>.png
    zeroshot:<labels.json>   {"classnames": [...], "templates": ["a photo of a {}.", ...],
                              "images": [{"path": "rel/path.jpg", "label": "<classname or index>"}, ...]}
    retrieval:<snapshot>:<split>   captions of a catalog snapshot's split, e.g. retrieval:latest:test
    domain:<snapshot>:<split>[:<set name>]   a stored domain test set (see toolkit.eval.domain_sets)

Image files for sugarcrepe_pp/sugarcrepe/winoground are looked up in `images_dir` (e.g. COCO val2017),
by default `<folder>/images`; zeroshot paths are relative to `images_dir`, by default the labels file's
folder. Retrieval and domain images come from the catalog (images_root/path of each image).
Every loader checks that each image exists, so a run never fails half-way through.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.catalog.db import open_store
from toolkit.catalog.models import Caption, Image, SnapshotMember
from toolkit.catalog.snapshot import resolve_snapshot
from toolkit.core.config import resolve_db_url
from toolkit.core.errors import InputError
from toolkit.eval.names import KINDS

SUGARCREPE_PP_SUBSETS = ("replace_att", "replace_obj", "replace_rel", "swap_att", "swap_obj")
SUGARCREPE_SUBSETS = ("add_att", "add_obj", "replace_att", "replace_obj", "replace_rel", "swap_att",
                      "swap_obj")


class BenchmarkError(InputError):
    """A benchmark file or reference that cannot be used; the message names the file/key and the fix."""


@dataclass(frozen=True)
class BenchmarkSpec:
    kind: str
    path: str  # folder or file, or "<snapshot>:<split>[:<name>]" for catalog-backed kinds

    @property
    def label(self) -> str:
        return self.kind


@dataclass(frozen=True)
class CompositionItem:
    """One image with a positive caption (two for SugarCrepe++) and a hard negative."""

    item_id: str
    image: Path
    positive: str
    negative: str
    positive2: str | None = None
    generator: str = ""  # how the negative was made: the subset name, or a domain generator


@dataclass(frozen=True)
class CompositionSet:
    kind: str  # sugarcrepe_pp | sugarcrepe | domain
    source: str
    subsets: dict[str, list[CompositionItem]]


@dataclass(frozen=True)
class WinogroundItem:
    item_id: str
    image_0: Path
    image_1: Path
    caption_0: str
    caption_1: str


@dataclass(frozen=True)
class WinogroundSet:
    source: str
    items: list[WinogroundItem]
    kind: str = "winoground"


@dataclass(frozen=True)
class ZeroShotSet:
    source: str
    classnames: list[str]
    templates: list[str]
    images: list[Path]
    labels: list[int]
    kind: str = "zeroshot"


@dataclass(frozen=True)
class RetrievalSet:
    source: str
    images: list[Path]
    texts: list[str]
    text_image: list[int]  # index into `images` for each text
    text_ids: list[str]  # caption ids, for failure reports
    kind: str = "retrieval"


Benchmark = CompositionSet | WinogroundSet | ZeroShotSet | RetrievalSet


def parse_benchmark_spec(text: str) -> BenchmarkSpec:
    kind, sep, path = text.partition(":")
    if not sep or not path or kind not in KINDS:
        raise BenchmarkError(f"--benchmark {text!r}: expected KIND:PATH with KIND one of {', '.join(KINDS)} "
                             "(e.g. sugarcrepe_pp:/data/scpp or retrieval:latest:test)")
    if kind == "retrieval" and path.endswith(".jsonl"):
        return BenchmarkSpec(kind, path)
    if kind in ("retrieval", "domain") and path.count(":") < 1:
        raise BenchmarkError(f"--benchmark {text!r}: {kind} needs <snapshot>:<split>, "
                             f"e.g. {kind}:latest:test" + (" (or a manifest .jsonl)" if kind == "retrieval" else ""))
    return BenchmarkSpec(kind, path)


def _read_text(path: Path, what: str) -> str:
    """A benchmark file's UTF-8 text; every way it can fail to read is reported with the file."""
    if path.is_dir():
        raise BenchmarkError(f"{path} is a folder, not a file; {what}")
    if not path.exists():
        raise BenchmarkError(f"{path} does not exist; {what}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise BenchmarkError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); save it as "
                             "UTF-8") from err
    except OSError as err:
        raise BenchmarkError(f"{path} cannot be read ({err.strerror or err}); check its permissions") from err


def _read_json(path: Path, what: str) -> Any:
    text = _read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise BenchmarkError(f"{path} is not valid JSON ({err}); {what}") from err


def _json_kind(value: Any) -> str:
    """What a JSON value is, in JSON's words, for messages about the wrong type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({json.dumps(value)})"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def _object(record: Any, where: str, keys: str) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise BenchmarkError(f"{where}: expected a JSON object {{{keys}}}, got {_json_kind(record)}")
    return record


def _text_field(record: Any, key: str, where: str) -> str:
    record = _object(record, where, key + ", …")
    value = record.get(key)
    if key in record and not isinstance(value, str):
        raise BenchmarkError(f"{where}: text field {key!r} is {_json_kind(value)}, not text")
    if not isinstance(value, str) or not value.strip():
        present = ", ".join(sorted(record)) or "none"
        raise BenchmarkError(f"{where}: missing or empty text field {key!r} (keys present: {present})")
    return value


def _existing_image(folder: Path, name: str, where: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise BenchmarkError(f"{where}: image {path} does not exist; pass --images with the folder that "
                             "holds the benchmark's images")
    return path


def _folder(path: str, kind: str) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise BenchmarkError(f"{kind}: {folder} is not a folder; point {kind}:PATH at the benchmark folder")
    return folder


def _present_subsets(root: Path, names: tuple[str, ...], benchmark: str) -> list[str]:
    """The subset files a folder has; the public releases have all of them, a folder with some scores those.

    A subset name that exists but is no file is kept, so reading it says what is wrong instead of skipping it."""
    present = [name for name in names if (root / f"{name}.json").exists()]
    if not present:
        raise BenchmarkError(f"{root}: no {benchmark} subset file found; expected some of "
                             f"{', '.join(name + '.json' for name in names)} (as in the public release)")
    return present


def load_sugarcrepe_pp(folder: str | Path, images_dir: str | Path | None = None) -> CompositionSet:
    root = _folder(str(folder), "sugarcrepe_pp")
    images = Path(images_dir) if images_dir else root / "images"
    subsets: dict[str, list[CompositionItem]] = {}
    for subset in _present_subsets(root, SUGARCREPE_PP_SUBSETS, "SugarCrepe++"):
        path = root / f"{subset}.json"
        records = _read_json(path, "a SugarCrepe++ subset file")
        if not isinstance(records, list) or not records:
            raise BenchmarkError(f"{path}: expected a non-empty JSON list of items (the SugarCrepe++ format)")
        items = []
        for row, record in enumerate(records):
            where = f"{path} item {row}"
            if "id" not in _object(record, where, "id, filename, caption, caption2, negative_caption"):
                raise BenchmarkError(f"{where}: missing key 'id'")
            items.append(CompositionItem(
                item_id=str(record["id"]),
                image=_existing_image(images, _text_field(record, "filename", where), where),
                positive=_text_field(record, "caption", where),
                positive2=_text_field(record, "caption2", where),
                negative=_text_field(record, "negative_caption", where),
                generator=subset,
            ))
        subsets[subset] = items
    return CompositionSet("sugarcrepe_pp", str(root), subsets)


def load_sugarcrepe(folder: str | Path, images_dir: str | Path | None = None) -> CompositionSet:
    root = _folder(str(folder), "sugarcrepe")
    images = Path(images_dir) if images_dir else root / "images"
    subsets: dict[str, list[CompositionItem]] = {}
    for subset in _present_subsets(root, SUGARCREPE_SUBSETS, "SugarCrepe"):
        path = root / f"{subset}.json"
        records = _read_json(path, "a SugarCrepe subset file")
        if not isinstance(records, dict) or not records:
            raise BenchmarkError(f'{path}: expected a non-empty JSON object keyed "0", "1", … '
                                 "(the SugarCrepe format)")
        items = []
        for key, record in records.items():
            where = f"{path} key {key!r}"
            items.append(CompositionItem(
                item_id=str(key),
                image=_existing_image(images, _text_field(record, "filename", where), where),
                positive=_text_field(record, "caption", where),
                negative=_text_field(record, "negative_caption", where),
                generator=subset,
            ))
        subsets[subset] = items
    return CompositionSet("sugarcrepe", str(root), subsets)


def load_winoground(folder: str | Path, images_dir: str | Path | None = None) -> WinogroundSet:
    root = _folder(str(folder), "winoground")
    images = Path(images_dir) if images_dir else root / "images"
    path = root / "examples.jsonl"
    text = _read_text(path, "Winoground needs examples.jsonl and images/ (the public dataset's layout)")
    items = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path} line {line_no}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise BenchmarkError(f"{where} is not valid JSON ({err})") from err
        if "id" not in _object(record, where, "id, caption_0, caption_1, image_0, image_1"):
            raise BenchmarkError(f"{where}: missing key 'id'")
        items.append(WinogroundItem(
            item_id=str(record["id"]),
            image_0=_existing_image(images, _text_field(record, "image_0", where) + ".png", where),
            image_1=_existing_image(images, _text_field(record, "image_1", where) + ".png", where),
            caption_0=_text_field(record, "caption_0", where),
            caption_1=_text_field(record, "caption_1", where),
        ))
    if not items:
        raise BenchmarkError(f"{path} holds no examples")
    return WinogroundSet(str(root), items)


def load_zeroshot(labels_file: str | Path, images_dir: str | Path | None = None) -> ZeroShotSet:
    path = Path(labels_file).expanduser()
    data = _read_json(path, 'zeroshot:PATH names a JSON file {"classnames", "templates", "images"}')
    if not isinstance(data, dict):
        raise BenchmarkError(f"{path}: expected an object with keys classnames, templates, images")
    for key in ("classnames", "templates", "images"):
        if not isinstance(data.get(key), list) or not data[key]:
            raise BenchmarkError(f"{path}: key {key!r} must be a non-empty list")
    # Strings only: str() would turn null into the class "None" and 3 into "3", scored as if meant.
    for key, what in (("classnames", "class name"), ("templates", "template")):
        for k, value in enumerate(data[key]):
            if not isinstance(value, str):
                raise BenchmarkError(f"{path}: {key}[{k}] is {_json_kind(value)}; each {what} must be a "
                                     "non-empty string")
            if not value.strip():
                raise BenchmarkError(f"{path}: {key}[{k}] is empty; each {what} must be a non-empty string")
    classnames: list[str] = data["classnames"]
    duplicates = sorted(c for c, times in Counter(classnames).items() if times > 1)
    if duplicates:
        raise BenchmarkError(f"{path}: 'classnames' has duplicates: {', '.join(map(repr, duplicates))}; "
                             "each class must be named once")
    templates: list[str] = data["templates"]
    for t in templates:
        if "{}" not in t:
            raise BenchmarkError(f"{path}: template {t!r} has no '{{}}' placeholder for the class name")
    root = Path(images_dir) if images_dir else path.parent
    class_index = {name: i for i, name in enumerate(classnames)}
    images, labels = [], []
    for row, record in enumerate(data["images"]):
        where = f"{path} images[{row}]"
        image = _existing_image(root, _text_field(record, "path", where), where)
        label = record.get("label")
        if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(classnames):
            labels.append(label)
        elif isinstance(label, str) and label in class_index:
            labels.append(class_index[label])
        else:
            raise BenchmarkError(f"{where}: label {label!r} is neither a class name from 'classnames' "
                                 f"nor an index 0..{len(classnames) - 1}")
        images.append(image)
    return ZeroShotSet(str(path), classnames, templates, images, labels)


def load_retrieval(session: Any, snapshot_ref: str, split: str) -> RetrievalSet:
    """Every active caption of `split` in the snapshot; an image's captions all count as correct."""
    from sqlalchemy import select

    snapshot = resolve_snapshot(session, snapshot_ref)
    rows = session.execute(
        select(Caption.id, Caption.text, Image.id, Image.images_root, Image.path)
        .join(SnapshotMember, SnapshotMember.caption_id == Caption.id)
        .join(Image, Image.id == Caption.image_id)
        .where(SnapshotMember.snapshot_id == snapshot.id, SnapshotMember.split == split)
        .order_by(Image.sha256, Caption.text_sha256)
    ).all()
    if not rows:
        raise BenchmarkError(f"snapshot {snapshot.content_hash[:12]} has no captions in split {split!r}; "
                             "use train, val or test")
    image_position: dict[int, int] = {}
    images: list[Path] = []
    texts, text_image, text_ids = [], [], []
    for caption_id, text, image_id, images_root, rel_path in rows:
        if image_id not in image_position:
            image_position[image_id] = len(images)
            where = f"snapshot {snapshot.content_hash[:12]} image {image_id}"
            images.append(_existing_image(Path(images_root), rel_path, where))
        texts.append(text)
        text_image.append(image_position[image_id])
        text_ids.append(str(caption_id))
    return RetrievalSet(f"{snapshot.content_hash}:{split}", images, texts, text_image, text_ids)


def load_retrieval_manifest(manifest: str | Path, images_dir: str | Path | None = None) -> RetrievalSet:
    """Retrieval over a JSONL manifest of {"image", "caption"} lines (paths relative to the manifest's
    folder, or to `images_dir`); several lines may share an image."""
    path = Path(manifest)
    text = _read_text(path, 'retrieval:<manifest.jsonl> needs lines of {"image": <path>, "caption": <text>}')
    root = Path(images_dir) if images_dir else path.parent
    image_position: dict[str, int] = {}
    images: list[Path] = []
    texts: list[str] = []
    text_image: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise BenchmarkError(f"{where}: not valid JSON ({err.msg})") from err
        name = _text_field(record, "image", where)
        if name not in image_position:
            image_position[name] = len(images)
            images.append(_existing_image(root, name, where))
        texts.append(_text_field(record, "caption", where))
        text_image.append(image_position[name])
    if not texts:
        raise BenchmarkError(f"{path} has no lines")
    return RetrievalSet(str(path), images, texts, text_image, [str(i) for i in range(len(texts))])


def load_benchmark(spec: BenchmarkSpec, images_dir: str | Path | None = None,
                   db_url: str | None = None) -> Benchmark:
    """Load any benchmark kind; catalog-backed kinds open the catalog at `db_url`."""
    if spec.kind == "sugarcrepe_pp":
        return load_sugarcrepe_pp(spec.path, images_dir)
    if spec.kind == "sugarcrepe":
        return load_sugarcrepe(spec.path, images_dir)
    if spec.kind == "winoground":
        return load_winoground(spec.path, images_dir)
    if spec.kind == "zeroshot":
        return load_zeroshot(spec.path, images_dir)
    if spec.kind == "retrieval" and spec.path.endswith(".jsonl"):
        return load_retrieval_manifest(spec.path, images_dir)

    store = open_store(resolve_db_url(db_url))
    try:
        with store.session() as session:
            if spec.kind == "retrieval":
                snapshot_ref, _, split = spec.path.rpartition(":")
                return load_retrieval(session, snapshot_ref, split)
            from toolkit.eval.domain_sets import load_domain_set, parse_domain_ref  # it imports this module

            return load_domain_set(session, *parse_domain_ref(spec.path))
    finally:
        store.close()


def load_benchmarks(specs: Sequence[str], images_dir: str | Path | None = None, db_url: str | None = None,
                    progress: Callable[[str], None] = lambda message: None) -> list[Benchmark]:
    """Each `KIND:PATH` spec parsed and loaded, in order (`progress` hears which one is loading)."""
    loaded = []
    for text in specs:
        progress(f"loading {text}")
        loaded.append(load_benchmark(parse_benchmark_spec(text), images_dir, db_url))
    return loaded
