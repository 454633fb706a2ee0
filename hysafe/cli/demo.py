"""``hysafe demo``: the whole pipeline on the embedded world (options from ``DemoConfig``)."""

from __future__ import annotations

from .options import add_options, options_to_kwargs


def cmd_demo(args) -> int:
    from ..demo import DemoConfig, run_demo

    options = options_to_kwargs(args, DemoConfig)
    problem = ignored_options(options)
    if problem:
        args.demo_parser.error(problem)
    try:  # a setting no run can use is a usage error, refused before anything is written
        cfg = DemoConfig.quick(**options) if args.quick else DemoConfig(**options)
    except ValueError as e:
        args.demo_parser.error(str(e))
    result = run_demo(cfg)
    print(f"report: {result.report}")
    print(result.comparison.to_markdown())
    print(checks_summary(result.checks))
    page = result.report.parent / "compare" / "index.html"
    if page.is_file():
        print(f"comparison page: {page}")
    return 0


#: options that only a run with a Hugging Face text tower reads, and the one such a run ignores
_TOWER_ONLY = ("text_tower_lora", "text_tower_epochs", "text_anchor", "root_anchor", "text_radius")
_NOT_WITH_A_TOWER = "finetune_epochs"


def ignored_options(options: dict) -> str | None:
    """Why an option the user typed would be ignored by this run (``None``: none would be)."""
    from ..demo.settings import option_name

    if options.get("text_tower") is None:
        typed = [option_name(name) for name in _TOWER_ONLY if name in options]
        verb = "applies" if len(typed) == 1 else "apply"
        return f"{' and '.join(typed)} {verb} only with --text-tower" if typed else None
    if _NOT_WITH_A_TOWER in options:
        return (
            f"{option_name(_NOT_WITH_A_TOWER)} sets the fine-tuning epochs of the model's own text tower; "
            "with --text-tower the fine-tunes run --text-tower-epochs"
        )
    return None


def checks_summary(checks) -> str:
    """One line per failed safety check under a count (a passing check is only counted)."""
    failed = [c for c in checks if not c.passed]
    lines = [f"safety checks: {len(checks) - len(failed)} of {len(checks)} hold"]
    lines += [f"  does not hold: {c.name} ({c.detail})" for c in failed]
    return "\n".join(lines)


def args_demo(p) -> None:
    from ..demo import DemoConfig
    from ..demo.settings import quick_settings

    p.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run, under a minute (~1-2 min with a --text-tower): {quick_settings()} in place "
        "of the defaults shown below (an option given as well wins)",
    )
    add_options(p, DemoConfig)
    p.set_defaults(demo_parser=p)
