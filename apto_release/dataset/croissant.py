"""Croissant JSON-LD of a release folder, drawn from its card and Parquet files as the Hub draws it.

The Hub publishes a Croissant description of every dataset repo (``/api/datasets/ID/croissant``):
the dataset's name, description, licence and URL from the card, and, from the Parquet files and
their ``datasets`` features, the files and one record set per config with typed fields. This
module writes the same description for a local folder (files by relative path, with their SHA-256)
so that ``mlcroissant`` (a dev dependency, imported only by ``validate_croissant``) can check it and
read records through it before anything is pushed.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

from apto_release.errors import BuildError

#: The Croissant version the Hub's description conforms to.
CONFORMS_TO = "http://mlcommons.org/croissant/1.1"
#: Where ``write_croissant`` puts it: in the release folder (its paths are relative to it), hidden,
#: so the push leaves it out (the Hub serves its own, generated the same way).
CROISSANT_FILE = ".croissant.json"

#: The JSON-LD context of Croissant 1.1 (the spec's, as mlcroissant checks it): schema.org as the
#: vocabulary, Croissant's terms under cr:.
_CONTEXT: dict[str, Any] = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "sc": "https://schema.org/",
    "cr": "http://mlcommons.org/croissant/",
    "dct": "http://purl.org/dc/terms/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "name": {"@container": "@language"},
    "description": {"@container": "@language"},
    "conformsTo": "dct:conformsTo",
    **{term: f"cr:{term}" for term in (
        "arrayShape", "citeAs", "column", "containedIn", "equivalentProperty", "extract", "field", "fileProperty",
        "fileObject", "fileSet", "format", "includes", "isArray", "isLiveDataset", "jsonPath", "key", "md5",
        "parentField", "path", "recordSet", "references", "regex", "repeated", "replace", "samplingRate",
        "separator", "source", "subField", "transform")},
}

#: ``datasets`` value types and their Croissant data types (as the Hub maps them).
_VALUE_TYPES = {
    "bool": "sc:Boolean",
    "string": "sc:Text",
    "large_string": "sc:Text",
    "int8": "cr:Int8",
    "int16": "cr:Int16",
    "int32": "cr:Int32",
    "int64": "cr:Int64",
    "float32": "cr:Float32",
    "float64": "cr:Float64",
}

_NAME = re.compile(r"[^a-zA-Z0-9\-_.]")


def _field(source: dict[str, Any], field_id: str, feature, json_path: list[str]) -> dict[str, Any]:
    """The Croissant field of one ``datasets`` feature (sub-fields for a dict, an array for a List)."""
    from datasets import ClassLabel, List, Value

    def with_source() -> dict[str, Any]:
        src = dict(source)
        if json_path:
            src["transform"] = [{"jsonPath": p} for p in json_path] if len(json_path) > 1 else {"jsonPath": json_path[0]}
        return src

    if isinstance(feature, Value) and feature.dtype in _VALUE_TYPES:
        return {"@type": "cr:Field", "@id": field_id, "dataType": _VALUE_TYPES[feature.dtype], "source": with_source()}
    if isinstance(feature, ClassLabel):  # stored as its index; the names are in the description
        return {"@type": "cr:Field", "@id": field_id, "dataType": "sc:Integer", "source": with_source(),
                "description": "Class label: " + ", ".join(f"{i} = {n}" for i, n in enumerate(feature.names))}
    if isinstance(feature, dict):
        return {"@type": "cr:Field", "@id": field_id, "subField": [
            _field(source, f"{field_id}/{_NAME.sub('_', name)}", sub, [*json_path, name]) for name, sub in feature.items()]}
    if isinstance(feature, List):
        inner = _field(source, field_id, feature.feature, json_path)
        return {**inner, "isArray": True, "arrayShape": "-1"}
    raise BuildError(f"no Croissant type for the feature {feature!r}")


def croissant_metadata(folder: str | Path, *, repo_id: str | None = None) -> dict[str, Any]:
    """The Croissant JSON-LD of the release folder ``folder`` (``dataset build``'s layout).

    Name, description, licence, URL, language, keywords, citation and version come from the card
    (``README.md``; ``repo_id`` defaults to the repo its loading example names); one
    ``cr:FileObject`` per Parquet file (path relative to ``folder``, SHA-256, size); one
    ``cr:RecordSet`` per config of the card, reading its one file, or a ``cr:FileSet`` of its
    files, with fields typed from the features in the card's ``dataset_info``.

    Raises:
        BuildError: the card has no ``configs``, or no ``dataset_info`` for a config, or a
            feature has no Croissant type.
    """
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCard

    from apto_release.io import sha256_file

    folder = Path(folder)
    card = DatasetCard.load(folder / "README.md")
    data = card.data
    infos = DatasetInfosDict.from_dataset_card_data(data)
    configs = data.get("configs") or []
    if not configs:
        raise BuildError("the card has no configs", path=folder / "README.md")
    if repo_id is None:
        match = re.search(r'load_dataset\("([^"/]+/[^"]+)"', card.text)
        repo_id = match.group(1) if match else folder.name

    # One FileObject per file (mlcroissant checks its SHA-256 when it reads it); a config over one
    # file reads that file, a config over several (default) a FileSet of the folder's files.
    files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.glob("data/*/*.parquet"))}
    distribution: list[dict[str, Any]] = [
        {"@type": "cr:FileObject", "@id": rel, "name": rel, "contentUrl": rel, "encodingFormat": "application/x-parquet",
         "contentSize": f"{path.stat().st_size} B", "sha256": sha256_file(path)}
        for rel, path in files.items()
    ]
    record_sets = []
    for config in configs:
        name = config["config_name"]
        if name not in infos or infos[name].features is None:
            raise BuildError(f"the card has no dataset_info features for config {name!r}", path=folder / "README.md")
        globs = [f["path"] for f in config["data_files"]]
        matched = [rel for rel in files if any(fnmatch.fnmatchcase(rel, g) for g in globs)]
        if not matched:
            raise BuildError(f"config {name!r} names no Parquet file of the folder ({', '.join(globs)})", path=folder)
        if len(matched) == 1:
            source: dict[str, Any] = {"fileObject": {"@id": matched[0]}}
        else:
            fileset = f"parquet-files-for-config-{_NAME.sub('_', name)}"
            distribution.append({"@type": "cr:FileSet", "@id": fileset, "name": fileset,
                                 "encodingFormat": "application/x-parquet", "includes": globs[0] if len(globs) == 1 else globs})
            source = {"fileSet": {"@id": fileset}}
        fields = [_field({**source, "extract": {"column": column}}, f"{name}/{_NAME.sub('_', column)}", feature, [])
                  for column, feature in infos[name].features.items()]
        rows = sum(split.num_examples for split in (infos[name].splits or {}).values())
        record_sets.append({"@type": "cr:RecordSet", "@id": name, "name": name,
                            "description": f"{repo_id} - '{name}' subset ({rows} rows, split 'train')", "field": fields})

    bibtex = re.search(r"```bibtex\n(.*?)\n```", card.text, re.DOTALL)
    version = re.search(r"^\s*version\s*=\s*\{([^}]*)\}", bibtex.group(1), re.MULTILINE) if bibtex else None
    summary = card.text.split("### Summary", 1)[-1].strip().split("\n\n", 1)[0].strip()
    out: dict[str, Any] = {
        "@context": _CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": CONFORMS_TO,
        "name": _NAME.sub("_", repo_id.split("/")[-1]),
        "alternateName": [repo_id, data.pretty_name or repo_id],
        "description": summary,
        "license": f"https://choosealicense.com/licenses/{data.license}/" if data.license else None,
        "url": f"https://huggingface.co/datasets/{repo_id}",
        "inLanguage": data.language,
        "keywords": [*(data.task_categories or []), *(data.tags or [])],
        "citeAs": bibtex.group(1) if bibtex else None,
        "version": version.group(1) if version else None,
        "distribution": distribution,
        "recordSet": record_sets,
    }
    return {key: value for key, value in out.items() if value is not None}


def write_croissant(folder: str | Path) -> Path:
    """Write ``croissant_metadata(folder)`` as JSON to ``folder / CROISSANT_FILE`` (atomically)."""
    from apto_release.io import write_json

    return write_json(Path(folder) / CROISSANT_FILE, croissant_metadata(folder))


def validate_croissant(path: str | Path, *, records: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Check the Croissant file ``path`` with ``mlcroissant``, and read the first ``records``
    records of each record set through it (the files are found relative to ``path``).

    Returns:
        Per record set, the records read (``mlcroissant``'s dicts, keyed by field id).

    Raises:
        BuildError: mlcroissant rejects the metadata (its issues in the message) or cannot read
            a record set.
    """
    import itertools

    import mlcroissant as mlc

    try:
        dataset = mlc.Dataset(jsonld=str(path))
    except mlc.ValidationError as exc:
        raise BuildError(f"mlcroissant rejects the Croissant metadata: {' '.join(str(exc).split())}", path=path) from exc
    read: dict[str, list[dict[str, Any]]] = {}
    for record_set in dataset.metadata.record_sets if records else []:
        try:
            read[record_set.name] = list(itertools.islice(dataset.records(record_set=record_set.uuid), records))
        except Exception as exc:  # noqa: BLE001 - mlcroissant raises many kinds
            raise BuildError(f"mlcroissant cannot read the record set {record_set.name!r}: {exc}", path=path) from exc
    return read
