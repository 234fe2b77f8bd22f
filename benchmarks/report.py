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
        f"peak RSS (mapped file pages included) and peak private memory (RssAnon) of each store's own process; "
        f"ksds buffer_space {scaling['buffer_space'] >> 20} MiB",
        f"{'records':>12} {'store':<10}{'read us':>10}{'insert us':>11}{'load us':>10}"
        f"{'peak RSS MiB':>14}{'private MiB':>13}{'above base':>12}",
    ]
    for run in scaling["runs"]:
        if "error" in run:
            lines.append(f"{run['size']:>12,} {run['store']:<10} ERROR {run['error']}")
            continue
        lines.append(
            f"{run['size']:>12,} {run['store']:<10}{_num(run['read_us']):>10}{_num(run['insert_us']):>11}"
            f"{_num(run['load_us']):>10}{run['peak_rss'] / 2**20:>14.1f}"
            f"{run.get('peak_anon', 0) / 2**20:>13.1f}"
            f"{(run.get('peak_anon', 0) - run.get('base_anon', 0)) / 2**20:>12.1f}"
        )
    for b in scaling.get("ksds_budget", []):
        lines.append(
            f"ksds at {b['size']:,} records: peak private memory {b.get('peak_anon', 0) / 2**20:.1f} MiB = baseline "
            f"{b.get('base_anon', 0) / 2**20:.1f} + {b['above_base'] / 2**20:.1f} MiB "
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
        axes[2].plot(sizes, [r.get("peak_anon", r["peak_rss"]) / 2**20 for r in runs], "o-", label=store, color=c)
    budget = scaling.get("ksds_budget", [])
    if budget:
        sizes = [b["size"] for b in budget]
        axes[2].plot(sizes, [(b.get("base_anon", 0) + b["buffer_space"]) / 2**20 for b in budget], "k--",
                     label="ksds baseline + buffer_space")
        axes[2].plot(sizes, [(b.get("base_anon", 0) + b["bound"]) / 2**20 for b in budget], "k:",
                     label="ksds bound (" + scaling.get("budget_rule", "") + ")")
    for ax, title, ylabel in (
        (axes[0], "random read", "microseconds per read"),
        (axes[1], "random insert (one transaction each, not synced)", "microseconds per insert"),
        (axes[2], "peak private memory of the process (RssAnon: mapped files not counted)", "MiB"),
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


# --- the sharing section ------------------------------------------------------------------------------------------


def format_sharing(sh: dict[str, Any]) -> str:
    lines = [
        f"Sharing: {sh['records']:,} shared records of {sh['record_length']} B (keys {sh['key_length']} B), "
        f"{sh['requests']:,} requests per process per run, median of {sh['repeat']} runs",
        "  req/s = every process's requests / (last end - first start); us/req = each process's own time per "
        "request, averaged; np/1p = req/s of n processes / of 1;",
        "  ksds/sqlite = sqlite's req/s / ksds's (> 1: ksds slower; per-repeat spread in brackets); cpu% / rq% = "
        "share of the processes' time running / runnable but waiting for a CPU;",
        "  check = counters summed after the run == updates done, and no read saw a counter go backwards",
        f"  {sh.get('cpus', '?')} CPUs; load average before the section {_num(sh.get('load_before'))} (other "
        "processes on the machine take CPUs from 2- and 4-process runs: see rq%)",
        f"{'workload / system':<36}{'procs':>5}{'req/s':>11}{'us/req':>9}{'np/1p':>7}{'ksds/sqlite':>13}"
        f"  {'(repeats)':<12}{'cpu%':>5}{'rq%':>5}  check",
        "-" * 112,
    ]
    last = None
    for row in sh["rows"]:
        if row["workload"] != last:
            last = row["workload"]
            lines.append(f"{last}: {sh.get('workloads', {}).get(last, '')}")
        label = row["label"]
        extra = ""
        if row["workload"] == "upd+read" and row.get("role_rates"):
            rr = row["role_rates"]
            extra = f"  updater {rr.get('update', 0):,.0f}/s, reader {rr.get('reader', 0):,.0f}/s"
        elif row["system"] == "ksds-shr2" and row["procs"] == 1:
            label += " (updater alone)"
        elif row["system"] == "ksds-shr3":
            label += ' (all "rw")'
        if "rate" not in row:
            lines.append(f"  {label:<34}{row['procs']:>5}  ERROR {row.get('error', 'no run')}")
            continue
        scale = f"{row['scale']:.2f}" if row.get("scale") else ""
        vs = row.get("vs_sqlite")
        ratio = f"{vs['ratio']:>13.2f}  ({vs['min']:.2f}-{vs['max']:.2f})".ljust(27) if vs else " " * 27
        check = "ok" if row.get("checked") else "-"
        if row.get("error"):
            check = row["error"]
        elif row.get("retries"):
            check += f" ({row['retries']} retries)"
        shares = f"{100 * row.get('cpu_share', 0):>5.0f}{100 * row.get('runq_share', 0):>5.0f}  "
        lines.append(f"  {label:<34}{row['procs']:>5}{row['rate']:>11,.0f}{_num(row['us_per_req'], 1):>9}"
                     f"{scale:>7}{ratio}{shares}{check}{extra}")
    if sh.get("failed"):
        for system, why in sh["failed"].items():
            lines.append(f"WRONG RESULT on {system}: {why}")
    lines.extend(sharing_target_lines(sh))
    return "\n".join(lines)


def sharing_target_lines(sh: dict[str, Any]) -> list[str]:
    """The targets block of the sharing section: each target's ratio of medians (per-repeat spread) and whether
    this run met it."""
    ts = sh.get("targets") or []
    if not ts:
        return []
    out = ["", "Sharing targets: ratio of the two rows' medians (per-repeat spread); us = us/req (lower "
           "is better), req/s = throughput (higher is better)"]
    for t in ts:
        unit = "us/req" if t["measure"] == "us" else "req/s"
        num, den = t["num"], t["den"]
        pair = f"{num[0]} {num[1]} x{num[2]} / {den[0]} {den[1]} x{den[2]} {unit}"
        if t["ratio"] is None:
            got, verdict = "not run", "NOT RUN"
        else:
            spread = f" ({t['min']:.2f}-{t['max']:.2f})" if t.get("min") is not None else ""
            got = (f"{_num(t['num_value'], 1)} / {_num(t['den_value'], 1)} = {t['ratio']:.2f}{spread}, "
                   f"want {t['cmp']} {t['bound']:g}")
            verdict = "met" if t["met"] else "NOT MET" + (f" ({t['error']})" if t.get("error") else "")
        out.append(f"  {t['what']}")
        out.append(f"      {pair}: {got}: {verdict}")
    met = sum(1 for t in ts if t["met"])
    out.append(f"  {met} of {len(ts)} targets met")
    return out


SHARING_COLORS = {"ksds-excl": "#f4a5a5", "ksds-rls": "#d62728", "ksds-shr3": "#e377c2", "ksds-shr2": "#8c564b",
                  "sqlite": "#1f77b4"}
SHARING_HATCH = {1: None, 2: "//", 4: "xx"}


def plot_sharing(sh: dict[str, Any], out: str) -> str:
    plt = _plt()
    rows = [r for r in sh["rows"] if r.get("rate")]
    fig, ax = plt.subplots(figsize=(10, max(3.0, 0.32 * len(rows) + 1.5)))
    labels = []
    for i, r in enumerate(rows):
        ax.barh(i, r["rate"], color=SHARING_COLORS.get(r["system"]), hatch=SHARING_HATCH.get(r["procs"], ".."),
                edgecolor="white")
        rates = [x["rate"] for x in r["runs"]]
        ax.plot([min(rates), max(rates)], [i, i], color="black", lw=1)
        labels.append(f"{r['workload']}: {r['label']} x{r['procs']}")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels, fontsize="small")
    ax.invert_yaxis()
    ax.set_xlabel("requests per second, all processes together (higher is better)\n"
                  "hatched //: 2 processes, xx: 4; black line: spread over repeats")
    ax.set_title(f"Sharing: {sh['records']:,} records, {sh['requests']:,} requests per process, "
                 f"median of {sh['repeat']}")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path = os.path.join(out, "sharing.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --- the caching section ----------------------------------------------------------------------------------------------


def _http_path(m: dict[str, Any]) -> str:
    """``httptools/uvloop`` from the server's line (``...; HTTP httptools on uvloop; ...``)."""
    line = m.get("server_line", "")
    if "; HTTP " not in line:
        return "?"
    proto, _, loop = line.split("; HTTP ", 1)[1].split(";", 1)[0].partition(" on ")
    return f"{proto}/{loop}"


def format_caching(ca: dict[str, Any]) -> str:
    ops = ("create", "read", "update", "delete")
    load = ca.get("load_before")
    lines = [
        f"Caching service through the REST API: python -m ksds serve per mode; client: {ca['client']}; "
        f"X-CS-Service-ID; {ca['requests']:,} requests per operation (dealt out to the clients; a phase stops after "
        f"{ca['budget_s']:g} s: [done/planned]); values 200-1000 characters; {ca.get('cpus', '?')} CPUs"
        + (f", load average {load:.2f} before" if load is not None else ""),
        f"{'mode':<11}{'HTTP':<16}{'workers':>7}{'clients':>8}"
        + "".join(f"{op + '/s':>10}{'p50':>6}{'p99':>6}" for op in ops) + "   (p50, p99: ms)",
        "-" * (42 + 22 * len(ops) + 15),
    ]
    notes = []
    for m in ca["http"]:
        if "error" in m and not m["passes"]:
            lines.append(f"{m['mode']:<11}  ERROR {m['error']}")
            continue
        for p in m["passes"]:
            cells = []
            for op in ops:
                ph = p["phases"].get(op)
                if ph is None:
                    cells.append(f"{'-':>10}{'':>12}")
                    continue
                rps = f"{ph['rps']:,.0f}" + ("*" if ph["cut_short"] or ph["errors"] else "")
                cells.append(f"{rps:>10}{ph['p50_ms']:>6.2f}{ph['p99_ms']:>6.1f}")
            workers = f"{m['servers']}x{m.get('workers', 1)}" if m.get("servers", 1) > 1 else m.get("workers", 1)
            lines.append(f"{m['mode']:<11}{_http_path(m):<16}{workers:>7}"
                         f"{p.get('clients', p.get('threads')):>8}" + "".join(cells))
            for op, ph in p["phases"].items():
                if ph["cut_short"] or ph["errors"]:
                    notes.append(f"{m['mode']} {p.get('clients', p.get('threads'))} clients {op}: "
                                 f"{ph['requests']:,}/{ph['planned']:,} requests, {ph['errors']} errors"
                                 + (f" ({ph['first_error']})" if ph.get("first_error") else ""))
        if "error" in m:
            lines.append(f"{m['mode']:<11}  ERROR {m['error']}")
        checks = [p["check"].get("ok") for p in m["passes"]]
        if m.get("servers", 1) > 1:
            note = (f"{m['mode']}: {m['servers']} separate ksds serve processes on one data set (ports "
                    f"{', '.join(str(x) for x in m.get('ports', []))}), the clients dealt out between them, server "
                    f"exits {', '.join(str(x) for x in m.get('exit_codes', []))}")
        else:
            note = f"{m['mode']}: server exit {m.get('exit_code')}"
        if "closed_cleanly" in m:
            note += ", data set closed cleanly" if m["closed_cleanly"] else ", DATA SET NOT CLOSED CLEANLY"
        note += ", entries left after each pass as expected" if checks and all(checks) else ", CHECK FAILED"
        notes.append(note)
    for mode, why in ca.get("skipped", {}).items():
        notes.append(f"{mode}: skipped ({why})")
    if notes:
        lines.append("* cut short or errors; checks: " + "; ".join(notes))
    for t in ca.get("targets", []):
        want = f">= {t['least_rps']:,.0f}/s" + (f", p99 < {t['most_p99_ms']:g} ms" if t["most_p99_ms"] else "")
        got = "not run" if t["rps"] is None else f"{t['rps']:,.0f}/s, p99 {t['p99_ms']:.1f} ms ({t['best_mode']})"
        lines.append(f"target: {'/'.join(t['modes'])} {t['op']}s with {t['clients']} clients {want}: {got}: "
                     + ("met" if t["met"] else "NOT MET"))
    for t in ca.get("scaleout", []):
        got = ("not run" if t["ratio"] is None
               else f"{t['rps']:,.0f}/s / {t['vs_rps']:,.0f}/s = {t['ratio']:.2f}x")
        head = (f"{t['mode']} / {t['vs']} (one server) {t['op']}s/s with {t['clients']} clients"
                + (f" >= {t['least_ratio']:g}x" if t["least_ratio"] is not None else ""))
        if t["least_ratio"] is None:
            lines.append(f"figure: {head}: {got}")
        else:
            lines.append(f"target: {head}: {got}: " + ("met" if t["met"] else "NOT MET"))
    ip = ca["inprocess"]
    stores = ip["stores"]
    lines.append("")
    lines.append(f"In process (make_storage(mode), no HTTP) against diskcache.Cache: {ip['requests']:,} operations "
                 f"each, median of {ip['repeat']}; us per operation (storage/diskcache)")
    lines.append(f"{'store':<11}" + "".join(f"{op:>18}" for op in ("create", "read", "update", "delete"))
                 + "  check")
    lines.append("-" * 90)
    for name, r in stores.items():
        if "error" in r:
            lines.append(f"{name:<11}  ERROR {r['error']}")
            continue
        cells = []
        for op in ("create", "read", "update", "delete"):
            vs = r[op].get("vs_diskcache")
            cell = _num(r[op]["us_per_op"], 1) + (f" ({vs['ratio']:.2f}x)" if vs else "")
            cells.append(f"{cell:>18}")
        lines.append(f"{name:<11}" + "".join(cells) + ("  ok" if not r["wrong"] else f"  {r['wrong']} WRONG"))
    for name, why in ip.get("skipped", {}).items():
        lines.append(f"{name:<11}  skipped: {why}")
    return "\n".join(lines)


CACHING_COLORS = {"ksds": "#d62728", "ksds-w2": "#8c564b", "ksds-2srv": "#e377c2", "memory": "#2ca02c",
                  "memory-h11": "#98df8a", "redis": "#9467bd", "redis-w2": "#c5b0d5", "diskcache": "#ff7f0e"}


def plot_caching(ca: dict[str, Any], out: str) -> str:
    plt = _plt()
    ops = ["create", "read", "update", "delete"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.5))
    modes = [m for m in ca["http"] if m["passes"]]
    bars = [(m, p) for m in modes for p in m["passes"][:2]]
    width = 0.8 / max(1, len(bars))
    for j, (m, p) in enumerate(bars):
        xs = [i + (j - (len(bars) - 1) / 2) * width for i in range(len(ops))]
        axes[0].bar(xs, [p["phases"][op]["rps"] if op in p["phases"] else 0 for op in ops], width=width,
                    color=CACHING_COLORS.get(m["mode"]), hatch="//" if p["threads"] > 1 else None,
                    edgecolor="white",
                    label=f"{m['mode']}, {p['threads']} client{'s' if p['threads'] > 1 else ''}")
    modes = [m for m in modes if m["passes"][0]["threads"] == 1]  # the latency plot: the 1-client passes
    for j, m in enumerate(modes):
        one = m["passes"][0]["phases"]
        xs = [i + (j - (len(modes) - 1) / 2) * (0.8 / max(1, len(modes))) for i in range(len(ops))]
        p50 = [one[op]["p50_ms"] if op in one else 0 for op in ops]
        p99 = [one[op]["p99_ms"] if op in one else 0 for op in ops]
        axes[1].bar(xs, p50, width=0.8 / max(1, len(modes)), color=CACHING_COLORS.get(m["mode"]), label=m["mode"])
        axes[1].scatter(xs, p99, marker="_", s=200, color="black")
    stores = {n: r for n, r in ca["inprocess"]["stores"].items() if "error" not in r}
    w = 0.8 / max(1, len(stores))
    for j, (name, r) in enumerate(stores.items()):
        xs = [i + (j - (len(stores) - 1) / 2) * w for i in range(len(ops))]
        axes[2].bar(xs, [r[op]["us_per_op"] for op in ops], width=w, color=CACHING_COLORS.get(name), label=name)
    for ax, title, ylabel, log in (
        (axes[0], "REST API throughput (hatched: 4 client processes)", "requests per second", False),
        (axes[1], "REST API latency, 1 client: p50 bars, p99 marks", "milliseconds (log)", True),
        (axes[2], "in process: storage vs diskcache", "microseconds per operation (log)", True),
    ):
        ax.set_xticks(range(len(ops)))
        ax.set_xticklabels(ops)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        if log:
            from matplotlib.ticker import NullFormatter, ScalarFormatter

            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.yaxis.set_minor_formatter(NullFormatter())
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(fontsize="x-small", ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    fig.tight_layout()
    path = os.path.join(out, "caching.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
