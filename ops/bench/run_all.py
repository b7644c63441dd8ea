#!/usr/bin/env python3
"""Every benchmark, one after another, then one summary table: the figures that reproduce README's.

    .venv/bin/python ops/bench/run_all.py            # full windows (about an hour)
    .venv/bin/python ops/bench/run_all.py --quick    # short windows (a smoke test, about 10 min)
    .venv/bin/python ops/bench/run_all.py --only appends,webhooks

Each benchmark measures its own baselines in the same run and rewrites its own section of
ops/bench/RESULTS.md (a failed or invalid run leaves its section as it was, and is reported here).
Then the `summary` section at the top of RESULTS.md is rebuilt from every section's headline
table: figure, value, baseline, ratio, target, met?, and the machine and date of that run.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
from results import RESULTS, read_section, write_section  # noqa: E402

# name: (script, full arguments, quick arguments)
BENCHMARKS: dict[str, tuple[str, list[str], list[str]]] = {
    "appends": ("appends.py", [], ["--seconds", "5", "--warmup", "2", "--attempts", "1"]),
    "activation": ("activation.py", [], ["--repeat", "5"]),
    "runs": ("runs.py", [], ["--seconds", "5", "--warmup", "2", "--sequential-runs", "40", "--attempts", "1"]),
    "streams": ("streams.py", [], ["--seconds", "4", "--warmup", "2", "--idle-hold", "16"]),   # > the 15 s keep-alive
    "rebuild": ("rebuild.py", [], ["--events", "50000", "--repeat", "1"]),
    "webhooks": ("webhooks.py", [], ["--seconds", "5"]),
    "soak": ("soak.py", [], ["--seconds", "60", "--warmup", "10"]),
    "uploads": ("uploads.py", [], ["--mib", "64", "--repeat", "1"]),
    "outbound": ("outbound.py", [], ["--posts", "1000", "--attempts", "1"]),
}
_MACHINE = re.compile(r"^Machine: (.*)$", re.M)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC")


def headline(section: str) -> list[dict[str, str]]:
    """The first table of a section whose first column is `figure`, as rows of named cells."""
    lines = section.splitlines()
    for i, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells and cells[0] == "figure":
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                values = [c.strip() for c in row.strip().strip("|").split("|")]
                rows.append(_named(cells, values))
            return rows
    return []


def _named(header: list[str], values: list[str]) -> dict[str, str]:
    """Map a table's own columns onto the summary's: the second column is the value; a column
    that is not ratio/target/met? is the baseline (named after its header when it is not 'baseline')."""
    out = {"figure": values[0], "value": values[1] if len(values) > 1 else ""}
    for name, value in zip(header[2:], values[2:]):
        key = name.lower()
        if key in ("ratio", "target", "met?"):
            out[key] = value
        elif key == "baseline":
            out["baseline"] = value
        elif key != "baseline is":
            out["baseline"] = f"{name}: {value}"
        else:
            out["baseline"] = f"{out.get('baseline', '')} ({value})".strip()
    if header[1].lower() not in ("value",):      # e.g. "Threadline"
        out["value"] = values[1]
    return out


def summary() -> str:
    rows = []
    for name, (script, _, _) in BENCHMARKS.items():
        section = read_section(name)
        if not section:
            rows.append(f"| {name}: not run yet | | | | | | |")
            continue
        machine = _MACHINE.search(section)
        when = _DATE.search(machine.group(1)) if machine else None
        where = (machine.group(1).split(",")[0] if machine else "—") + (f"; {when.group(0)}" if when else "")
        for r in headline(section):
            rows.append(f"| [{name}](#{_anchor(section)}): {r['figure']} | {r['value']} | {r.get('baseline', '—')} | "
                        f"{r.get('ratio', '—')} | {r.get('target', '—')} | {r.get('met?', '—')} | {where} |")
    return ("## Summary (`ops/bench/run_all.py`)\n\nEvery headline figure, from the latest run of each benchmark "
            "(details, baselines and history in its section below). Rebuilt by `.venv/bin/python ops/bench/run_all.py`.\n\n"
            "| figure | value | baseline | ratio | target | met? | machine, date |\n|---|---|---|---|---|---|---|\n"
            + "\n".join(rows) + "\n")


def _anchor(section: str) -> str:
    title = next((ln[3:] for ln in section.splitlines() if ln.startswith("## ")), "")
    return re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")


def _place_summary_first() -> None:
    """The summary section goes right under the file's title."""
    text = RESULTS.read_text()
    start, end = "<!-- section:summary -->", "<!-- /section:summary -->"
    block = text[text.index(start): text.index(end) + len(end)]
    rest = re.sub(r"\n{3,}", "\n\n", text.replace(block, "")).rstrip() + "\n"
    first = rest.find("<!-- section:")
    RESULTS.write_text(rest[:first] + block + "\n\n" + rest[first:] if first >= 0 else rest + "\n" + block + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short windows: a smoke test of every benchmark")
    p.add_argument("--only", default="", help="comma-separated benchmarks to run (default: all)")
    p.add_argument("--summary-only", action="store_true", help="run nothing; rebuild the summary table")
    a = p.parse_args()
    chosen = [n for n in a.only.split(",") if n] or list(BENCHMARKS)
    unknown = set(chosen) - set(BENCHMARKS)
    if unknown:
        p.error(f"unknown benchmarks: {', '.join(sorted(unknown))}; choose from {', '.join(BENCHMARKS)}")
    failed = []
    if not a.summary_only:
        for name in chosen:
            script, full, quick = BENCHMARKS[name]
            cmd = [sys.executable, str(HERE / script), *(quick if a.quick else full)]
            print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
            started = time.monotonic()
            code = subprocess.call(cmd, cwd=ROOT)
            print(f"=== {name}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
            if code != 0:
                failed.append(f"{name} (exit {code})")
    write_section("summary", summary())
    _place_summary_first()
    print("\n" + read_section("summary"))
    if failed:
        print("Not all benchmarks succeeded (a target missed also exits non-zero in some): " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
