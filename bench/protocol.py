"""The defaults protocol (docs/worlds.md): choose on validation worlds, then report on fresh test worlds.

1. **Choose.** ``bench/worlds.py`` runs HySAC variants on *validation* worlds of the parametric family
   (``param:100`` and up; small sizes), and this script applies the selection rule to its records:
   the variant with the highest mean share of HySAC's checks passed over the validation worlds
   wins; a tie keeps the current default. Those worlds are never reported as results.

       python bench/worlds.py --out runs/protocol/validation --worlds param:100 param:101 param:102 \\
           --sizes 1200 200 300 --variants default rel-0.1 rel-0.3 abs-K0.1 --euclidean Safe-CLIP
       python bench/protocol.py choose runs/protocol/validation/results.jsonl \\
           --markdown bench/results/protocol/validation.md

   (In the committed record the variant then called ``default``, the relative rule at 0.2, is named
   ``rel-0.2``: ``--current rel-0.2``.)

2. **Report.** With the choices frozen, fresh *test* worlds (``param:1000`` and up) are run as a new
   user runs them, ``hysafe demo --data synthetic:param:SEED`` with every default, and their
   ``checks.json`` are tabulated as they came out: each check's pass rate over the worlds.

       hysafe demo --data synthetic:param:1000 --out runs/protocol/test/param-1000   # one per world
       python bench/protocol.py report runs/protocol/test/*/ --markdown bench/results/protocol/test.md
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

#: the checks that judge HySAC (the SafeR-CLIP checks judge another model)
HYSAC_CHECKS = ("classifier", "ordering", "traversal")


def hysac_checks(checks: list[dict]) -> list[dict]:
    """The checks of a record that judge HySAC."""
    return [c for c in checks if c["name"].startswith(HYSAC_CHECKS)]


def pass_share(checks: list[dict]) -> float:
    """Share of HySAC's checks that passed in one run."""
    judged = hysac_checks(checks)
    return sum(c["passed"] for c in judged) / len(judged) if judged else 0.0


def choose(records: list[dict], current: str = "default") -> tuple[str, dict[str, float]]:
    """The selection rule: per variant, the mean :func:`pass_share` over the worlds it ran on; the
    highest wins, a tie keeps ``current``, and a tie among challengers goes to the one run first (the
    sweep lists them before it runs, smallest departure from the published objective first). Only variants
    run on every world compete."""
    by_variant = defaultdict(dict)
    for r in records:
        by_variant[r["variant"]][r["world"]] = pass_share(r["checks"])
    worlds = set().union(*(v.keys() for v in by_variant.values()))
    means = {v: sum(s.values()) / len(s) for v, s in by_variant.items() if set(s) == worlds}
    if current not in means:
        raise ValueError(f"the current default {current!r} was not run on every validation world")
    best = max(means.values())
    return (current if means[current] == best else max(means, key=means.get)), means


def choose_markdown(records: list[dict], current: str = "default") -> str:
    """The validation table: one row per variant, one column per world, and the rule's verdict."""
    winner, means = choose(records, current)
    worlds = sorted({r["world"] for r in records})
    cell = {(r["variant"], r["world"]): r for r in records}
    lines = [
        "HySAC checks passed per **validation** world (share; the failing checks named), "
        "the rule's input and verdict. Validation worlds are never reported as results.",
        "",
        "| variant | " + " | ".join(worlds) + " | mean |",
        "|---|" + "---|" * (len(worlds) + 1),
    ]
    for variant, mean in sorted(means.items(), key=lambda kv: -kv[1]):
        cells = []
        for w in worlds:
            r = cell[(variant, w)]
            failed = [c["name"] for c in hysac_checks(r["checks"]) if not c["passed"]]
            cells.append(f"{pass_share(r['checks']):.2f}" + (f" (no: {', '.join(failed)})" if failed else ""))
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {mean:.3f} |")
    lines += [
        "",
        f"Rule: highest mean, ties keep the current default ({current}). Chosen: **{winner}**.",
        "",
    ]
    return "\n".join(lines)


FRESH = "Fresh **test** worlds, run once each with every default after the choices were frozen"


def report_markdown(folders: list[Path], what: str = FRESH) -> str:
    """Each check's pass rate over worlds (demo report folders), and every number."""
    runs = {f.name: json.loads((f / "checks.json").read_text()) for f in folders}
    names = list(dict.fromkeys(c["name"] for checks in runs.values() for c in checks))
    lines = [
        f"{what} ({len(runs)} world{'s' if len(runs) != 1 else ''}), as they came out.",
        "",
        "| check | pass rate | " + " | ".join(runs) + " |",
        "|---|---|" + "---|" * len(runs),
    ]
    for name in names:
        verdicts = [next((c for c in checks if c["name"] == name), None) for checks in runs.values()]
        held = [v["passed"] for v in verdicts if v is not None]
        cells = ["-" if v is None else ("yes" if v["passed"] else "**no**") for v in verdicts]
        lines.append(f"| {name} | {sum(held)}/{len(held)} | " + " | ".join(cells) + " |")
    lines += ["", "Numbers behind each verdict:", ""]
    for world, checks in runs.items():
        lines += [f"- **{world}**: " + "; ".join(f"{c['name']}: {c['detail']}" for c in checks)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="stage", required=True)
    c = sub.add_parser("choose", help="apply the selection rule to bench/worlds.py records")
    c.add_argument("results", help="results.jsonl of the validation worlds")
    c.add_argument("--current", default="default", help="the variant that is the default now (ties keep it)")
    r = sub.add_parser("report", help="pass rates over fresh test worlds' demo reports")
    r.add_argument("folders", nargs="+", help="hysafe demo report folders (each with checks.json)")
    r.add_argument("--what", default=FRESH, help="what the worlds are (the table's first line)")
    for s in (c, r):
        s.add_argument("--markdown", help="write the table here (default: print it)")
    args = p.parse_args(argv)
    if args.stage == "choose":
        records = [json.loads(line) for line in Path(args.results).read_text().splitlines() if line.strip()]
        table = choose_markdown(records, args.current)
    else:
        table = report_markdown([Path(f) for f in args.folders], args.what)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(table)
    else:
        sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
