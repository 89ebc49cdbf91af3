"""The report's sections for FastGPU's search sweepers, from their ledgers: halving's rungs (which point stopped
early, which went on) and max_batch's probes (the largest batch that fit)."""

SEARCH_STATUSES = ("stopped_early", "promoted", "too_big")
# a max-batch probe's status that bounds the search from above (out of memory, or more than the training set holds),
# and what the ledger then says stopped the search
BOUND_STATUSES = {"oom": "out_of_memory", "beyond_data": "training_set"}


def mark_rungs(points: list, ledger) -> dict:
    """Successive halving (halving.json): each run's rung, and the runs that did not train to the end marked
    `stopped_early` (lost a rung) or `promoted` (went on: its last rung is the one that counts). Their
    metrics.json stay what the runs measured; only the report's rows carry the mark."""
    if not ledger:
        return None
    decisions = {p["job"]: (r["rung"], p.get("decision")) for r in ledger["rungs"] for p in r["points"]}
    names = {point["point"]: point["metrics"].get("name") for point in points}
    for run in (p for r in ledger["rungs"] for p in r["points"]):
        run["name"] = names.get(run["job"]) or run["job"]  # each run's own name (repeats: NAME-rR), for the table
    for point in points:
        rung, decision = decisions.get(point["point"], (None, None))
        point["rung"] = rung
        if decision in SEARCH_STATUSES and point["metrics"].get("status") == "ok":
            point["metrics"] = {**point["metrics"], "status": decision}
    return ledger


def mark_probes(points: list, ledger) -> dict:
    """The max-batch search (max_batch.json): its probes that ran out of memory or held more than the training set are
    `too_big`, the answer it looked for, not failures."""
    if not ledger:
        return None
    too_big = {p["job"] for search in ledger["searches"] for p in search["probes"] if p["status"] in BOUND_STATUSES}
    for point in points:
        if point["point"] in too_big and point["metrics"].get("status") in ("oom", "failed"):
            point["metrics"] = {**point["metrics"], "status": "too_big"}
    return ledger


def max_batch_section(ledger) -> list:
    if not ledger:
        return []
    lines = ["## Largest batch that fits", ""]
    for search in ledger["searches"]:
        setting = " ".join(o for o in search["setting"] if not o.startswith(("logger.", "hydra.", "trainer.progress")))
        if search["failure"]:
            answer = f"search stopped: batch {search['failure']['batch_size']} failed ({search['failure']['error']})"
        elif search["hit_limit"]:
            answer = f"every size up to {search['max_batch_size']} fit (raise hydra.sweeper.limit to look further)"
        else:
            why = "holds more than the training set" if search["stopped_by"] == "training_set" else "is out of memory"
            answer = f"**{search['max_batch_size']}** ({search['smallest_oom']} {why})"
        cap, grown = search.get("memory_limit_mb"), [p.get("memory_growth_mb") or 0 for p in search["probes"]]
        if cap and not search.get("smallest_oom"):
            answer += f"; memory never limited it (cap {cap:,.0f} MB): the most a probe added was {max(grown):,.0f} MB"
        lines += [f"`{setting}`: {answer}", "", "| batch | status | samples/s | peak MB |", "|---|---|---|---|"]
        for p in sorted(search["probes"], key=lambda p: p["batch_size"]):
            speed = f"{p['throughput']:,.0f}" if p.get("throughput") else "-"
            memory = f"{p['peak_memory_mb']:,.0f}" if p.get("peak_memory_mb") else "-"
            lines.append(f"| {p['batch_size']} | {p['status']} | {speed} | {memory} |")
        lines.append("")
    return lines


def _rung_size(rung: dict, baseline_index) -> str:
    """'6', or after rung 1 '2 + baseline' / '1 + baseline + 2 accuracy guard': the winners eta and final_points
    chose, and the points kept for another reason (grid points: repeats of a point count once)."""
    points = {p.get("grid_index"): p for p in rung["points"]}
    if rung["rung"] == 1 or baseline_index is None:
        return str(len(points))
    guard = sum(1 for p in points.values() if p.get("guard"))
    has_base = baseline_index in points
    size = f"{len(points) - guard - has_base}" + (" + baseline" if has_base else "")
    return size + (f" + {guard} accuracy guard" if guard else "")


def rung_section(ledger) -> list:
    if not ledger:
        return []
    sizes = " -> ".join(_rung_size(r, ledger.get("baseline_index")) for r in ledger["rungs"])
    repeats = ledger.get("repeats") or 1
    each = f" (each {repeats} runs, ranked by their median)" if repeats > 1 else ""
    lines = [
        f"## Successive halving: eta={ledger['eta']}, probe {ledger['probe_steps']} steps, {sizes} points{each}",
        "",
        "| rung | steps | point | samples/s | accuracy | decision |",
        "|---|---|---|---|---|---|",
    ]
    for rung in ledger["rungs"]:
        for p in sorted(rung["points"], key=lambda p: -(p.get("throughput") or 0)):
            speed = f"{p['throughput']:,.0f}" if p.get("throughput") else "-"
            accuracy = f"{p['accuracy']:.4f}" if p.get("accuracy") is not None else "-"
            steps = rung["max_steps"] or "full"
            decision = p.get("decision") if p.get("status") == "ok" else p.get("status")
            decision += " (accuracy guard)" if p.get("guard") else ""
            lines.append(
                f"| {rung['rung']} | {steps} | {p.get('name', p['job'])} | {speed} | {accuracy} | {decision} |"
            )
    if ledger.get("sweep_cost_saved") is not None:
        lines += [
            "",
            f"Search cost: {ledger['device_hours_spent']:.3f} device-hours measured (every run's start-up, data, "
            f"evaluation and export included) against an estimated {ledger['device_hours_full_grid']:.3f} for the "
            f"full grid (sweep_cost_saved {ledger['sweep_cost_saved']:.0%}); {ledger['steps_spent']:,} steps "
            f"against {ledger['steps_full_grid']:,}. The recommendation is made among the points that trained to "
            "the end.",
        ]
    return lines + [""]
