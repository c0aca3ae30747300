"""Run every benchmark, print a table of the figures, and write them as JSON.

    python -m bench.run_all [--label NAME]     # from the repo root; `make bench` (a few minutes)
    python -m bench.run_all --million          # only the run of 1,000,000 actions; `make bench-million`

Writes bench/results/<label>-<UTC timestamp>.json and bench/results/latest.json (latest-million.json).
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import admission, bundle, docker_backend, end_to_end, million, nested, slowlog, throughput

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "commit": _commit(),
    }


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def table(report: dict[str, Any]) -> str:
    m = report["machine"]
    rows = [("machine", f"{m['cores']} cores, Python {m['python']}, {m['platform']}, commit {m['commit']}")]
    sections = {
        "admission": _admission_rows,
        "end_to_end": _end_to_end_rows,
        "slowlog": _slowlog_rows,
        "throughput": lambda t: throughput.table(throughput_from(t)),
        "nested": lambda n: nested.table(nested.Nested(**n)),
        "latency": _latency_rows,
        "bundle": _bundle_rows,
        "docker_backend": lambda d: docker_backend.table([docker_backend.Figure(**f) for f in d["figures"]]),
    }
    for name, rows_of in sections.items():
        section = report.get(name)
        if section is None:
            continue
        if set(section) == {"error"}:
            rows.append((name, f"FAILED: {section['error']}"))
        else:
            rows.extend(rows_of(section))
    return _rows(rows)


def _admission_rows(adm: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("admission server", adm["server"])]
    for b in adm["batches"]:
        spread = " / ".join(f"{w:.3f}" for w in b["walls_s"])
        rows.append(
            (
                f"SubmitBatch {b['actions']:,}",
                f"{b['wall_s']:.3f} s median  ({b['per_action_us']:.1f} µs/action; tries {spread} s)",
            )
        )
    for b in adm["batches"]:
        rows.append((f"Redis memory ({b['actions']:,} batch)", f"{b['redis_bytes_per_action']:.0f} B/queued action"))
    return rows


def _end_to_end_rows(e2e: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (f"end to end, fanout of {e2e['tasks']}", f"{e2e['wall_s']:.2f} s"),
        ("dispatch latency p50 / p99", _latency(e2e)),
    ]


def _slowlog_rows(slow: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for s in slow["steps"]:
        outcome = f"; the caller got {s['error']}" if s["error"] else ""
        rows.append(
            (
                f"longest Redis command, {s['name']}",
                f"{s['longest_us'] / 1000:.1f} ms ({s['longest_command']}); wall {s['wall_s']:.2f} s{outcome}",
            )
        )
    return rows


def _rows(rows: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)


def throughput_from(data: dict[str, Any]) -> throughput.Throughput:
    """The dataclass back from its JSON form, for the table."""
    figure = throughput.RunFigure
    return throughput.Throughput(
        **{
            **data,
            "headline": figure(**data["headline"]),
            "scaling": [figure(**f) for f in data["scaling"]],
            "per_action": figure(**data["per_action"]),
            "ray": throughput.Peer(**data["ray"]),
        }
    )


def _latency_rows(latency: dict[str, Any], prefix: str = "admission to RUNNING") -> list[tuple[str, str]]:
    """bench/latency.py's figures, whatever their shape: one row per leaf value."""
    rows: list[tuple[str, str]] = []
    for key, value in latency.items():
        if isinstance(value, dict) and {"p50_ms", "p99_ms"} <= value.keys():
            quantiles = " / ".join("-" if value.get(q) is None else f"{value[q]:.1f}" for q in ("p50_ms", "p99_ms"))
            rows.append((f"{prefix}, {key}, p50 / p99", f"{quantiles} ms  ({value.get('samples', '?')} samples)"))
        elif isinstance(value, dict):
            rows.extend(_latency_rows(value, f"{prefix}, {key}"))
        else:
            rows.append((f"{prefix}, {key}", f"{value:.2f}" if isinstance(value, float) else str(value)))
    return rows


def _bundles(data: dict[str, Any]) -> list[bundle.BundleFigures]:
    return [bundle.BundleFigures(**f) for f in data["bundles"]]


def _latency(e2e: dict[str, Any]) -> str:
    p50, p99 = e2e["dispatch_p50_s"], e2e["dispatch_p99_s"]
    if p50 is None or p99 is None:
        return "not available"
    return f"{p50 * 1000:.0f} ms / {p99 * 1000:.0f} ms  ({e2e['dispatch_samples']} samples, from histogram buckets)"


def write(report: dict[str, Any], label: str, stamp: str) -> list[Path]:
    RESULTS.mkdir(exist_ok=True)
    text = json.dumps(report, indent=2) + "\n"
    # The million run has its own latest file, so it never hides the suite's.
    latest = "latest-million.json" if "million" in report else "latest.json"
    paths = [RESULTS / f"{label}-{stamp}.json", RESULTS / latest]
    for path in paths:
        path.write_text(text)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__.splitlines()[0])
    parser.add_argument("--label", help="results file name prefix (default: baseline, or million)")
    parser.add_argument("--million", action="store_true", help=f"only the run of {million.ACTIONS:,} actions (minutes)")
    args = parser.parse_args(argv)
    label = args.label or ("million" if args.million else "baseline")
    now = datetime.now(UTC)
    report: dict[str, Any] = {"label": label, "timestamp": now.isoformat(timespec="seconds"), "machine": machine()}
    if args.million:
        print(f"million: one run of {million.ACTIONS:,} no-op actions on reusable workers ...", flush=True)
        result = million.run()
        report["million"] = asdict(result)
        m = report["machine"]
        rows = [("machine", f"{m['cores']} cores, Python {m['python']}, {m['platform']}, commit {m['commit']}")]
        print(_rows(rows + million.table(result)))
    else:
        _run_suite(report)
        print(table(report))
    for path in write(report, label, now.strftime("%Y%m%dT%H%M%SZ")):
        print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return 0


def _run_suite(report: dict[str, Any]) -> None:
    sizes = ", ".join(f"{n:,}" for n in throughput.SIZES)
    steps: list[tuple[str, str, Callable[[], Any]]] = [
        ("admission", f"one SubmitBatch of {', '.join(f'{n:,}' for n in admission.SIZES)} actions", admission.run),
        ("end_to_end", f"a fanout of {end_to_end.TASKS} no-op tasks through `fanout up`", end_to_end.run),
        ("slowlog", "the longest single Redis command during a big admission, abort and lease", slowlog.run),
        ("throughput", f"fanouts of {sizes} no-op tasks, one worker per action, and Ray", throughput.run),
        ("nested", f"a nested fanout of {nested.PARENTS} parents x {nested.CHILDREN} children", nested.run),
    ]
    # bench/latency.py (admission to RUNNING, p50/p99) is optional: it is run when it is there.
    if importlib.util.find_spec("bench.latency") is not None:
        latency = importlib.import_module("bench.latency").run
        steps.append(("latency", "admission to RUNNING, idle and during a large tenant's fanout", latency))
    steps.append(("bundle", "the code bundle of the example project: size, pack, upload, fetch", _bundle_step))
    steps.append(
        ("docker_backend", "no-ops on the docker backend beside the process backend (needs an engine)", _docker_step)
    )
    for name, what, run in steps:
        print(f"{name}: {what} ...", flush=True)
        try:
            result = run()
        except Exception as exc:  # one broken benchmark must not cost the others' figures
            traceback.print_exc()
            report[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            continue
        report[name] = result if isinstance(result, dict) else asdict(result)


def _bundle_step() -> dict[str, Any]:
    return {"bundles": [asdict(f) for f in bundle.run()]}


def _docker_step() -> dict[str, Any]:
    return {"figures": [asdict(f) for f in docker_backend.run()]}


def _bundle_rows(data: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (
            f"code bundle, {f.name}",
            f"{f.files} files, {f.bundle_bytes / 1024:.1f} KiB; pack {f.pack_ms:.1f} ms, first upload "
            f"{f.first_upload_ms:.1f} ms, later check {f.later_check_ms:.1f} ms, fetch {f.fetch_ms:.1f} ms, "
            f"unpack {f.unpack_ms:.1f} ms",
        )
        for f in _bundles(data)
    ]


if __name__ == "__main__":
    sys.exit(main())
