"""Reporting: the printed table, the JSON file and the PNG plots (matplotlib, Agg backend)."""

from __future__ import annotations

import json
import os
from typing import Any

#: differences under this ratio are noise on these machines (see shared/reference/engine-facts.md)
NOISE = 1.3

UNIT_WORDS = {"record": "per record", "scan": "per scan", "request": "per request", "read": "per read"}


def _num(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "-"
    if x >= 1000:
        return f"{x:,.0f}"
    if x >= 100:
        return f"{x:.1f}"
    return f"{x:.{digits}f}"


def format_table(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        f"ksds benchmarks: {meta['records']:,} records of {meta['record_length']} B, keys {meta['key_length']} B; "
        f"median of {meta['repeat']} runs; buffer/cache budget {meta['buffer_space'] >> 20} MiB per store",
        f"python {meta['python']}, {meta['cpus']} CPUs, results disk {meta['disk']}",
        "bulk rows (load, random_insert, rewrite, erase): "
        + (f"{meta['bulk_txn']} requests per transaction" if meta.get("bulk_txn") else "one transaction per row")
        + ", every store alike",
    ]
    for name, d in results.get("stores", {}).items():
        if d:
            lines.append(f"  {name} {d.get('version', '')}: {d.get('config', '')}")
    for name, why in results.get("skipped", {}).items():
        lines.append(f"skipped {name}: {why}")
    lines.append("")
    lines.append(f"{'row / store':<24}{'us/req':>12}{'records/s':>14}{'ksds/peer':>11}  {'(repeats)':<13}")
    lines.append("-" * 76)
    for row in results["rows"]:
        unit = UNIT_WORDS.get(row["unit"], row["unit"])
        rpo = row["records_per_op"]
        extra = f" ({rpo} records each)" if rpo != 1 else ""
        lines.append(f"{row['name']}: {row['title']} [{row['ops']:,} requests; us {unit}{extra}]")
        for store, fig in row["results"].items():
            if "error" in fig:
                lines.append(f"  {store:<22}  ERROR {fig['error']}")
                continue
            r = row.get("ratios", {}).get(store)
            ratio = f"{r['ratio']:>11.2f}  ({r['min']:.2f}-{r['max']:.2f})" if r else ""
            runs = len(fig["times_s"])
            note = f"  [{runs} run{'s' if runs > 1 else ''}: over --run-budget]" if fig.get("cut_short") else ""
            lines.append(f"  {store:<22}{_num(fig['us_per_op']):>12}{_num(fig['records_per_s'], 0):>14}{ratio}{note}")
    lines.append("")
    lines.extend(summary_lines(results))
    return "\n".join(lines)


def _us(results: dict[str, Any], row: str, store: str) -> float | None:
    for r in results["rows"]:
        if r["name"] == row:
            fig = r["results"].get(store)
            if fig and "error" not in fig:
                us: float = fig["us_per_op"]
                return us
    return None


def summary_lines(results: dict[str, Any]) -> list[str]:
    out: list[str] = []
    fs = _us(results, "fsync_4k", "os")
    fds = _us(results, "fdatasync_4k", "os")
    afds = _us(results, "append_fdatasync_4k", "os")
    refs = []
    if fs is not None:
        refs.append(f"pwrite 4 KiB + fsync {fs:.0f} us")
    if fds is not None:
        refs.append(f"+ fdatasync {fds:.0f} us")
    if afds is not None:
        refs.append(f"append + fdatasync {afds:.0f} us")
    if refs:
        out.append("Reference on the results disk: " + "; ".join(refs))
    proc = _us(results, "write_request", "ksds")
    power = _us(results, "durable_write", "ksds")
    if proc is not None or power is not None:
        s = "ksds insert, one request per transaction: "
        s += f'durability "process" {_num(proc)} us, "power" {_num(power)} us'
        if proc is not None and power is not None:
            s += f" (power - process = {power - proc:.0f} us"
            if fds:
                s += f" = {(power - proc) / fds:.1f} x fdatasync"
            s += ")"
        out.append(s)
    behind = behind_rows(results)
    if behind:
        out.append(f"Rows where ksds is behind a peer (ksds/peer > {NOISE}: beyond noise):")
        for name, peers in behind:
            out.append("  " + name + ": " + ", ".join(f"{p} {r:.2f}x" for p, r in peers))
    else:
        out.append(f"ksds is not behind any peer by more than {NOISE}x")
    return out


def behind_rows(results: dict[str, Any], threshold: float = NOISE) -> list[tuple[str, list[tuple[str, float]]]]:
    out = []
    for row in results["rows"]:
        peers = [(p, r["ratio"]) for p, r in row.get("ratios", {}).items() if r["ratio"] > threshold]
        if peers:
            out.append((row["name"], sorted(peers, key=lambda x: -x[1])))
    return out


def format_scaling(scaling: dict[str, Any]) -> str:
    lines = [
        "Scaling: random read and random insert (one non-durable transaction each) vs record count; "
        f"peak RSS of each store's own process; ksds buffer_space {scaling['buffer_space'] >> 20} MiB",
        f"{'records':>12} {'store':<10}{'read us':>10}{'insert us':>11}{'load us':>10}"
        f"{'peak RSS MiB':>14}{'above base':>12}",
    ]
    for run in scaling["runs"]:
        if "error" in run:
            lines.append(f"{run['size']:>12,} {run['store']:<10} ERROR {run['error']}")
            continue
        lines.append(
            f"{run['size']:>12,} {run['store']:<10}{_num(run['read_us']):>10}{_num(run['insert_us']):>11}"
            f"{_num(run['load_us']):>10}{run['peak_rss'] / 2**20:>14.1f}"
            f"{(run['peak_rss'] - run['base_rss']) / 2**20:>12.1f}"
        )
    for b in scaling.get("ksds_budget", []):
        lines.append(
            f"ksds at {b['size']:,} records: peak RSS {b['peak_rss'] / 2**20:.1f} MiB = baseline "
            f"{b['base_rss'] / 2**20:.1f} + {b['above_base'] / 2**20:.1f} MiB "
            f"(buffer_space {b['buffer_space'] >> 20} MiB; bound {b['bound'] / 2**20:.0f} MiB above baseline): "
            + ("within budget" if b["within_budget"] else "OVER BUDGET")
        )
    return "\n".join(lines)


def save_json(results: dict[str, Any], out: str) -> str:
    path = os.path.join(out, "results.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1, sort_keys=False)
    return path


# --- plots ------------------------------------------------------------------------------------------------------

COLORS = {"ksds": "#d62728", "sqlite": "#1f77b4", "lmdb": "#2ca02c", "bdb": "#9467bd", "diskcache": "#ff7f0e",
          "os": "#7f7f7f"}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_rows(results: dict[str, Any], out: str) -> str:
    plt = _plt()
    rows = [r for r in results["rows"] if any("error" not in f for f in r["results"].values())]
    stores = []
    for r in rows:
        for s in r["results"]:
            if s not in stores:
                stores.append(s)
    height = max(3.0, 0.45 * len(rows) * max(1, len(stores)) / 2.5)
    fig, ax = plt.subplots(figsize=(10, height))
    bar = 0.8 / max(1, len(stores))
    points: dict[str, tuple[list[float], list[float]]] = {s: ([], []) for s in stores}
    for i, r in enumerate(rows):
        present = [s for s in stores if "error" not in r["results"].get(s, {"error": 1})
                   and r["results"][s]["us_per_op"]]
        for j, s in enumerate(present):  # the bars of one row centred on it, whatever stores it has
            points[s][0].append(i + (j - (len(present) - 1) / 2) * bar)
            points[s][1].append(r["results"][s]["us_per_op"])
    for s in stores:
        ax.barh(points[s][0], points[s][1], height=bar, label=s, color=COLORS.get(s))
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r["name"] for r in rows])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("microseconds per request (log scale; lower is better)")
    meta = results["meta"]
    ax.set_title(f"{meta['records']:,} records of {meta['record_length']} B, median of {meta['repeat']}")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    path = os.path.join(out, "rows.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_ratios(results: dict[str, Any], out: str) -> str:
    plt = _plt()
    rows = [r for r in results["rows"] if r.get("ratios")]
    peers: list[str] = []
    for r in rows:
        for p in r["ratios"]:
            if p not in peers:
                peers.append(p)
    fig, ax = plt.subplots(figsize=(10, max(3.0, 0.4 * len(rows) + 1)))
    step = 0.8 / max(1, len(peers))
    for j, p in enumerate(peers):
        ys, xs, lo, hi = [], [], [], []
        for i, r in enumerate(rows):
            q = r["ratios"].get(p)
            if q:
                ys.append(i + (j - (len(peers) - 1) / 2) * step)
                xs.append(q["ratio"])
                lo.append(max(0.0, q["ratio"] - q["min"]))
                hi.append(max(0.0, q["max"] - q["ratio"]))
        ax.errorbar(xs, ys, xerr=[lo, hi], fmt="o", label=f"ksds / {p}", color=COLORS.get(p), capsize=2)
    ax.axvline(1.0, color="black", lw=1)
    ax.axvspan(1 / NOISE, NOISE, color="grey", alpha=0.15, label=f"noise (within {NOISE}x)")
    ax.set_xscale("log")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r["name"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("ksds time / peer time (log; > 1: ksds slower); bars: spread over repeats")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    path = os.path.join(out, "ratios.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_scaling(scaling: dict[str, Any], out: str) -> str:
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    by_store: dict[str, list[dict[str, Any]]] = {}
    for run in scaling["runs"]:
        if "error" not in run:
            by_store.setdefault(run["store"], []).append(run)
    for store, runs in by_store.items():
        runs.sort(key=lambda r: r["size"])
        sizes = [r["size"] for r in runs]
        c = COLORS.get(store)
        axes[0].plot(sizes, [r["read_us"] for r in runs], "o-", label=store, color=c)
        axes[1].plot(sizes, [r["insert_us"] for r in runs], "o-", label=store, color=c)
        axes[2].plot(sizes, [r["peak_rss"] / 2**20 for r in runs], "o-", label=store, color=c)
    budget = scaling.get("ksds_budget", [])
    if budget:
        sizes = [b["size"] for b in budget]
        axes[2].plot(sizes, [(b["base_rss"] + b["buffer_space"]) / 2**20 for b in budget], "k--",
                     label="ksds baseline + buffer_space")
        axes[2].plot(sizes, [(b["base_rss"] + b["bound"]) / 2**20 for b in budget], "k:",
                     label="ksds bound (" + scaling.get("budget_rule", "") + ")")
    for ax, title, ylabel in (
        (axes[0], "random read", "microseconds per read"),
        (axes[1], "random insert (one transaction each, not synced)", "microseconds per insert"),
        (axes[2], "peak resident memory of the process", "MiB"),
    ):
        ax.set_xscale("log")
        if ax is not axes[2]:
            ax.set_yscale("log")
        ax.set_xlabel("records in the data set")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    path = os.path.join(out, "scaling.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
