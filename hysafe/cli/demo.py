"""``hysafe demo``: the whole pipeline on the embedded world (options from ``DemoConfig``)."""

from __future__ import annotations

from .options import add_options, options_to_kwargs


def cmd_demo(args) -> int:
    from ..demo import DemoConfig, run_demo

    options = options_to_kwargs(args, DemoConfig)
    result = run_demo(DemoConfig.quick(**options) if args.quick else DemoConfig(**options))
    print(f"report: {result.report}")
    print(result.comparison.to_markdown())
    print(checks_summary(result.checks))
    page = result.report.parent / "compare" / "index.html"
    if page.is_file():
        print(f"comparison page: {page}")
    return 0


def checks_summary(checks) -> str:
    """One line per failed safety check under a count (a passing check is only counted)."""
    failed = [c for c in checks if not c.passed]
    lines = [f"safety checks: {len(checks) - len(failed)} of {len(checks)} hold"]
    lines += [f"  does not hold: {c.name} ({c.detail})" for c in failed]
    return "\n".join(lines)


def args_demo(p) -> None:
    from ..demo import DemoConfig

    p.add_argument(
        "--quick",
        action="store_true",
        help="a small world and few epochs: a smoke run (under a minute; ~1-2 min with a --text-tower)",
    )
    add_options(p, DemoConfig)
