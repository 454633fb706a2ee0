"""``hysafe demo``: the whole pipeline on the embedded world (options from ``DemoConfig``)."""

from __future__ import annotations

from .options import add_options, options_to_kwargs


def cmd_demo(args) -> int:
    from ..demo import DemoConfig, run_demo

    options = options_to_kwargs(args, DemoConfig)
    result = run_demo(DemoConfig.quick(**options) if args.quick else DemoConfig(**options))
    print(f"report: {result.report}")
    print(result.comparison.to_markdown())
    return 0


def args_demo(p) -> None:
    from ..demo import DemoConfig

    p.add_argument(
        "--quick", action="store_true", help="a small world and few epochs (a smoke run of under a minute)"
    )
    add_options(p, DemoConfig)
