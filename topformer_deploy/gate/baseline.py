"""Baseline files: bench results kept per configuration (``config_key``) for one device.

A baseline file is ``{"schema": "topformer-deploy/baseline", "schema_version": 1, "device": {...},
"entries": {config_key: <bench result>}}``; saving merges one result into it (same key replaced),
written atomically. Reading accepts a baseline file or a single bench result.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..artifact import now_iso
from ..bench.result import COMPARE_SCHEMA, unusable_conditions, validate_result
from ..errors import TopformerDeployError
from ..files import write_json

BASELINE_SCHEMA = "topformer-deploy/baseline"
SCHEMA_VERSION = 1


class BaselineError(TopformerDeployError):
    """An unreadable, unknown or incompatible result/baseline file."""


def check_result(doc, where: str = "bench result") -> dict:
    """Raise BaselineError unless ``doc`` is a bench result the gate can use; return it."""
    try:
        validate_result(doc)
    except TopformerDeployError as exc:
        raise BaselineError(f"{where}: {exc}") from None
    key = doc["config_key"]
    if not all(isinstance(x, (int, float)) and math.isfinite(x) and x > 0 for x in doc["latencies_ms"]):
        raise BaselineError(f"{where} ({key}) has latencies that are not positive finite numbers")
    if not isinstance(doc.get("device"), dict) or not doc["device"].get("id"):
        raise BaselineError(f"{where} ({key}) has no device id")
    return doc


def entries_of(doc: dict) -> dict[str, dict]:
    """``{config_key: result}`` of a baseline file or of a single bench result (validated)."""
    if isinstance(doc, dict) and doc.get("schema") == BASELINE_SCHEMA:
        if doc.get("schema_version") != SCHEMA_VERSION:
            raise BaselineError(f"baseline has schema_version {doc.get('schema_version')!r}; this tool reads "
                                f"{SCHEMA_VERSION}")
        entries = doc.get("entries")
        if not isinstance(entries, dict):
            raise BaselineError("baseline has no entries")
        for key, result in entries.items():
            check_result(result, f"baseline entry {key!r}")
            if result["config_key"] != key:
                raise BaselineError(f"baseline entry {key!r} holds a result for {result['config_key']!r}")
        return dict(entries)
    result = check_result(doc)
    return {result["config_key"]: result}


def _read_json(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BaselineError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BaselineError(f"{path}: cannot read: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BaselineError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None


def load_result_or_baseline(path) -> dict:
    """Read a bench result or a baseline file; BaselineError (one clear line) if it cannot be used."""
    path = Path(path)
    doc = _read_json(path)
    try:
        entries_of(doc)
    except BaselineError as exc:
        raise BaselineError(f"{path}: {exc}") from None
    return doc


def baseline_target(path) -> dict | None:
    """The baseline file at ``path`` a result is merged into, None when there is none yet; BaselineError when the
    file there is not a baseline file (checked before a bench, so that its result is not lost to it)."""
    path = Path(path)
    if not path.exists():
        return None
    doc = load_result_or_baseline(path)
    if doc.get("schema") != BASELINE_SCHEMA:
        raise BaselineError(f"{path} is a single bench result, not a baseline file; choose another path")
    return doc


def load_compare(path) -> dict:
    """Read an interleaved A/B document (``bench --compare A B --json``), both sides checked."""
    path = Path(path)
    doc = _read_json(path)
    if not isinstance(doc, dict) or doc.get("schema") != COMPARE_SCHEMA:
        raise BaselineError(f"{path}: not a bench --compare result (schema {COMPARE_SCHEMA})")
    for side in ("a", "b"):
        check_result(doc.get(side), f"{path}: side {side}")
    return doc


def save_baseline(result_doc: dict, path, allow_hot: bool = False) -> dict:
    """Merge ``result_doc`` into the baseline file at ``path`` (created if missing); return the new doc.

    Refuses a result from another device than the file's, and (unless ``allow_hot``) one measured
    on a throttled or hot device. The file is replaced atomically.
    """
    check_result(result_doc)
    problem = unusable_conditions(result_doc)
    if problem and not allow_hot:
        raise BaselineError(f"not saving a baseline measured under bad conditions: {problem}")
    path = Path(path)
    doc = baseline_target(path)
    new_id = result_doc["device"]["id"]
    if doc is None:
        doc = {"schema": BASELINE_SCHEMA, "schema_version": SCHEMA_VERSION, "entries": {}}
    elif doc.get("device", {}).get("id") != new_id:
        raise BaselineError(f"{path} holds baselines of device {doc.get('device', {}).get('id')!r}, this result is "
                            f"from {new_id!r}: use one baseline file per device")
    key = result_doc["config_key"]
    doc["device"] = result_doc["device"]
    doc["updated"] = now_iso()
    doc["entries"] = {**doc.get("entries", {}), key: result_doc}
    doc["recorded"] = {k: {"created": r.get("created"), "runtime": r.get("runtime"),
                           "tool_version": r.get("tool_version"), "conditions": r.get("conditions"),
                           "runs": len(r["latencies_ms"])} for k, r in sorted(doc["entries"].items())}
    write_json(path, doc, indent=1)
    return doc


