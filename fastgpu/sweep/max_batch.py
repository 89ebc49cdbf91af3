"""The largest batch that fits (`+experiment=max_batch`, or `hydra/sweeper=max_batch`), and the throughput at
each size on the way.

From `start`, the batch doubles until a run fails with `oom`; then bisection between the largest size that ran
and the smallest that did not, to a multiple of `multiple`. Every probe is a real sweep point (a short run) with
its metrics.json; `max_batch.json` records the probes and the answer. A failure that is not out-of-memory ends
the search with that point's error. Torch-free.
"""

from fastgpu.results.search_sections import BOUND_STATUSES
from fastgpu.sweep.adaptive import AdaptiveSweeper

LEDGER = "max_batch.json"


class MaxBatchSweeper(AdaptiveSweeper):
    ledger_file = LEDGER

    def __init__(self, params=None, start: int = 32, limit: int = 65536, multiple: int = 8):
        super().__init__(params)
        if not 1 <= start <= limit or multiple < 1:
            from fastgpu.errors import FastGPUError

            raise FastGPUError(
                f"hydra.sweeper: start={start}, limit={limit}, multiple={multiple}; use 1 <= start <= limit and "
                "multiple >= 1"
            )
        self.start_size, self.limit, self.multiple = start, limit, multiple

    def sweep(self, arguments):
        self.start()
        searches = []
        for point in self.grid(arguments):  # usually one: each grid point gets its own search
            searches.append(self.search(point))
            self.write_ledger({"sweeper": "max_batch", "searches": searches})
        return searches

    def search(self, point: list) -> dict:
        point = [o for o in point if o.split("=", 1)[0] != "data.batch_size"]
        probes, fits, too_big, failure = [], 0, None, None

        name = "-".join(o.split("=", 1)[1] for o in point if o.split("=", 1)[0] in self.swept)

        def probe(size: int) -> str:
            label = f"{name}-bs{size}" if name else f"bs{size}"
            (result,) = self.run([point + [f"data.batch_size={size}", f"logger.wandb.name={label}"]])
            probes.append(
                {
                    "batch_size": size,
                    "job": result["job"],
                    "status": "beyond_data"
                    if result.get("error_type") == "BatchLargerThanData"
                    else result.get("status"),
                    "throughput": result.get("throughput"),
                    "peak_memory_mb": result.get("peak_mem_allocated_mb") or result.get("peak_rss_mb"),
                    "memory_growth_mb": result.get("peak_mem_allocated_mb") or result.get("rss_growth_mb"),
                    "error": result.get("error"),
                }
            )
            return probes[-1]["status"]

        size, bound = self.start_size, None
        while size <= self.limit:  # doubling
            status = probe(size)
            if status == "ok":
                fits, size = size, size * 2
                continue
            if status in BOUND_STATUSES:  # out of memory, or more than the training set holds: the answer lies below
                too_big, bound = size, status
            else:
                failure = probes[-1]
            break
        while failure is None and too_big is not None and too_big - fits > self.multiple:  # bisection
            middle = (fits + too_big) // 2 // self.multiple * self.multiple
            if middle <= fits:
                break
            status = probe(middle)
            if status == "ok":
                fits = middle
            elif status in BOUND_STATUSES:
                too_big, bound = middle, status
            else:
                failure = probes[-1]
        return {
            "setting": point,
            "max_batch_size": fits or None,
            "smallest_oom": too_big,
            "hit_limit": too_big is None and failure is None,  # every size up to hydra.sweeper.limit fit
            "stopped_by": BOUND_STATUSES.get(bound) or ("size_limit" if failure is None else "failure"),
            "memory_limit_mb": self.config.trainer.memory_limit_mb,
            "failure": failure,
            "probes": probes,
        }
