"""Scale-out subcommands: ``fedtwin tune``, ``fedtwin submit`` and ``fedtwin cluster up|down|status``.

The main CLI calls :func:`add_scaleout_commands` on its subparsers; user errors are ``FedtwinError``
values that the main CLI prints as one line (exit 2). This module prints; the library modules
(``tune``, ``jobs``, ``local_cluster``) only log.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from fedtwin.pipelines.core.errors import FedtwinError


def add_scaleout_commands(subparsers: Any) -> None:
    """Register ``tune``, ``submit`` and ``cluster`` on the main CLI's subparsers."""
    tune = subparsers.add_parser(
        "tune",
        help="run a Ray Tune sweep from a sweep YAML",
        description="Ray Tune sweep: one trial = one experiment (see docs/cluster.md).",
    )
    tune.add_argument("sweep", metavar="SWEEP.yaml", help="sweep file (base experiment + search space)")
    tune.add_argument("--resume", action="store_true", help="continue the interrupted sweep of this file")
    tune.add_argument("--address", help="Ray cluster to attach to (default: RAY_ADDRESS, else embedded local Ray)")
    tune.add_argument("--output", metavar="DIR", help="parent folder of the sweep folder (default: output_dir)")
    tune.add_argument("--quiet", action="store_true", help="no Tune progress tables")
    tune.set_defaults(func=_cmd_tune)

    submit = subparsers.add_parser(
        "submit",
        help="run a fedtwin command as a Ray job on a cluster",
        description="Submit `fedtwin <command>` as a Ray job (working dir = this project), follow its logs "
        "and exit with its status. Example: fedtwin submit --address http://HEAD:8265 -- run my.yaml",
    )
    submit.add_argument(
        "--address",
        help="job server URL (default: RAY_API_SERVER_ADDRESS, an http RAY_ADDRESS, else http://127.0.0.1:8265)",
    )
    submit.add_argument("--working-dir", default=".", help="folder uploaded as the job's working dir (default: .)")
    submit.add_argument("--no-wait", action="store_true", help="print the job id and return at once")
    submit.add_argument(
        "--timeout",
        type=float,
        default=24 * 3600.0,
        metavar="S",
        help="stop following after S seconds (the job keeps running; exit 124)",
    )
    submit.add_argument("--submission-id", help="job id to use (default: generated)")
    submit.add_argument("command", nargs=argparse.REMAINDER, help="-- then the fedtwin command, e.g. -- run my.yaml")
    submit.set_defaults(func=_cmd_submit)

    cluster = subparsers.add_parser("cluster", help="a private local Ray cluster for development")
    csub = cluster.add_subparsers(dest="cluster_command", metavar="{up,down,status}", required=True)
    up = csub.add_parser("up", help="start a private head node; prints the exports to eval")
    up.add_argument("--dir", help="its temp/state folder (default: a new /tmp/fedtwin-ray-XXXX)")
    up.add_argument("--num-cpus", type=int, default=os.cpu_count() or 1)
    up.add_argument("--num-gpus", type=int)
    up.add_argument("--object-store-mb", type=int, default=500)
    up.add_argument("--timeout", type=float, default=120.0, metavar="S", help="wait at most S seconds for it")
    up.set_defaults(func=_cmd_cluster_up)
    for name, helptext, func in (
        ("down", "stop it (its process group only; never `ray stop`)", _cmd_cluster_down),
        ("status", "is it running, and how to reach it", _cmd_cluster_status),
    ):
        cmd = csub.add_parser(name, help=helptext)
        cmd.add_argument("dir", nargs="?", help="the cluster folder (default: FEDTWIN_CLUSTER_DIR)")
        cmd.set_defaults(func=func)


def _cmd_tune(args: argparse.Namespace) -> int:
    from fedtwin.orchestrator.tune.runner import run_sweep
    from fedtwin.orchestrator.tune.sweep_config import load_sweep

    loaded = load_sweep(args.sweep)
    resume_hint = f"fedtwin tune {args.sweep} --resume" + (f" --output {args.output}" if args.output else "")
    try:
        result = run_sweep(
            loaded, address=args.address, output=args.output, resume=args.resume, verbose=0 if args.quiet else 1
        )
    except KeyboardInterrupt:  # a second Ctrl-C; the first one is Tune's clean stop below
        print(f"fedtwin: sweep interrupted; continue with `{resume_hint}`", file=sys.stderr)
        return 130
    table = result.table
    print(
        f"sweep: {result.path} | {len(table.rows)} trials, up to {result.max_concurrent_trials} at once | "
        f"{result.wall_seconds:.0f}s"
    )
    print(f"table: {result.files['md']}")
    if table.best is not None:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in table.best.params.items())
        print(f"best: {table.metric}={table.best.objective:.4g} with {params}")
        print(f"run it: fedtwin run {result.files['best']}")
    if result.interrupted:
        print(f"fedtwin: sweep interrupted; continue with `{resume_hint}`", file=sys.stderr)
        return 130
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from fedtwin.orchestrator.cluster.jobs import submit

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not args.verbose:  # Ray's SDK logs every file it skips while packaging the working dir
        logging.getLogger("ray").setLevel(logging.WARNING)
    try:
        outcome = submit(
            command,
            address=args.address,
            working_dir=args.working_dir,
            wait=not args.no_wait,
            timeout_s=args.timeout,
            out=sys.stdout,
            submission_id=args.submission_id,
        )
    except KeyboardInterrupt:
        print("fedtwin: stopped following; the job keeps running (`ray job list`, `ray job stop ID`)", file=sys.stderr)
        return 130
    if args.no_wait:
        print(outcome.job_id)
        return 0
    line = f"job {outcome.job_id}: {outcome.status}"
    if outcome.exit_code:
        line += f" (exit {outcome.exit_code})"
        if outcome.status != "FAILED" and outcome.message:  # a FAILED job's own output was just shown
            line += f": {outcome.message.splitlines()[0]}"
    print(line, file=sys.stderr)
    return outcome.exit_code


def _cmd_cluster_up(args: argparse.Namespace) -> int:
    from fedtwin.orchestrator.cluster.local_cluster import start_local_cluster

    info, _ = start_local_cluster(
        args.dir,
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        object_store_mb=args.object_store_mb,
        timeout_s=args.timeout,
    )
    print(info.exports(), end="")
    print(
        f"# private Ray cluster up: dashboard {info.dashboard_url}, {info.num_cpus} CPUs; "
        f"stop it with `fedtwin cluster down {info.root}`",
        file=sys.stderr,
    )
    return 0


def _cluster_dir(args: argparse.Namespace) -> str:
    folder = args.dir or os.environ.get("FEDTWIN_CLUSTER_DIR")
    if not folder:
        raise FedtwinError(f"cluster {args.cluster_command}: give the cluster folder (printed by `fedtwin cluster up`)")
    return folder


def _cmd_cluster_down(args: argparse.Namespace) -> int:
    from fedtwin.orchestrator.cluster.local_cluster import read_info, stop_local_cluster

    info = read_info(_cluster_dir(args))
    count = stop_local_cluster(info)
    print(f"stopped the cluster in {info.root} ({count} processes)" if count else f"{info.root}: was not running")
    return 0


def _cmd_cluster_status(args: argparse.Namespace) -> int:
    from fedtwin.orchestrator.cluster.local_cluster import is_running, read_info

    info = read_info(_cluster_dir(args))
    running = is_running(info)
    print(
        f"{info.root}: {'running' if running else 'not running'} | dashboard {info.dashboard_url} | "
        f"RAY_ADDRESS={info.gcs_address}"
    )
    return 0 if running else 1
