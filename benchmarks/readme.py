"""The READMEs' result tables, copied from ``benchmarks/results/`` so that they cannot drift from it.

A README marks a block with the results file and which of its Markdown tables to show (1-based)::

    <!-- results: denoising_xray64.md#1 -->
    ...replaced by the file's first table...
    <!-- /results -->

``python -m benchmarks.readme`` rewrites every block of ``README.md`` and ``benchmarks/README.md`` from the
committed results (``make benchmark`` does it after the benchmarks); ``--check`` only reports blocks that
differ (exit status 1), as ``tests/test_readme_results.py`` does on every CI run.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from benchmarks.core import REPO, RESULTS

READMES = [REPO / "README.md", REPO / "benchmarks" / "README.md"]
BLOCK = re.compile(r"(<!-- results: (?P<file>[\w.-]+\.md)#(?P<n>\d+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.S)


def tables(markdown: str) -> list[str]:
    """The Markdown tables of a text, in order (each: its consecutive ``|``-lines)."""
    lines = "\n".join(markdown.splitlines())
    return [table + "\n" for table in re.findall(r"^\|.*(?:\n\|.*)*", lines, re.M)]


def table_of(name: str, n: int, results: Path = RESULTS) -> str:
    path = results / name
    if not path.is_file():
        raise FileNotFoundError(f"README block names {name}, which is not in {results.name}/; fix the block's file name")
    found = tables(path.read_text())
    if not 1 <= n <= len(found):
        raise ValueError(f"README block asks for table {n} of {name}, which has {len(found)}; fix the block's #N")
    return found[n - 1]


def render(text: str, results: Path = RESULTS) -> str:
    """``text`` with every results block's body replaced by the table it names."""
    return BLOCK.sub(lambda m: m.group(1) + table_of(m["file"], int(m["n"]), results) + m.group(5), text)


def stale(results: Path = RESULTS) -> list[str]:
    """The READMEs whose blocks differ from the results."""
    return [str(p.relative_to(REPO)) for p in READMES if p.is_file() and render(p.read_text(), results) != p.read_text()]


def update(results: Path = RESULTS) -> list[str]:
    changed = stale(results)
    for name in changed:
        (REPO / name).write_text(render((REPO / name).read_text(), results))
    return changed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().split("\n")[0])
    ap.add_argument("--check", action="store_true", help="report stale blocks, change nothing")
    if ap.parse_args(argv).check:
        names = stale()
        if names:
            print(f"README result blocks differ from benchmarks/results/: {', '.join(names)}; fix: python -m "
                  "benchmarks.readme", file=sys.stderr)
        return 1 if names else 0
    for name in update():
        print(f"updated the result tables of {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
