"""The ``fedtwin`` command line. The only module that prints; user errors exit 2 with one line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from fedtwin.orchestrator.config.loader import ConfigError, parse_set_options
from fedtwin.pipelines.core.errors import FedtwinError

if TYPE_CHECKING:
    from fedtwin.orchestrator.config.spec import ExperimentSpec


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line (exit 2), like our other user errors."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """All subcommands."""
    from fedtwin.orchestrator.cli.data import add_data_commands
    from fedtwin.orchestrator.cli.scaleout import add_scaleout_commands

    parser = _Parser(prog="fedtwin", description="Federated and twin co-training of video models on Ray.")
    parser.add_argument("--version", action="version", version=f"fedtwin {version()}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more log output, including an embedded Ray's own messages (-vv for debug)",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run one experiment from a YAML config")
    run.add_argument("config", nargs="?", help="experiment YAML (optional with --resume)")
    run.add_argument(
        "--set",
        dest="overrides",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="dotted overrides, e.g. --set strategy.params.C=2 training.lr=0.01 (repeatable; values are YAML)",
    )
    run.add_argument("--address", help="Ray cluster to attach to (default: RAY_ADDRESS, else embedded local Ray)")
    run.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue a run from its newest checkpoint (a folder, or a URI such as s3://bucket/runs/x)",
    )
    run.add_argument(
        "--output",
        metavar="DIR",
        help="parent folder for the run folder (run.output_dir; a path or s3://, gs://, file:// URI)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress lines (start-up phases and rounds)")
    run.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved spec (bases, overrides and defaults applied) as YAML and exit",
    )
    run.set_defaults(func=_cmd_run)

    drill = sub.add_parser("drill", help="run an experiment with a fault drill's faults injected (docs/failures.md)")
    drill.add_argument("plan", help="drill plan YAML: fail_devices, hang_devices, hang_s, rounds, kills")
    drill.add_argument(
        "run_args", nargs=argparse.REMAINDER, metavar="RUN_ARGS", help="what `fedtwin run` takes (CONFIG, --set, ...)"
    )
    drill.set_defaults(func=_cmd_drill)

    add_data_commands(sub)
    add_scaleout_commands(sub)
    return parser


def version() -> str:
    """The installed ``fedtwin`` version (package metadata; ``fedtwin.__version__`` in a bare checkout)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("fedtwin")
    except PackageNotFoundError:
        import fedtwin

        return str(getattr(fedtwin, "__version__", "unknown"))


def _overrides(texts: Sequence[str]) -> dict[str, Any]:
    for text in texts:
        if "=" not in text and text.endswith((".yaml", ".yml")):
            # `--set` takes every following word, so a CONFIG written after it lands here
            raise ConfigError(f"--set {text!r}: expected KEY=VALUE; put CONFIG before --set, or end the list with --")
    return parse_set_options(texts)


def _resolve_spec(args: argparse.Namespace) -> ExperimentSpec:
    """The spec of ``fedtwin run``: from CONFIG, or from the run folder's ``spec.yaml`` with --resume."""
    from fedtwin.orchestrator.config.files import read_mapping
    from fedtwin.orchestrator.config.spec import ExperimentSpec
    from fedtwin.orchestrator.run.run_folder import spec_to_resume
    from fedtwin.pipelines.core import storage

    overrides = _overrides(args.overrides)
    if args.output is not None:  # an empty --output is an error, not the default
        storage.check_scheme(args.output, "--output")
        overrides["run.output_dir"] = args.output
    if args.resume:
        spec_file = spec_to_resume(args.resume)
        data = read_mapping(spec_file, what="run spec")
        try:
            return ExperimentSpec.from_stored(data).with_overrides(overrides)
        except ConfigError as err:
            raise ConfigError(f"{spec_file}: {err}") from None
    if args.config:
        return ExperimentSpec.from_yaml(args.config, overrides)
    raise FedtwinError("run: give a CONFIG file, or --resume RUN_DIR")


def _cmd_run(args: argparse.Namespace) -> int:
    spec = _resolve_spec(args)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(spec.to_dict(), sort_keys=False), end="")
        return 0

    from fedtwin.orchestrator.run.experiment import run_experiment
    from fedtwin.orchestrator.run.progress import ProgressPrinter

    callbacks = [] if args.quiet else [ProgressPrinter(sys.stderr)]
    result = run_experiment(
        spec, address=args.address, run_dir=args.resume, resume=bool(args.resume), callbacks=callbacks
    )
    summary = result.summary
    acc = summary.get("final_test_accuracy")
    line = f"done: {result.run_dir}"
    if acc is not None:
        line += f" | final test accuracy {acc:.4f}"
    if summary.get("wall_seconds") is not None:
        line += f" | {summary['wall_seconds']:.0f}s"
    print(line)
    return 0


def _cmd_drill(args: argparse.Namespace) -> int:
    """``fedtwin drill PLAN CONFIG ...``: ``fedtwin run`` with the plan's faults injected (checked first)."""
    from fedtwin.orchestrator.recipes.federated.drill import DrillPlan, installed

    plan = DrillPlan.from_yaml(args.plan)
    run_args = build_parser().parse_args(["run", *args.run_args])
    spec = _resolve_spec(run_args)
    if spec.recipe != "federated":
        raise ConfigError(f"drill: recipe {spec.recipe!r} has no drills; only recipe federated does")
    with installed(plan, spec):
        return _cmd_run(run_args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedtwin`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except FedtwinError as err:
        print(f"fedtwin: error: {_one_line(err)}", file=sys.stderr)
        if getattr(err, "hard_exit", False):  # Ray still trying to attach in a thread: no clean exit to wait for
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(err.exit_code)
        return err.exit_code
    except KeyboardInterrupt:
        hint = ""
        run_dir = getattr(args, "resume", None)
        if run_dir:
            hint = f"; continue with `fedtwin run --resume {run_dir}`"
        print(f"fedtwin: interrupted{hint or '; resume a run with `fedtwin run --resume RUN_DIR`'}", file=sys.stderr)
        return 130
    except Exception as err:
        # A Ray failure that no guarded call turned into a FedtwinError (e.g. the cluster itself went
        # away) is still one line and exit 1; anything else is a bug and keeps its traceback.
        if not _is_ray_error(err):
            raise
        print(
            f"fedtwin: error: ray: {_one_line(err)}; the last checkpoint is kept, continue with "
            "`fedtwin run --resume RUN_DIR`",
            file=sys.stderr,
        )
        return 1


def _one_line(err: BaseException) -> str:
    """The message on one line (multi-line messages from Ray or plugins are folded)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return " ".join(lines[:1]) if type(err).__module__.startswith("ray") else " ".join(lines)


def _is_ray_error(err: BaseException) -> bool:
    ray = sys.modules.get("ray")
    exceptions = getattr(ray, "exceptions", None)
    return exceptions is not None and isinstance(err, exceptions.RayError)


if __name__ == "__main__":
    sys.exit(main())
