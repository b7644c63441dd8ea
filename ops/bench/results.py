"""RESULTS.md is shared by every benchmark: each one rewrites only its own marked section."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmarks\n\nEvery figure is measured against a baseline in the same run, on the same machine.\n"


def read_section(name: str) -> str:
    text = RESULTS.read_text() if RESULTS.exists() else ""
    start, end = f"<!-- section:{name} -->", f"<!-- /section:{name} -->"
    if start in text and end in text:
        return text.split(start, 1)[1].split(end, 1)[0]
    return text if name == "appends" and "## Message appends" in text else ""


def write_section(name: str, body: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    start, end = f"<!-- section:{name} -->", f"<!-- /section:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)


HISTORY = "<!-- history: one row per run, newest last -->"


def earlier_rows(name: str) -> str:
    """The history rows already in a section (data rows start with the year)."""
    old = read_section(name)
    if HISTORY not in old:
        return ""
    return "".join(ln + "\n" for ln in old.split(HISTORY, 1)[1].splitlines() if ln.startswith("| 2"))


def write_report(name: str, title: str, about: str, reproduce: str, report: dict, history_columns: list[str], *,
                 per: str = "Per window", extra: tuple[str, ...] = (),
                 noise: str = "The machine is shared and noisy: compare figures from the same run.") -> None:
    """One benchmark's section: what it measures, how to run it again, the latest run (the report's
    `table`, `machine`, `detail`, any `extra` keys, `setup`) and the history, one row per run."""
    kept = earlier_rows(name)
    header = "| " + " | ".join(history_columns) + " |\n" + "|" + "---|" * len(history_columns) + "\n"
    write_section(name, f"## {title}\n\n{about} Reproduce with:\n\n```sh\n{reproduce}\n```\n\n"
                        "Latest run:\n\n" + report["table"] + "\n" + report["machine"] + "\n\n"
                        f"{per}:\n\n" + report["detail"] + "\n" + "".join(report[k] + "\n" for k in extra)
                        + report["setup"] + f"\n{noise}\n\n### History\n\n{HISTORY}\n" + header + kept
                        + report["history"])
