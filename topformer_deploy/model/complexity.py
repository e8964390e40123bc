"""Parameters and multiply-accumulates per stage, counted by torch's own FlopCounterMode."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from .stages import STAGES
from .topformer import TopFormer, check_input_size

#: Bilinear resize: 4 neighbours weighted per output value (counted by hand; no library counts resizes).
BILINEAR_MACS_PER_OUTPUT = 4


@dataclass
class StageCost:
    stage: str
    params: int
    macs: int
    param_share: float = 0.0
    mac_share: float = 0.0


def count_macs(fn, *args) -> tuple[int, object]:
    """(multiply-accumulates, output) of ``fn(*args)``, counted by torch's FlopCounterMode (MACs = FLOPs / 2)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        out = fn(*args)
    return counter.get_total_flops() // 2, out


def _params(*modules: torch.nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def model_complexity(model: TopFormer, height: int, width: int, full_resolution: bool = False) -> list[StageCost]:
    """Per-stage cost of ``model`` on a (height, width) input: TPM, SASE (incl. pooling), SIM, head.

    With ``full_resolution`` a last row, ``post``, counts the x8 bilinear upsample of the logits to the input
    size (the post-processing an app needs; argmax is comparisons, not MACs). Convs and matmuls are counted by
    ``torch.utils.flop_counter`` (MACs = FLOPs / 2).
    """
    check_input_size(height, width)
    image = torch.zeros(1, 3, height, width)
    bb = model.backbone
    tpm_macs, tokens = count_macs(model.tpm, image)
    sase_macs, semantics = count_macs(model.sase, tokens)
    sim_macs, injected = count_macs(model.sim, tokens, semantics)
    head_macs, logits = count_macs(model.head, injected)
    rows = [
        StageCost("tpm", _params(bb.tpm), tpm_macs),
        StageCost("sase", _params(bb.ppa, bb.trans), sase_macs),
        StageCost("sim", _params(bb.SIM), sim_macs),
        StageCost("head", _params(model.decode_head), head_macs),
    ]
    if full_resolution:
        upsample = logits.shape[1] * height * width * BILINEAR_MACS_PER_OUTPUT
        rows.append(StageCost("post", 0, upsample))
    total_params = sum(r.params for r in rows[:4]) or 1
    total_macs = sum(r.macs for r in rows[:4]) or 1
    for r in rows:  # shares are of the network (TPM..head); post's is relative to that too
        r.param_share = r.params / total_params
        r.mac_share = r.macs / total_macs
    return rows


def complexity_dict(rows: list[StageCost]) -> dict:
    """JSON-ready form: the network's stage rows, totals, and post's (the upsample's) MACs when counted."""
    network = [r for r in rows if r.stage in STAGES]
    upsample = next((r.macs for r in rows if r.stage == "post"), None)
    return {"stages": [asdict(r) for r in network], "total_params": sum(r.params for r in network),
            "total_macs": sum(r.macs for r in network), "post_macs": upsample}


def macs_by_stage(model: TopFormer, height: int, width: int) -> dict[str, int]:
    """Multiply-accumulates per stage name, with ``full`` = the network (TPM..head): what manifests record."""
    rows = model_complexity(model, height, width, full_resolution=True)
    macs = {r.stage: r.macs for r in rows}
    macs["full"] = sum(r.macs for r in rows if r.stage in STAGES)
    return macs
