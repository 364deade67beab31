"""The `mbrlax` command line.

    mbrlax train ALGO [--env ID] [--seed N] [--steps N] [...]   train; `mbrlax train ALGO --help` lists options
    mbrlax train ALGO --resume runs/<run>                        continue a run from its last checkpoint
    mbrlax eval runs/<run> [--episodes N]                        mean ± std return of the checkpointed policy
    mbrlax plot runs/<run> [runs/<other> ...] [--out F.png]      learning curves on one figure
    mbrlax dataset make --env ID --kind KIND | info PATH         offline datasets (Minari format), made locally
    mbrlax diagnose gradients|compounding|bounds|calibration ...   the theory made measurable (`docs/diagnostics.md`)
    mbrlax checkpoint convert runs/<run>                         turn an old pickle checkpoint into the safe format
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import tyro

from mbrlax.algorithms import registry
from mbrlax.envs.make import EnvError
from mbrlax.runs import CheckpointError, NonFiniteError, RunDirError


@dataclass
class EvalArgs:
    run: tyro.conf.Positional[str]
    """Run directory with a checkpoint."""
    episodes: int = 10
    """Evaluation episodes."""
    seed: int = 20_000
    """Seed of the first episode (episode i uses seed + i)."""


@dataclass
class PlotArgs:
    runs: tyro.conf.Positional[tuple[str, ...]]
    """Run directories to plot on one figure."""
    out: str | None = None
    """Output PNG (default: curves.png in the first run directory, or curve.png for one run)."""
    key: str = "eval/return_mean"
    """Metric to plot against environment steps."""


def _train(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(f"usage: mbrlax train ALGO [options]; ALGO is one of {', '.join(sorted(registry.ALGORITHMS))}")
        return 2
    module, overrides = registry.get(argv[0])
    default = dataclasses.replace(module.Config(), **overrides)
    cfg = tyro.cli(module.Config, args=argv[1:], default=default, prog=f"mbrlax train {argv[0]}")
    for name, fixed in overrides.items():  # e.g. `sac` is MBPO with real_ratio=1: another value is no `sac`
        if getattr(cfg, name) != fixed:
            raise ValueError(f"`mbrlax train {argv[0]}` fixes {name}={fixed!r}, so --{name.replace('_', '-')} "
                             f"{getattr(cfg, name)!r} cannot apply; use `mbrlax train {registry.base_name(argv[0])}` "
                             f"to set it")
    try:
        result = module.train(cfg)
    except KeyboardInterrupt:
        print("mbrlax: interrupted; continue from the last checkpoint with `--resume <run dir>`", file=sys.stderr)
        return 130
    print(f"final evaluation return {result.final_return_mean:.1f} ± {result.final_return_std:.1f} "
          f"after {result.steps} steps; run directory {result.run_dir}")
    return 0


def _eval(argv: list[str]) -> int:
    from mbrlax.envs.make import make
    from mbrlax.evaluation import evaluate
    from mbrlax.runs import run_algorithm

    args = tyro.cli(EvalArgs, args=argv, prog="mbrlax eval")
    module, _ = registry.get(run_algorithm(args.run))
    if hasattr(module, "evaluate_run"):  # algorithms whose envs `make` does not take (tabular: Discrete spaces)
        mean, std = module.evaluate_run(args.run, args.episodes, args.seed)
        cfg = module.load_policy(args.run)[1]
    else:
        act, cfg = module.load_policy(args.run)
        env, _ = make(cfg.env, **(getattr(cfg, "env_kwargs", None) or {}))
        mean, std, _ = evaluate(env, act, args.episodes, args.seed)
    print(f"{cfg.env}: return {mean:.1f} ± {std:.1f} over {args.episodes} episodes ({args.run})")
    return 0


def _plot(argv: list[str]) -> int:
    from mbrlax.runs import plot_runs

    args = tyro.cli(PlotArgs, args=argv, prog="mbrlax plot")
    first = Path(args.runs[0])
    out = args.out or str(first / ("curve.png" if len(args.runs) == 1 else "curves.png"))
    print(plot_runs(args.runs, out, key=args.key))
    return 0


def _dataset(argv: list[str]) -> int:
    from mbrlax.datasets import dataset_command

    return dataset_command(argv)


def _diagnose(argv: list[str]) -> int:
    from mbrlax.diagnostics.gradients import diagnose_command

    return diagnose_command(argv)


def _checkpoint(argv: list[str]) -> int:
    from mbrlax import checkpoint
    from mbrlax.runs import run_algorithm

    if len(argv) != 2 or argv[0] != "convert":
        print("usage: mbrlax checkpoint convert RUN_DIR   (unpickles RUN_DIR/checkpoint.pkl: only for runs you trust)")
        return 2
    module, _ = registry.get(run_algorithm(argv[1]))
    print(checkpoint.convert_legacy(argv[1], upgrade=getattr(module, "upgrade_legacy", None)))
    return 0


COMMANDS = {"checkpoint": _checkpoint, "train": _train, "eval": _eval, "plot": _plot, "dataset": _dataset,
            "diagnose": _diagnose}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        return COMMANDS[argv[0]](argv[1:])
    except (EnvError, CheckpointError, RunDirError, NonFiniteError, KeyError, ValueError, FileNotFoundError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"mbrlax: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
