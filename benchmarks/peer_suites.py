"""Run the peers' own published test suites against ``solvers.compat``'s front-ends.

Usage::

    python benchmarks/peer_suites.py --source torchdiffeq=PATH [--source torchcde=PATH]
        [--source torchsde=PATH] [--timeout 1800] [--json results.json] [-- PYTEST_ARGS]

``PATH`` is a clone of the peer's repository (a work tree or a bare git directory; its
``HEAD`` is read): rtqichen/torchdiffeq, patrick-kidger/torchcde, google-research/torchsde.
Nothing of the peers is copied into this project. For each suite the script

1. extracts the peer's test directory (``tests/`` or ``test/``) into a temporary directory;
2. writes a shim package named like the peer (``torchdiffeq``, ``torchcde``, ``torchsde``)
   that re-exports ``solvers.compat.<peer>``, and puts it first on ``PYTHONPATH``, so that the
   tests' ``import torchdiffeq`` gets the front-end even where the peer is installed;
3. runs pytest on the extracted tests (``unittest`` subtests are counted one by one), in a
   subprocess, with a plugin that records every test and subtest outcome;
4. sorts each failure: *absent* when its message is one of the front-end's named refusals
   (a method, an option or a feature documented as absent in ``docs/compat.md``),
   *documented* when the test is one that ``DOCUMENTED`` names (a documented absence that
   the test meets by an assertion, not by a refusal), *failed* otherwise.

It prints a table of counts per suite and the failures that are not refusals.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What the front-ends raise for something they do not have (docs/compat.md): a failure whose
# message holds one of these is counted as "absent", not as a failure.
REFUSALS = (
    "without a native counterpart",
    "is not supported",
    "are not supported",
    "not in the solver layer yet",
    "has no counterpart in solvers.compat",
    "solvers.compat does not provide",
    # the native solver's own refusals (docs/compat.md lists them)
    "has no native counterpart",
    "does not handle stratonovich SDEs here",
    "does not handle ito SDEs here",
    "handles stratonovich SDEs; got an ito SDE",
    "handles ito SDEs with",
    "handles stratonovich SDEs with",
)

_REFUSE = (
    "\n\ndef __getattr__(name):\n"
    "    raise AttributeError(\n"
    '        f"{__name__}.{name}: solvers.compat does not provide it (see docs/compat.md)"\n'
    "    )\n"
)

# Tests of features documented as absent in docs/compat.md that fail by assertion rather
# than by a refusal: counted as "documented", with the reason.
DOCUMENTED = {
    "norm_tests.py::TestNorms::test_adjoint_norm": "reads torchdiffeq's autograd internals "
    "(grad_fn.adjoint_options); custom norms are absent",
    "odeint_tests.py::TestCallbacks::test_steps": "step callbacks are not called (a warning)",
    "odeint_tests.py::TestDiscontinuities::test_odeint_perturb": "the backward solve evaluates a "
    "stage at the end of a step from the left (t - ulp), not at t",
    "test_log_ode.py::test_with_linear_interpolation": "the log-ODE method is absent (it needs "
    "the signatory package)",
}

SHIMS = {
    "torchdiffeq": {
        "__init__.py": "from solvers.compat.torchdiffeq import *  # noqa: F403\n"
        "from solvers.compat.torchdiffeq import odeint, odeint_adjoint, odeint_event\n" + _REFUSE,
    },
    "torchcde": {
        "__init__.py": "from solvers.compat.torchcde import *  # noqa: F403\n"
        "from . import misc\n" + _REFUSE,
        "misc.py": _REFUSE,
    },
    "torchsde": {
        "__init__.py": "from solvers.compat.torchsde import *  # noqa: F403\n"
        "from . import settings, types\n" + _REFUSE,
        "settings.py": "from solvers.compat.torchsde import (  # noqa: F401\n"
        "    LEVY_AREA_APPROXIMATIONS, METHODS, NOISE_TYPES, SDE_TYPES,\n)\n",
        "types.py": "from typing import (  # noqa: F401\n"
        "    Any, Callable, Dict, Optional, Sequence, Tuple, Union,\n)\n"
        "import torch\n"
        "Tensor = torch.Tensor\nTensors = Tuple[Tensor]\nTensorOrTensors = Union[Tensor, Tensors]\n"
        "Scalar = Union[float, Tensor]\nVector = Union[Sequence[float], Tensor]\n"
        "Module = torch.nn.Module\nModules = Tuple[Module]\n"
        "ModuleOrModules = Union[Module, Modules]\n",
    },
}

PLUGIN = textwrap.dedent(
    """
    import json, os

    _OUT = os.environ["PEER_SUITE_RECORD"]

    def pytest_collectreport(report):
        if report.outcome == "failed":
            with open(_OUT, "a") as fh:
                fh.write(json.dumps({"nodeid": report.nodeid + " (collection)", "when": "collect",
                                     "outcome": "failed", "subtest": None,
                                     "message": str(report.longrepr)[-4000:]}) + "\\n")

    def pytest_runtest_logreport(report):
        ctx = getattr(report, "context", None)
        if report.when != "call" and report.outcome == "passed":
            return
        if report.when == "call" or report.outcome != "passed":
            msg = ""
            if report.outcome == "failed":
                msg = str(report.longrepr)[-20000:]
            elif report.outcome == "skipped" and isinstance(report.longrepr, tuple):
                msg = str(report.longrepr[2])
            sub = None
            if ctx is not None:
                sub = {"msg": str(getattr(ctx, "msg", None)),
                       "kwargs": {k: str(v) for k, v in dict(getattr(ctx, "kwargs", {})).items()}}
            with open(_OUT, "a") as fh:
                fh.write(json.dumps({"nodeid": report.nodeid, "when": report.when,
                                     "outcome": report.outcome, "subtest": sub,
                                     "message": msg}) + "\\n")
    """
)


def extract_tests(source: Path, dest: Path) -> Path:
    """The peer's test directory at ``HEAD`` of ``source``, extracted under ``dest``."""
    git = ["git", "-C", str(source)]
    names = subprocess.run(
        [*git, "ls-tree", "--name-only", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.split()
    folder = next((n for n in ("tests", "test") if n in names), None)
    if folder is None:
        raise SystemExit(f"{source}: no tests/ or test/ directory at HEAD")
    # the tests may run the peer's example scripts (torchcde's test_example.py)
    folders = [folder, *(n for n in ("example", "examples") if n in names)]
    files = subprocess.run(
        [*git, "ls-tree", "-r", "--name-only", "HEAD", *folders],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for name in files:
        blob = subprocess.run([*git, "show", f"HEAD:{name}"], check=True, capture_output=True)
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob.stdout)
    return dest / folder


def run_suite(name: str, source: Path, timeout: float, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"peer-{name}-") as tmp:
        tmp = Path(tmp)
        tests = extract_tests(source, tmp)
        shim = tmp / "shim" / name
        shim.mkdir(parents=True)
        for fname, text in SHIMS[name].items():
            (shim / fname).write_text(text)
        (tmp / "shim" / "peer_suite_plugin.py").write_text(PLUGIN)
        (tmp / "pytest.ini").write_text("[pytest]\n")
        record = tmp / "record.jsonl"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(tmp / "shim"), str(ROOT)])
        env["PEER_SUITE_RECORD"] = str(record)
        files = sorted(tests.glob("test_*.py")) or sorted(
            p for p in tests.glob("*_tests.py") if p.name != "run_all.py"
        )
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            str(tmp / "pytest.ini"),
            "--rootdir",
            str(tests),
            "-p",
            "no:cacheprovider",
            "-p",
            "peer_suite_plugin",
            "-q",
            "-o",
            "python_files=test_*.py *_tests.py",
            "--continue-on-collection-errors",
            *map(str, files),
            *extra,
        ]
        try:
            proc = subprocess.run(
                cmd, cwd=tests, env=env, capture_output=True, text=True, timeout=timeout
            )
            tail = proc.stdout[-3000:] + proc.stderr[-2000:]
            timed_out = False
        except subprocess.TimeoutExpired as exc:
            tail = str(exc.stdout or "")[-3000:]
            timed_out = True
        rows = (
            [json.loads(line) for line in record.read_text().splitlines()]
            if (record.exists())
            else []
        )
    return summarise(name, rows, tail, timed_out)


def summarise(name, rows, tail, timed_out) -> dict:
    counts = collections.Counter()
    failures = []
    with_subtests = {r["nodeid"] for r in rows if r["subtest"] is not None}
    for r in rows:
        if r["subtest"] is None and r["nodeid"] in with_subtests and r["when"] == "call":
            continue  # the test's own report; its subtests are counted instead
        if r["outcome"] == "passed":
            counts["passed"] += 1
        elif r["outcome"] == "skipped":
            counts["skipped"] += 1
        elif any(s in r["message"] for s in REFUSALS):
            counts["absent"] += 1
        elif any(r["nodeid"].endswith(k) for k in DOCUMENTED):
            counts["documented"] += 1
        elif "adaptive = True" in r["message"] and "DID NOT WARN" in r["message"]:
            # torchsde's adaptive-Euler warning test: sdeint(adaptive=True) is refused inside
            # pytest.warns, whose report hides the refusal
            counts["absent"] += 1
        elif "Timeout (>" in r["message"]:
            counts["timeout"] += 1  # pytest-timeout's per-test limit (passed after --)
        else:
            counts["failed"] += 1
            label = r["nodeid"] + (f" {r['subtest']['kwargs']}" if r["subtest"] else "")
            last = [ln for ln in r["message"].splitlines() if ln.startswith("E ")]
            failures.append((label, (last[-1] if last else r["message"][-200:]).strip()))
    return {
        "suite": name,
        "rows": rows,
        "counts": dict(counts),
        "failures": failures,
        "timed_out": timed_out,
        "tail": tail,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", action="append", default=[], help="PEER=PATH (repeat)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per suite")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--show", type=int, default=40, help="failures listed per suite")
    parser.add_argument(
        "--from-json",
        type=Path,
        action="append",
        default=[],
        help="sort the recorded rows of earlier --json results again (repeat)",
    )
    args, extra = parser.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    if args.from_json:
        for path in args.from_json:
            for old in json.loads(path.read_text()):
                report(summarise(old["suite"], old["rows"], old["tail"], old["timed_out"]),
                       args.show)  # fmt: skip
        return 0
    sources = {}
    for item in args.source:
        peer, _, path = item.partition("=")
        if peer not in SHIMS or not path:
            parser.error(f"--source takes PEER=PATH with PEER one of {', '.join(SHIMS)}")
        sources[peer] = Path(path)
    if not sources:
        parser.error("pass --source PEER=PATH for at least one peer repository clone")
    results = []
    for peer, path in sources.items():
        res = run_suite(peer, path, args.timeout, extra)
        results.append(res)
        report(res, args.show)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


def report(res: dict, show: int) -> None:
    c = res["counts"]
    names = ("passed", "failed", "absent", "documented", "skipped", "timeout")
    line = "  ".join(f"{n} {c.get(n, 0):4d}" for n in names)
    print(f"{res['suite']:12s} {line}" + ("  (suite timed out)" if res["timed_out"] else ""))
    for label, msg in res["failures"][:show]:
        print(f"    FAILED {label}: {msg[:300]}")
    if not c:
        print(res["tail"])


if __name__ == "__main__":
    raise SystemExit(main())
