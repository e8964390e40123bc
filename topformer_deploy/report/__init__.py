"""Rendering, the last step of the pipeline: tables, Markdown and charts of export, bench, breakdown and gate."""
from ..lazy import lazy_names

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    "console": ".common", "result_table": ".bench", "export_table": ".export", "export_warnings": ".export",
    "breakdown_table": ".breakdown", "operator_table": ".breakdown", "slowest_operators_table": ".breakdown",
    "operator_note": ".breakdown", "write_chart": ".breakdown", "markdown_table": ".breakdown",
    "gate_table": ".gate", "gate_markdown": ".gate", "gate_chart": ".gate", "device_table": ".devices",
})
