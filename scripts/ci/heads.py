"""heads.py OUT RESULT...: the head sides (``b``) of ``bench --compare`` results as one baseline file.

The gate's reference is the base commit measured in the same run; this file is for trend tracking (commit it,
then give it as TREND_BASELINE). A head measured hot or throttled is left out, with a warning.
"""
import sys
from pathlib import Path

from topformer_deploy.errors import TopformerDeployError
from topformer_deploy.gate.baseline import load_compare, save_baseline


def main(out: str, results: list[str]) -> int:
    Path(out).unlink(missing_ok=True)
    for path in results:
        try:
            save_baseline(load_compare(path)["b"], out)
        except TopformerDeployError as exc:
            print(f"::warning::{path}: not in the head baseline: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
