"""Where the time goes: every stage exported and timed on the device beside the whole model."""
from ..lazy import lazy_names

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    "BreakdownOptions": ".options", "run_breakdown": ".run", "check_options": ".run",
    "summarize_breakdown": ".document", "SCHEMA": ".document", "RECONCILE_BAND": ".document",
})
