"""One PNG per scenario: none, Senpai (where it ran) and remediator side by side, over the run's time.

Top: memory.current split into anon, page cache (``file`` minus shmem) and
shmem, with memory.max and memory.high. Bottom: the full stall share of each
sampling interval (from the ``total`` counter) and full avg10. Remediator's
actions are marked where its records say they happened; OOM kills are marked
where memory.events first showed them. The environment is printed under the
picture: a figure without it means little (see environment.py).

matplotlib is an optional dependency (``pip install .[bench]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence

from bench.efficacy.report import median_run, ok_runs, throughput_unit
from bench.efficacy.scenarios import SERIES_TITLES, scenario_named

MIB = 1 << 20
ACTION_COLOURS = {"reclaim": "tab:green", "memory_high": "tab:orange", "vfs_cache_pressure": "tab:gray"}
PANELS = ("none", "senpai", "remediator")
REQUIRED_PANELS = ("none", "remediator")


def environment_caption(environment: Mapping[str, Any]) -> str:
    parts: List[str] = []
    for role, env in environment.items():
        if not isinstance(env, Mapping) or "kernel" not in env:
            continue
        parts.append(
            f"{role}: kernel {env.get('kernel')}, {env.get('cpu_model')}, {env.get('cores')} cores, "
            f"{env.get('emulation')}, load {env.get('load_average')}, {env.get('date_utc')}"
        )
    return "\n".join(parts)


def _panel(top: Any, bottom: Any, run: Mapping[str, Any], title: str, memory_max: int, unit: str) -> None:
    samples: Sequence[Mapping[str, Any]] = run["samples"]
    t = [s["t"] for s in samples]
    anon = [s["stat"]["anon"] / MIB for s in samples]
    shmem = [s["stat"]["shmem"] / MIB for s in samples]
    cache = [(s["stat"]["file"] - s["stat"]["shmem"]) / MIB for s in samples]
    other = [max(0.0, s["current"] / MIB - a - c - sh) for s, a, c, sh in zip(samples, anon, cache, shmem)]
    top.stackplot(
        t,
        anon,
        cache,
        shmem,
        other,
        labels=["anon", "page cache (file - shmem)", "shmem (tmpfs)", "kernel and other"],
        colors=["tab:blue", "tab:cyan", "tab:purple", "lightgray"],
        alpha=0.85,
    )
    top.axhline(memory_max / MIB, color="black", linestyle="-", linewidth=1, label="memory.max")
    highs = [s["high"] / MIB if s["high"] is not None else None for s in samples]
    if any(h is not None for h in highs):
        top.step(
            t,
            [h if h is not None else float("nan") for h in highs],
            where="post",
            color="tab:orange",
            linestyle="--",
            linewidth=1.2,
            label="memory.high",
        )
    top.set_ylim(0, memory_max / MIB * 1.12)
    top.set_ylabel("MiB")
    top.set_title(title, fontsize=10)

    stall = run["metrics"]["full_stall_by_interval"]
    bottom.fill_between(
        [p["t"] for p in stall],
        [p["pct"] for p in stall],
        step="pre",
        color="tab:red",
        alpha=0.35,
        label="full stall per 0.5 s interval",
    )
    bottom.plot(t, [s["full_avg10"] for s in samples], color="darkred", linewidth=1.2, label="full avg10")
    bottom.set_ylim(0, 100)
    bottom.set_ylabel("full stall %")
    bottom.set_xlabel("seconds since the workload started")

    for action in run["metrics"].get("remediator", {}).get("timeline", []):
        colour = ACTION_COLOURS.get(action["kind"], "black")
        decided = action.get("decided", action["t"])
        for axis in (top, bottom):
            # A line where it was decided, a band while the write ran (memory.reclaim is synchronous).
            axis.axvline(decided, color=colour, linewidth=1, alpha=0.9)
            if action["t"] - decided > 0.05:
                axis.axvspan(decided, action["t"], color=colour, alpha=0.12, linewidth=0)
    for when in run["metrics"].get("oom_kill_at_sec", []):
        for axis in (top, bottom):
            axis.axvline(when, color="red", linewidth=2)
        top.annotate("OOM kill", (when, memory_max / MIB), color="red", fontsize=8, ha="left", va="bottom")
    metrics = run["metrics"]
    bottom.text(
        0.99,
        0.95,
        f"full stall {metrics['full_stall_pct']:.1f} % of the run, "
        f"{metrics['throughput_mib_s'] or 0:.0f} {unit}, "
        + (f"p99 {metrics['lat_p99_ms']:.0f} ms, " if metrics.get("lat_p99_ms") is not None else "")
        + f"OOM kills {metrics['oom_kills']}",
        transform=bottom.transAxes,
        ha="right",
        va="top",
        fontsize=8,
    )


def plot_scenario(results: Mapping[str, Any], scenario: str, out_file: Path) -> Optional[Path]:
    """Write the scenario's PNG; None when a panel's series has no successful run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    panels = [series for series in PANELS if ok_runs(results["runs"], scenario, series)]
    if any(series not in panels for series in REQUIRED_PANELS):
        return None
    chosen = [median_run(ok_runs(results["runs"], scenario, series)) for series in panels]
    scenario_def = scenario_named(scenario)
    figure, axes = plt.subplots(
        2,
        len(panels),
        figsize=(7 * len(panels), 7.5),
        sharex=True,
        gridspec_kw={"height_ratios": [3, 2]},
        squeeze=False,
    )
    unit = throughput_unit(scenario)
    for column, (series, run) in enumerate(zip(panels, chosen)):
        assert run is not None
        _panel(
            axes[0][column], axes[1][column], run, SERIES_TITLES[series], scenario_def.memory_max_bytes, unit
        )
    handles, labels = axes[0][0].get_legend_handles_labels()
    handles += [Line2D([0], [0], color=colour, linewidth=1) for colour in ACTION_COLOURS.values()]
    labels += [f"remediator: {kind}" for kind in ACTION_COLOURS]
    bottom_handles, bottom_labels = axes[1][0].get_legend_handles_labels()
    figure.legend(
        handles + bottom_handles,
        labels + bottom_labels,
        loc="upper center",
        ncol=6,
        fontsize=8,
        bbox_to_anchor=(0.5, 0.955),
    )
    figure.suptitle(
        f"{scenario}: {scenario_def.title} (memory.max {scenario_def.memory_max_mib} MiB, no swap; "
        f"median run of {len(ok_runs(results['runs'], scenario, 'none'))})",
        fontsize=11,
    )
    figure.text(0.01, 0.005, environment_caption(results.get("environment", {})), fontsize=7, va="bottom")
    figure.tight_layout(rect=(0, 0.06, 1, 0.9))
    out_file.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_file, dpi=90)
    plt.close(figure)
    return out_file
