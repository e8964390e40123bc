"""``topformer-deploy info``: the architecture (and the official configs it is), parameters and MACs per stage."""
from __future__ import annotations

import click

from .options import INPUT_SIZE, VARIANT, echo_json


@click.command()
@click.option("--variant", type=VARIANT, default=None,
              help="tiny, small or base (with --checkpoint: read from it; --variant then insists on that backbone).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Official-layout checkpoint to describe.")
@click.option("--input-size", type=INPUT_SIZE, default="512", show_default=True, help="512 or HxW.")
@click.option("--num-classes", type=click.IntRange(min=1), default=None, help="Classes (default 150).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def info(variant, checkpoint, input_size, num_classes, as_json):
    """Parameters and multiply-accumulates per stage (TPM, SASE, SIM, head, full-res upsample).

    With --checkpoint the architecture is read from the checkpoint's tensor shapes and matched against the
    official configs (e.g. topformer_tiny_1024x512_80k_2x8_city.py); "custom" when none has it.
    """
    from rich.table import Table

    from ..errors import TopformerDeployError
    from ..model import build_model, check_input_size, load_checkpoint
    from ..model.complexity import complexity_dict, model_complexity
    from ..report.common import console

    height, width = input_size
    try:
        check_input_size(height, width)
    except ValueError as exc:
        raise TopformerDeployError(str(exc)) from exc
    if checkpoint:
        model = load_checkpoint(checkpoint, variant or "auto", num_classes)
    else:
        if variant is None:
            raise TopformerDeployError("give --variant (tiny, small, base) or --checkpoint")
        model = build_model(variant, num_classes or 150)
    rows = model_complexity(model, height, width, full_resolution=True)
    network = [r for r in rows if r.stage != "post"]
    described = model.describe()
    data = {"variant": model.variant, "num_classes": model.num_classes, "input_size": [height, width],
            "checkpoint": checkpoint, "official_configs": described["official_configs"],
            "model": described, **complexity_dict(rows)}
    if as_json:
        echo_json(data)
        return
    table = Table(title=f"TopFormer-{model.variant} @ {height}x{width}, {model.num_classes} classes")
    for col in ("stage", "params", "param share", "MACs (M)", "MAC share"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for r in network:
        table.add_row(r.stage.upper() if r.stage != "head" else "head", f"{r.params:,}",
                      f"{r.param_share:.1%}", f"{r.macs / 1e6:,.1f}", f"{r.mac_share:.1%}")
    table.add_row("total", f"{data['total_params']:,}", "100%", f"{data['total_macs'] / 1e6:,.1f}", "100%",
                  style="bold")
    up = rows[-1].macs
    table.add_row("(+ x8 upsample)", "0", "", f"{up / 1e6:,.1f}", f"+{up / data['total_macs']:.0%}", style="dim")
    console().print(table)
    console().print(official_line(described))


def official_line(described: dict) -> str:
    """``official config: a.py, b.py`` or ``custom: ...`` (what differs is in --json's model.config)."""
    config = described["config"]
    shape = (f"SIM width {config['out_channels'][1]}, head {config['head_channels']} "
             f"{'depthwise' if config['head_is_dw'] else 'dense'}, {described['num_classes']} classes")
    if described["official_configs"]:
        return f"official config: {', '.join(described['official_configs'])} ({shape})"
    return f"custom: no official config has this architecture ({described['variant']} backbone, {shape})"
