"""The work floor: the fewest SIMD instructions a core needs for a network's multiply-accumulates.

From the MACs (``topformer-deploy info``, recorded in the manifest) and each precision's MACs per 128-bit
SIMD instruction: fp32 FMLA 4; fp16 FMLA 8 where the core has FP16 arithmetic (``asimdhp``), else it is
computed in fp32 (4); int8 SDOT 16 where the core has the dot product (``asimddp``), else a widening
multiply-accumulate (SMLAL) 8. The fraction of the executed instructions the floor represents says how far
the kernels are from pure multiply-accumulate work (loads, stores, requantization, layout, control).
"""
from __future__ import annotations


def macs_per_instruction(precision: str, features: set[str] | list[str]) -> int:
    """MACs one 128-bit SIMD instruction does at ``precision`` on a core with these ISA ``features``."""
    features = set(features)
    if precision == "int8":
        return 16 if "asimddp" in features else 8
    if precision == "fp16" and "asimdhp" in features:
        return 8
    return 4


def instruction_floor(macs: int, precision: str, features, executed: float | None = None) -> dict:
    """``{"macs", "macs_per_instruction", "instructions", "fraction"}``: the floor and its share of ``executed``."""
    rate = macs_per_instruction(precision, features)
    floor = macs / rate
    return {"macs": int(macs), "macs_per_instruction": rate, "instructions": floor,
            "fraction": floor / executed if executed else None}
