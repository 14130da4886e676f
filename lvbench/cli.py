"""The ``lvbench`` command: list | check | train | run | report | compare | clean.

Errors in user input (``LvbenchInputError``: unknown names, bad values, missing or unwritable files)
print one line naming the problem and exit with status 2. Anything else is a bug and shows its
traceback. Warnings (a store file that could not be trusted, a plugin that failed to load) are one
line each.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import shutil
import sys
import textwrap
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import torch

import lvbench
from lvbench.core.errors import LvbenchInputError
from lvbench.data import DATASETS
from lvbench.describe import describe, describe_all

__all__ = ["main"]

USER_ERRORS = (LvbenchInputError,)


def _cell_text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    return "-" if value in (None, "") else str(value)


KIND_TITLES = {"likelihood": "Likelihood estimators", "gradient": "Gradient estimators", "model": "Models"}


def _registry_listing(kind: str, width: int) -> str:
    """The registry by kind, each entry its name, then what it needs, is and optimizes and where it comes
    from, then its docstring's first line, wrapped to ``width`` columns (details: ``lvbench list NAME``)."""
    entries = describe_all(kind)
    indent = min(25, max(len(d["name"]) for d in entries) + 4)
    wrap = functools.partial(textwrap.wrap, width=max(width, indent + 30), subsequent_indent=" " * indent)
    lines = []
    for section, title in KIND_TITLES.items():
        chosen = [d for d in entries if d["kind"] == section]
        if not chosen:
            continue
        lines += ["" if lines else None, f"{title} (lvbench list NAME for options and details)"]
        for d in chosen:
            facts = [
                f"{label} {_cell_text(d[key])}"
                for key, label in (("needs", "needs"), ("properties", "is"), ("objectives", "objectives"))
                if d.get(key)
            ]
            head = f"  {d['name']}".ljust(indent) + " · ".join([*facts, f"from {d['source']}"])
            lines += wrap(head)
            if d["doc"]:
                lines += wrap(" " * indent + d["doc"].splitlines()[0])
    return "\n".join(line for line in lines if line is not None)


def _left_aligned(table: pd.DataFrame) -> str:
    """A plain-text table with every column left-aligned (pandas right-aligns its cells)."""
    cells = [list(table.columns)] + table.astype(str).values.tolist()
    widths = [max(len(row[i]) for row in cells) for i in range(len(table.columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def _detail(d: dict[str, Any]) -> str:
    lines = [f"{d['name']} ({d['kind']}, from {d['source']})", ""]
    for key, title in (("needs", "needs"), ("properties", "is"), ("objectives", "objectives")):
        if key in d:
            lines.append(f"{title + ':':12}{_cell_text(d[key])}")
    if d.get("min_k", 1) > 1:
        lines.append(f"{'min k:':12}{d['min_k']}")
    options = d.get("options", d.get("parameters", []))
    lines += ["", "options:" if d["kind"] != "model" else "parameters:"]
    width = max([len(o["name"]) for o in options] + [4])
    for o in options:
        allowed = o["allowed"]
        allowed = ", ".join(repr(a) for a in allowed) if isinstance(allowed, list) else (allowed or "")
        if "range" in o:
            allowed = f"{allowed}, {o['range']}" if allowed else o["range"]
        lines.append(f"  {o['name']:{width}}  default {o['default']!r}" + (f"; {allowed}" if allowed else ""))
    if not options:
        lines.append("  (none)")
    lines += ["", d["doc"]]
    return "\n".join(lines).rstrip() + "\n"


def cmd_list(args: argparse.Namespace) -> int:
    if args.name in ("all", "likelihood", "gradient", "model"):
        if args.json:
            print(json.dumps(describe_all(args.name), indent=1, default=str))
            return 0
        print(_registry_listing(args.name, shutil.get_terminal_size((100, 24)).columns))
        return 0
    d = describe(args.name)
    print(json.dumps(d, indent=1, default=str) if args.json else _detail(d), end="" if not args.json else "\n")
    return 0


def _device(name: str, allow_available: bool = False) -> str:
    """A device name checked in one line: cpu, cuda, cuda:N (and "available" where a list is meant)."""
    index = name[len("cuda:") :] if name.startswith("cuda:") else "0"
    known = name in ("cpu", "cuda") or (name.startswith("cuda:") and index.isdigit())
    if not known and not (allow_available and name == "available"):
        choices = "cpu, cuda, cuda:N" + (" or available" if allow_available else "")
        raise LvbenchInputError(f"--device {name!r}: unknown device; expected {choices}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LvbenchInputError(f"--device {name}: CUDA is not available on this machine")
    return name


def _devices(values: list[str] | None) -> tuple[str, ...] | None:
    """--device given once or more, each possibly comma-separated (cpu,cuda)."""
    if not values:
        return None
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    return tuple(_device(n, allow_available=True) for n in names)


def _writable_file(path: str, flag: str) -> None:
    """Refuse, before any work, an output file path that cannot be written."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise LvbenchInputError(f"{flag} {path} is a folder; give a file path")
    if not os.path.isdir(folder):
        raise LvbenchInputError(f"{flag} {path}: folder {folder} does not exist")
    from lvbench.experiments.plan import probe_writable

    probe_writable(folder, f"cannot write {flag} {path}")


def cmd_train(args: argparse.Namespace) -> int:
    from lvbench.analysis.training import train_vae
    from lvbench.core.options import check_options
    from lvbench.core.registry import get_estimator, get_model, incompatibility, trained_model_types
    from lvbench.data import load_dataset
    from lvbench.experiments.prepare import training_estimator
    from lvbench.experiments.store import atomic_write
    from lvbench.models import save_checkpoint

    device = _device(args.device)
    _writable_file(args.out, "--out")  # before training, not after
    factory = get_model(args.model)
    if factory.dataset == "none":
        trained = trained_model_types()
        raise LvbenchInputError(
            f"--model {args.model} simulates its data and is not trained on a dataset; one of {trained}"
        )
    given = {"latent_dim": args.latent_dim, "hidden": args.hidden, "activation": args.activation}
    options = {"path": args.data_path} if args.dataset == "mnist" else {"split": "train"}
    train = load_dataset(args.dataset, binarization=args.binarization, **options)
    params = {"data_dim": train.data_dim, **{k: v for k, v in given.items() if v is not None}}
    check_options(factory.obj, params, f"--model {args.model}")
    model = factory(**params, seed=args.seed).to(device)
    estimator = args.estimator or training_estimator(model, {"objective": args.objective, "k": args.k})
    reason = incompatibility(get_estimator(estimator), model, num_samples=args.k, objective=args.objective)
    if reason is not None:
        raise LvbenchInputError(f"--estimator {estimator}: {reason}")
    history = train_vae(
        model,
        train,
        args.epochs,
        args.objective,
        args.k,
        estimator=estimator,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
    )
    metadata = {"dataset": args.dataset, "epochs": args.epochs, "objective": args.objective, "k": args.k}
    metadata |= {"estimator": estimator, "final_objective": float(history["objective"].iloc[-1]), "seed": args.seed}
    atomic_write(args.out, lambda tmp: save_checkpoint(tmp, args.model, params, model, **metadata))
    print(history.tail(1).to_string(index=False))
    print(f"wrote {args.out} ({args.model}, trained with {estimator})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from lvbench.experiments import plan_run, run_experiment
    from lvbench.reports import write_report

    spec = _spec(args)
    if args.cell_timeout is not None:
        if not args.cell_timeout > 0:
            raise LvbenchInputError(f"--cell-timeout must be a number of seconds > 0, got {args.cell_timeout}")
        spec = dataclasses.replace(spec, run=dataclasses.replace(spec.run, cell_timeout=args.cell_timeout))
    devices = _devices(args.device)
    if args.dry_run:
        print(plan_run(spec, args.out, devices).describe())
        return 0
    counts = run_experiment(  # checks --out before anything else
        spec,
        args.out,
        executor=args.executor,
        workers=args.workers,
        scheduler=args.scheduler,
        devices=devices,
        progress=False if args.quiet else (True if sys.stderr.isatty() else "lines"),  # bars in a terminal only
    )
    print(
        f"cells: {counts['done']} done, {counts['resumed']} already done (resumed), "
        f"{counts['skipped']} skipped as incompatible, {counts['failed']} failed"
    )
    if counts["failed"]:
        _print_failures(args.out)
    if not args.no_report:
        paths = write_report(args.out)
        print(f"report: {paths['html']} (also {paths['markdown']})")
    return 1 if counts["failed"] else 0


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [n.strip() for n in text.split(",") if n.strip()]


def _plugin_files(args: argparse.Namespace) -> None:
    """--plugin FILE: import each file now, and name them in $LVBENCH_PLUGINS for worker processes."""
    from lvbench.core.registry import PLUGINS_ENV_VAR, load_plugin_files

    files = [os.path.abspath(f) for f in getattr(args, "plugin", None) or []]
    if files:
        load_plugin_files(files)
        present = [p for p in os.environ.get(PLUGINS_ENV_VAR, "").split(os.pathsep) if p]
        os.environ[PLUGINS_ENV_VAR] = os.pathsep.join(dict.fromkeys(present + files))


def _spec(args: argparse.Namespace):
    """The spec file (or the default suite), narrowed by --models/--estimators/--k and changed by --set."""
    from lvbench.experiments.spec import resolve_spec

    k = None
    if args.k is not None:
        try:
            k = [int(v) for v in _names(args.k)]
        except ValueError:
            raise LvbenchInputError(f"--k must be comma-separated integers like 10,100; got {args.k!r}") from None
    spec = args.spec or None
    if getattr(args, "suite", None):
        from lvbench.experiments.spec import suite_path

        if spec is not None:
            raise LvbenchInputError(f"give a spec file ({spec}) or --suite {args.suite}, not both")
        spec = suite_path(args.suite)
    return resolve_spec(spec, _names(args.models), _names(args.estimators), k, args.set)


def _print_failures(out_dir: str) -> None:
    from lvbench.experiments import ResultStore, read_manifest

    statuses = ResultStore(out_dir).statuses(list(read_manifest(out_dir)["cells"]))
    for _, row in statuses[statuses["status"] == "failed"].iterrows():
        obj = f" {row['objective']}" if isinstance(row.get("objective"), str) else ""
        print(f"  failed: {row['model']} × {row['estimator']}{obj} × k={row['k']} × {row['device']}: {row['reason']}")


def cmd_compare(args: argparse.Namespace) -> int:
    from lvbench.reports.compare import UNTESTED, compare, write_comparison

    for folder in (args.a, args.b):
        if not os.path.isdir(folder):
            raise LvbenchInputError(f"{folder} is not a folder")
    result = compare(
        args.a, args.b, alpha=args.alpha, min_slowdown=args.min_slowdown, gate_throughput=args.gate_throughput
    )
    if result.empty:
        raise LvbenchInputError(f"{args.a} and {args.b} have no cells in common (matched by model, estimator, k, ...)")
    out = args.out or os.path.join(args.b, "comparison")
    paths = write_comparison(result, out, args.a, args.b)
    regressions = result[result["regression"]]
    tested = result[~result["metric"].isin(UNTESTED)]
    print(
        f"{len(tested)} tests, {int(tested['significant'].sum())} significant changes (Holm, {args.alpha:g}), "
        f"{len(result) - len(tested)} cells without a comparable partner or result, "
        f"{len(regressions)} regressions; {paths['html']} (also .md, .csv)"
    )
    for _, r in regressions.iterrows():
        where = " × ".join(
            str(r[k]) for k in ("model", "estimator", "objective", "k", "group") if k in r and r[k] == r[k]
        )
        if r["metric"] in UNTESTED:  # no partner, no result, or a declaration contradicted
            print(f"  regression: {where}: {r['test']}")
        else:
            print(f"  regression: {where}: {r['metric']} {r['a']:.4g} -> {r['b']:.4g} (p = {r['p_adjusted']:.2g})")
    return 1 if args.fail_on_regression and len(regressions) else 0


def cmd_clean(args: argparse.Namespace) -> int:
    from lvbench.experiments import clean
    from lvbench.experiments.lock import RunLock

    if not os.path.isdir(args.dir):
        raise LvbenchInputError(f"{args.dir} is not a folder")
    with RunLock(args.dir):
        removed = clean(args.dir)
    print(f"removed {removed['cells']} cells and {removed['models']} prepared models not in the current spec")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from lvbench.analysis.checks import check_estimator

    table = check_estimator(args.name, k=args.k)
    if args.json:
        print(table.to_json(orient="records", indent=1))
    else:
        print(_left_aligned(table))
    failed = int((table["result"] == "FAIL").sum())
    print(f"{args.name}: {len(table) - failed} of {len(table)} checks passed or skipped, {failed} failed")
    return 1 if failed else 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from lvbench.compute.kernels import cache_path, calibrate, kernel_report

    report = calibrate() if not args.show else kernel_report()
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"machine: {report['machine']} ({report['threads']} threads, measured {report['measured_at']})")
    for name, choice in report["choices"].items():
        times = report["milliseconds"].get(name, {})
        timed = ", ".join(f"{k} {v:.3f} ms" for k, v in times.items()) or "not measured"
        mark = " (set by $LVBENCH_KERNELS)" if name in report["overridden"] else ""
        print(f"  {name:20s} {choice:13s}{mark}  [{timed}]")
    print(f"cached in {cache_path()}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from lvbench.reports import write_report

    paths = write_report(args.dir)
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def _add_plugin_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--plugin",
        action="append",
        metavar="FILE",
        help="a Python file that registers estimators or models (repeatable; for code not yet a package)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lvbench", description=lvbench.__doc__)
    parser.add_argument("--version", action="version", version=f"lvbench {lvbench.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="registered estimators and models, or one of them in detail")
    _add_plugin_argument(p)
    p.add_argument(
        "name",
        nargs="?",
        default="all",
        help="all (default), likelihood, gradient, model, or an estimator or model name",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("train", help="train a VAE or a binary-latent VAE on a dataset and write a checkpoint")
    p.add_argument("--model", default="vae", help="a model type trained on data (lvbench list model): vae, ...")
    p.add_argument(
        "--estimator",
        help="gradient estimator (default: reparam where the latent allows it, else vimco for iwae with k >= 2, "
        "else disarm)",
    )
    p.add_argument("--dataset", default="digits", choices=list(DATASETS))
    p.add_argument("--data-path", help="IDX or .npz file (for --dataset mnist)")
    p.add_argument("--binarization", default="dynamic", choices=["static", "dynamic", "threshold", "none"])
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--objective", default="iwae", choices=["elbo", "iwae"])
    p.add_argument("--k", type=int, default=5, help="samples per data point in the objective")
    p.add_argument("--latent-dim", type=int, help="default: the model's (vae 50, sigmoid_belief_net 10)")
    p.add_argument("--hidden", type=int, nargs="+", help="default: the model's (vae 200 200, sigmoid_belief_net 64)")
    p.add_argument("--activation", help="default: tanh")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--out", default="vae.pt", help="checkpoint path")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("run", help="run an experiment spec (default: the default suite) and write its report")
    _add_plugin_argument(p)
    p.add_argument("spec", nargs="?", help="TOML spec file (omit for the default suite)")
    p.add_argument("--suite", choices=["default", "mnist"], help="a suite shipped with lvbench instead of a spec file")
    p.add_argument("--out", default="results", help="output folder; rerunning into it resumes")
    p.add_argument(
        "--executor",
        default=None,
        choices=["local", "process", "dask"],
        help="local (in-process, the default), process (a local pool) or dask",
    )
    p.add_argument("--workers", type=int, default=1, help="processes for --executor process or a local Dask cluster")
    p.add_argument("--scheduler", help="address of an existing Dask scheduler (implies --executor dask)")
    p.add_argument(
        "--device",
        action="append",
        help="override the spec's devices: cpu, cuda, cuda:N or available (repeat or comma-separate: cpu,cuda)",
    )
    p.add_argument(
        "--cell-timeout",
        type=float,
        help="seconds a cell may run before it is stopped and marked failed (the spec's run.cell_timeout; "
        "an estimator table's own cell_timeout still wins)",
    )
    p.add_argument("--dry-run", action="store_true", help="list the cells to run, already done and skipped; exit")
    p.add_argument("--models", help="only these model labels of the spec, comma-separated (e.g. lg,mix)")
    p.add_argument(
        "--estimators",
        help="only these estimator or gradient-study labels (e.g. iwae,ais); a registered estimator the spec has "
        "no table for is added with --k's budgets",
    )
    p.add_argument("--k", help="sample budgets for every selected estimator, comma-separated (e.g. 10,100)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="change one spec value (TOML syntax), e.g. --set run.repeats=5 --set estimators.iwae.proposal=prior",
    )
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "check", help="check an estimator against what it declares, on models with exact ground truth (plugins too)"
    )
    p.add_argument("name", help="a registered estimator")
    _add_plugin_argument(p)
    p.add_argument("--k", type=int, help="sample budget (default 5 for likelihood, 3 for gradient estimators)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("report", help="write CSV, Markdown and HTML reports of an output folder")
    p.add_argument("dir", help="output folder of `lvbench run`")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="compare two result folders cell by cell, with significance")
    p.add_argument("a", help="the baseline result folder")
    p.add_argument("b", help="the result folder to compare with it")
    p.add_argument("--out", help="folder for comparison.{csv,md,html} (default: B/comparison)")
    p.add_argument("--alpha", type=float, default=0.05, help="family-wise error rate (Holm) (default 0.05)")
    p.add_argument(
        "--gate-throughput",
        action="store_true",
        help="count a significant throughput drop as a regression (default: statistical quality only)",
    )
    p.add_argument(
        "--min-slowdown",
        type=float,
        default=0.1,
        help="with --gate-throughput, a throughput drop must also exceed this fraction (0.1)",
    )
    p.add_argument("--fail-on-regression", action="store_true", help="exit 1 if B regresses significantly")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "calibrate", help="measure which CPU kernels (oneDNN or torch's own) run fastest here, and cache the choice"
    )
    p.add_argument("--show", action="store_true", help="show the choice in force without measuring again")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("clean", help="delete the cells and prepared models of an output folder not in its current spec")
    p.add_argument("dir", help="output folder of `lvbench run`")
    p.set_defaults(func=cmd_clean)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    return f"lvbench: warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    warnings.formatwarning = _one_line_warning
    args = build_parser().parse_args(argv)
    if args.command == "run":
        if args.executor is None:
            args.executor = "dask" if args.scheduler else ("process" if args.workers > 1 else "local")
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        _plugin_files(args)
        return func(args)
    except USER_ERRORS as exc:
        message = " ".join(str(exc).split("\n"))
        print(f"lvbench {args.command}: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stdout = open(os.devnull, "w")
        return 0
    except OSError as exc:  # disk full, a folder made read-only, ...: the machine's answer, in one line
        where = f": {exc.filename}" if exc.filename else ""
        kept = " (every cell finished so far is kept: fix it and rerun to resume)" if args.command == "run" else ""
        print(f"lvbench {args.command}: error: {exc.strerror or exc}{where}{kept}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lvbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
