"""The Hub's card YAML validator, as ``POST /api/validate-yaml`` and each commit of a README.md judge it."""

from __future__ import annotations

import re
from typing import Any

_YAML_BLOCK = re.compile(r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")


def _front_matter(text: str) -> tuple[bool, str]:
    """(has a YAML block, the block's text) of a card."""
    match = _YAML_BLOCK.search(text.lstrip("\ufeff"))
    return (True, match.group(2)) if match else (False, "")


def validate_card_yaml(content: str, repo_type: str = "model") -> tuple[list[str], list[str], dict | None]:
    """(errors, warnings, metadata) for a card, as ``POST /api/validate-yaml`` judges it."""
    import yaml  # a dependency of huggingface_hub and datasets

    has_block, block = _front_matter(content)
    if not has_block or not block.strip():
        return [], ["empty or missing yaml metadata in repo card"], {}
    try:
        data = yaml.safe_load(block)
    except yaml.YAMLError as e:
        return [f"Invalid YAML in README.md metadata: {e}"], [], None
    if data is None:
        return [], ["empty or missing yaml metadata in repo card"], {}
    errors = validate_card_metadata(data, repo_type)
    return errors, [], data if isinstance(data, dict) else None


def validate_card_metadata(data: Any, repo_type: str = "model") -> list[str]:
    """The errors the Hub's card validator finds in parsed card metadata (empty: valid)."""
    if not isinstance(data, dict):
        return ["YAML metadata must be a mapping (key: value pairs)"]
    errors: list[str] = []

    def is_str_list(value: Any) -> bool:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)

    def named_entries(field: str, key: str):
        """(index, entry) for the entries of the array ``data[field]`` that are objects with a string
        ``key``; an error for each other entry (or for a field that is not an array), in order."""
        if not isinstance(data[field], list):
            errors.append(f'"{field}" must be an array')
            return
        for i, entry in enumerate(data[field]):
            if isinstance(entry, dict) and isinstance(entry.get(key), str):
                yield i, entry
            else:
                errors.append(f'"{field}[{i}].{key}" is required and must be a string')

    if "license" in data and not isinstance(data["license"], str):
        errors.append('"license" must be a string')
    for key in ("language", "license_name", "pipeline_tag", "library_name"):
        if key in data and key != "language" and not isinstance(data[key], str):
            errors.append(f'"{key}" must be a string')
    if "language" in data and not (isinstance(data["language"], str) or is_str_list(data["language"])):
        errors.append('"language" must be a string or an array of strings')
    if "tags" in data and not is_str_list(data["tags"]):
        errors.append('"tags" must be an array of strings')
    if "configs" in data:
        for i, cfg in named_entries("configs", "config_name"):
            files = cfg.get("data_files")
            ok = files is None or isinstance(files, str) or is_str_list(files) or (
                isinstance(files, list)
                and all(
                    isinstance(f, dict) and isinstance(f.get("split"), str)
                    and (isinstance(f.get("path"), str) or is_str_list(f.get("path")))
                    for f in files
                )
            )
            if not ok:
                errors.append(f'"configs[{i}].data_files" must be a path, a list of paths or a list of {{split, path}}')
    if "model-index" in data:
        if repo_type != "model":
            errors.append('"model-index" is only allowed in model cards')
        else:
            for i, model in named_entries("model-index", "name"):
                results = model.get("results")
                if not isinstance(results, list):
                    errors.append(f'"model-index[{i}].results" must be an array')
                    continue
                for j, result in enumerate(results):
                    where = f"model-index[{i}].results[{j}]"
                    if not isinstance(result, dict):
                        errors.append(f'"{where}" must be an object')
                        continue
                    if not isinstance((result.get("task") or {}).get("type"), str):
                        errors.append(f'"{where}.task.type" is required')
                    dataset = result.get("dataset")
                    if not (isinstance(dataset, dict) and isinstance(dataset.get("type"), str)
                            and isinstance(dataset.get("name"), str)):
                        errors.append(f'"{where}.dataset" needs "type" and "name"')
                    metrics = result.get("metrics")
                    if not isinstance(metrics, list) or not all(
                        isinstance(m, dict) and isinstance(m.get("type"), str) and "value" in m for m in metrics
                    ):
                        errors.append(f'"{where}.metrics" must be an array of {{type, value}}')
    return errors
