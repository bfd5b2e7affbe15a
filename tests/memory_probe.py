"""Peak tensor memory of one training, measured: ``python memory_probe.py SPEC.json OUT_DIR`` (or the same under
``accelerate launch``, one measurement per process).

SPEC is :func:`xinstruct.training.train_sft`'s keyword arguments plus ``data`` (a saved dataset), as
:func:`xinstruct.training.run_training` writes them. The whole of ``train_sft`` (model load, trainer, DDP wrapping,
every step, the final save) runs under torch's profiler with ``profile_memory``, which follows every allocation and
free of torch's CPU allocator; the peak is the largest ``Total Allocated`` it reports: on CPU, the counterpart of
``torch.cuda.max_memory_allocated``. Process memory that is not a tensor (Python objects, libraries) is left out, as
the estimate leaves it out. Weights that ``from_pretrained`` maps from a float32 file are not allocator memory, so
the spec should name a model saved in another dtype (its load then allocates the float32 weights); and the load
runs in this thread (``HF_DEACTIVATE_ASYNC_LOAD``): a thread-pool load is not seen. Writes
``peak-<rank>.json`` with ``peak_bytes`` into OUT_DIR.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def peak_allocated(trace: Path) -> int:
    """The largest ``Total Allocated`` of the ``[memory]`` events of a chrome trace of torch's profiler."""
    events = json.loads(trace.read_text())["traceEvents"]
    return max(e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]")


def main(spec_path: str, out_dir: str) -> None:
    # transformers loads weights in a thread pool by default, and the profiler sees the allocations of this thread
    os.environ["HF_DEACTIVATE_ASYNC_LOAD"] = "1"
    from datasets import load_from_disk
    from torch.profiler import ProfilerActivity, profile

    from xinstruct.training import train_sft

    spec = json.loads(Path(spec_path).read_text())
    data = load_from_disk(spec.pop("data"))
    rank = int(os.environ.get("RANK", "0"))
    out = Path(out_dir)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        train_sft(train_dataset=data, **spec)
    trace = out / f"trace-{rank}.json"
    prof.export_chrome_trace(str(trace))
    peak = peak_allocated(trace)
    trace.unlink()
    (out / f"peak-{rank}.json").write_text(json.dumps({"peak_bytes": peak}))


if __name__ == "__main__":
    main(*sys.argv[1:3])
