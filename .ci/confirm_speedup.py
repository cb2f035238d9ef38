"""The bench's confirm figure alone, for a machine with more cores than CI's 2 (the GPU
machine has 16): bench step 5/8 as `autogram bench` runs it (a 4-trial search of 6 epochs,
2 at a time, then `autogram confirm --points front --seeds 2` of it in one process against on
Ray 2 at a time, the median of 3 alternating repeats), on the CPU.

    python3 .ci/confirm_speedup.py [CONFIG]      # prints one JSON object; progress on stderr
"""

import json
import os
import sys
import tempfile
from pathlib import Path

from autogram.bench import confirm_speedup, orchestration
from autogram.config import load_config
from autogram.console import setup_logging


def main() -> None:
    """Run the search, then the timed confirms, and print the figures as JSON."""
    setup_logging(False)
    config = sys.argv[1] if len(sys.argv) > 1 else "search_spaces/quickstart.yaml"
    # device=cpu: the figure is about Ray fanning retrainings over CPU cores, as on CI.
    base = load_config(config, ["device=cpu"]).model_dump(mode="json")
    with tempfile.TemporaryDirectory(prefix="autogram-confirm-check-") as tmp:
        root = Path(tmp)
        out = orchestration(base, root, trials=4, concurrency=2, epochs=6, repeats=1)
        out.update(confirm_speedup(root / "bench-orchestration", seeds=2))
    out["cpu_count"] = os.cpu_count()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
