"""The breakdown document: per stage parameters, MACs and latency side by side, and the reconciliation
``sum of the network's stages / whole model`` (post is reported beside the network, not in that sum)."""
from __future__ import annotations

import numpy as np

from .. import __version__
from ..artifact import now_iso
from ..bench.device_runner import EXACT_POST_METHODS
from ..model import TopFormer
from ..model.complexity import model_complexity
from ..model.stages import ALL_STAGES, STAGES
from .options import NUMPY_POST, BreakdownOptions

SCHEMA = "topformer-deploy/breakdown"
SCHEMA_VERSION = 1
#: reconciliation (sum of stages / whole model) inside this band is "consistent"
RECONCILE_BAND = (0.85, 1.15)
#: the same for instruction counts (a simulated core): exact, so the band is narrow
INSTRUCTION_BAND = (0.98, 1.02)


def summarize_breakdown(model: TopFormer, results: dict[str, dict], artifacts: dict[str, dict],
                        options: BreakdownOptions, weights: str, op_view: dict | None) -> dict:
    """The breakdown document: per stage params / MACs / p50 / shares, and the reconciliation."""
    h, w = options.input_size
    cost = {r.stage: r for r in model_complexity(model, h, w, full_resolution=True)}
    whole = results["full"]["stats"]
    shares = round_shares(results)
    rows = []
    for stage in ALL_STAGES:
        stats = results[stage]["stats"]
        c = cost[stage]
        rows.append({"stage": stage, "in_network": stage in STAGES, "params": c.params,
                     "param_share": c.param_share, "macs": c.macs, "mac_share": c.mac_share,
                     "p50_ms": stats["p50"], "p90_ms": stats["p90"], "mean_ms": stats["mean"], "cv": stats["cv"],
                     "latency_share": shares[stage], "artifact": str(artifacts[stage]["path"]),
                     "config_key": results[stage]["config_key"]})
    network_sum = sum(r["p50_ms"] for r in rows if r["in_network"])
    per_round = round_reconciliations(results)
    reconciliation = float(np.median(per_round)) if per_round else network_sum / whole["p50"]
    full = results["full"]
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION, "created": now_iso(), "tool_version": __version__,
        "config": {"variant": model.variant, "format": options.fmt, "precision": options.precision,
                   "threads": options.threads, "input_size": [h, w], "engine": options.engine,
                   "engine_reason": options.engine_reason,
                   "device": options.device, "warmup": options.warmup, "runs": options.runs, "weights": weights,
                   "calibration": options.calibration_source if options.precision == "int8" else None},
        "device": full.get("device"), "runtime": full.get("runtime"),
        "stages": rows,
        "whole": {"p50_ms": whole["p50"], "p90_ms": whole["p90"], "mean_ms": whole["mean"], "cv": whole["cv"],
                  "params": sum(cost[s].params for s in STAGES),
                  "macs": sum(cost[s].macs for s in STAGES), "artifact": str(artifacts["full"]["path"]),
                  "config_key": full["config_key"]},
        "network_sum_ms": network_sum, "reconciliation": reconciliation, "reconciliation_rounds": per_round,
        "reconciliation_pooled": network_sum / whole["p50"],
        "reconciled": RECONCILE_BAND[0] <= reconciliation <= RECONCILE_BAND[1], "reconcile_band": list(RECONCILE_BAND),
        "note": "reconciliation = (tpm + sase + sim + head p50) / whole-model p50, computed within each round "
                "(the artifacts of a round run back to back) and the median over rounds taken, so a drift of "
                "the machine's load between rounds cancels; reconciliation_pooled uses the p50s over all "
                "rounds. post (x8 bilinear upsample to the input size + argmax) is timed beside the network, "
                "not in that sum; every latency share is a stage's p50 over the whole model's p50, taken in "
                "each round and the median over rounds; parameter and MAC shares are of the network's totals",
        "instructions": instruction_summary(rows, results),
        "operator_view": reconcile_operators(op_view, rows),
        "post_methods": post_methods(results, artifacts, options),
        "results": results,
    }


def reconcile_operators(op_view: dict | None, rows: list[dict]) -> dict | None:
    """Add to an operator view its stage sums against the stage artifacts' own p50s (``reconciliation``): per
    network stage ``ops_ms / artifact_ms``, the same for their sum, and the share of the profiled time that was
    attributed to a stage at all."""
    if not op_view or not op_view.get("available") or "instructions" in op_view:
        return op_view
    per_stage = {}
    for row in rows:
        entry = op_view["stages"].get(row["stage"])
        if row["in_network"] and entry:
            ops_ms = entry.get("ms_per_run", entry["ms"])
            per_stage[row["stage"]] = {"ops_ms": ops_ms, "artifact_ms": row["p50_ms"], "ratio": ops_ms / row["p50_ms"]}
    ops = sum(e["ops_ms"] for e in per_stage.values())
    artifacts = sum(r["p50_ms"] for r in rows if r["in_network"])
    attributed = 1.0 - op_view["unattributed"]["share"]
    op_view["reconciliation"] = {
        "stages": per_stage, "network_ops_ms": ops, "network_artifacts_ms": artifacts,
        "ratio": ops / artifacts if artifacts else None, "attributed_share": attributed,
        "note": "each network stage's operator time (whole-model profile, attributed to stages) over the p50 of "
                "that stage's own artifact; attributed_share is the profiled time given a stage at all"}
    return op_view


def instruction_summary(rows: list[dict], results: dict[str, dict]) -> dict | None:
    """On a simulated core: instructions per stage (added to ``rows``), their sum against the whole model's,
    and each stage's MAC floor fraction. None when the device counted nothing."""
    whole = (results["full"].get("instructions") or {}).get("total")
    if not whole:
        return None
    for row in rows:
        block = results[row["stage"]].get("instructions") or {}
        row["instructions"] = block.get("total")
        row["instruction_share"] = block["total"] / whole if block.get("total") else None
        row["floor_fraction"] = (block.get("floor") or {}).get("fraction")
    network = sum(r["instructions"] for r in rows if r["in_network"])
    ratio = network / whole
    return {"whole": whole, "network_sum": network, "reconciliation": ratio,
            "reconciled": INSTRUCTION_BAND[0] <= ratio <= INSTRUCTION_BAND[1], "band": list(INSTRUCTION_BAND),
            "floor_fraction": (results["full"]["instructions"].get("floor") or {}).get("fraction"),
            "note": "instructions per inference counted on a simulated core; each stage artifact adds the "
                    "interpreter's per-invoke work once, so the stages' sum slightly exceeds the whole"}


def post_methods(results: dict[str, dict], artifacts: dict[str, dict], options: BreakdownOptions) -> list[dict]:
    """Network + post-processing per method: the in-graph post artifact (x8 resize + argmax in the graph),
    then each numpy method timed on the device after the head (``--post``)."""
    whole = results["full"]["stats"]["p50"]
    post = results["post"]["stats"]
    counted = (results["full"].get("instructions") or {}).get("total")  # a simulated core
    rows = [{"method": f"in-graph ({options.fmt})", "exact": False, "p50_ms": post["p50"], "p90_ms": post["p90"],
             "network_plus_post_ms": whole + post["p50"], "blocks_refined": None,
             "instructions": (results["post"].get("instructions") or {}).get("total"),
             "artifact": str(artifacts["post"]["path"])}]
    for method, entry in ((results.get(NUMPY_POST) or {}).get("post") or {}).get("methods", {}).items():
        rows.append({"method": method, "exact": method in EXACT_POST_METHODS, "p50_ms": entry["stats"]["p50"],
                     "p90_ms": entry["stats"]["p90"], "network_plus_post_ms": whole + entry["stats"]["p50"],
                     "blocks_refined": entry.get("blocks_refined"), "instructions": entry.get("instructions_median"),
                     "artifact": None})
    for row in rows:
        row["network_plus_post_instructions"] = counted + row["instructions"] if counted and row["instructions"] \
            else None
    return rows


def round_reconciliations(results: dict[str, dict]) -> list[float]:
    """(sum of the network stages' p50 / whole-model p50) within each round of interleaved runs."""
    repeats = {stage: results[stage].get("repeats") or [] for stage in ("full", *STAGES)}
    rounds = min(len(r) for r in repeats.values())
    return [sum(repeats[s][i]["p50"] for s in STAGES) / repeats["full"][i]["p50"] for i in range(rounds)]


def round_shares(results: dict[str, dict]) -> dict[str, float]:
    """Each stage's p50 / whole-model p50, taken within each round, median over rounds (paired in time)."""
    whole = results["full"].get("repeats") or []
    shares = {}
    for stage in ALL_STAGES:
        own = results[stage].get("repeats") or []
        ratios = [a["p50"] / b["p50"] for a, b in zip(own, whole)]
        shares[stage] = float(np.median(ratios)) if ratios else results[stage]["stats"]["p50"] / \
            results["full"]["stats"]["p50"]
    return shares
