"""Row hashes of a run directory: per saved dataset (``<step>/data``, ``<step>/dropped``, ...) a SHA-256 of its rows
in order without their float columns (texts, ids, ratings, languages, clusters: exact), and the sum of each float
column (probabilities, confidences: compared with a tolerance). With torch's AVX2 kernels instead of AVX512
(``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2``) every text, id, rating, kept set
and cluster of the tiny run is the same and the rating probabilities move by up to 2e-4.

``tests/data/tiny_row_hashes.json`` holds the hashes of the tiny test run (``conftest.tiny_run``); refactoring must
leave them unchanged. Regenerate it only for a change of the method, in its own commit:

    python tests/row_hashes.py RUN_DIR > tests/data/tiny_row_hashes.json
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

REFERENCE = Path(__file__).parent / "data" / "tiny_row_hashes.json"


def row_hashes(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """``{"<step>/<dataset>": {"rows": sha256, "floats": {column: sum}}}`` for every dataset saved in the run (shards,
    models and training copies left out)."""
    from datasets import load_from_disk

    run_dir = Path(run_dir)
    out = {}
    for info in sorted(run_dir.rglob("dataset_info.json")):
        folder = info.parent
        rel = folder.relative_to(run_dir).as_posix()
        if "/shards/" in f"/{rel}/" or "/model/" in f"/{rel}/" or rel.endswith("train_data"):
            continue
        # an empty dataset saved by datasets 5.2 without ``num_shards=1`` has no Arrow file and cannot be loaded
        rows = load_from_disk(str(folder)).to_list() if any(folder.glob("*.arrow")) else []
        floats = sorted({k for row in rows for k, v in row.items() if isinstance(v, float)})
        digest = hashlib.sha256()
        for row in rows:
            exact = {k: v for k, v in row.items() if k not in floats}
            digest.update(json.dumps(exact, sort_keys=True, ensure_ascii=False).encode())
        out[rel] = {"rows": digest.hexdigest()[:16],
                    "floats": {k: round(sum(row[k] or 0.0 for row in rows), 6) for k in floats}}
    return out


if __name__ == "__main__":
    import torch

    hashes = row_hashes(sys.argv[1])
    print(json.dumps({"cpu_capability": torch.backends.cpu.get_cpu_capability(), "hashes": hashes}, indent=2))
