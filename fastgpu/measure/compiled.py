"""What torch.compile did in a run: compiled, served from the on-disk cache, or fell back to eager, with its graphs,
graph breaks and recompiles. Read from dynamo's counters, which a run clears when it starts compiling."""


def start_compile_record() -> None:
    """Forget what earlier runs of this process compiled (hydra/launcher=basic): dynamo's caches and counters."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()


def compile_record(mode) -> dict:
    """compile_outcome (eager | compiled | cached | eager_fallback) and its counts, for metrics.json.

    `cached`: every FX graph came from inductor's on-disk cache (a warm cache, not a cold compile); `eager_fallback`:
    compile was asked but dynamo captured no graph, so the model ran eagerly. compile_recompiles counts frames
    compiled again after a guard failed (a new shape or dtype), each a stall inside the run."""
    if mode is None:
        return {"compile_outcome": "eager"}
    from torch._dynamo.utils import counters

    graphs = counters["stats"]["unique_graphs"]
    hits, misses = counters["inductor"]["fxgraph_cache_hit"], counters["inductor"]["fxgraph_cache_miss"]
    if graphs == 0:
        outcome = "eager_fallback"
    elif hits and not misses:
        outcome = "cached"
    else:
        outcome = "compiled"
    try:
        from torch._dynamo.convert_frame import input_codes

        recompiles = max(0, counters["frames"]["total"] - len(input_codes.seen_ids))
    except (ImportError, AttributeError):  # private to dynamo: absent in some torch versions
        recompiles = None
    return {
        "compile_outcome": outcome,
        "compile_graphs": graphs,
        "compile_graph_breaks": sum(counters["graph_break"].values()),
        "compile_recompiles": recompiles,
        "compile_cache_hits": hits,
        "compile_cache_misses": misses,
    }
