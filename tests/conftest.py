"""Two tiers, and the trained runs the tests share.

`python -m pytest -q` runs the fast tier: tiny models, in-process calls where the process is not
what is tested, and one training of the shared quickstart per session. Tests marked `large`
(full-width parity up to ResNet-200, fresh installs, every documented command, kills and signals,
multi-worker, the int8 bound search) run with `--run-large`; `.ci/run` runs both.

The shared run is trained once per session through the command line, as a user trains it (once
for all of pytest-xdist's workers too), and handed out read-only: a test that changes it works
on `copy_run(...)`.
"""

import os
import shutil
import signal
import subprocess
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Ctrl-C as a user's terminal delivers it: a test session started as a background job of a
# non-interactive shell inherits SIGINT ignored, and so would every `resnet-tf` it starts
# (the Ctrl-C tests would see no signal). Python's own handler here: children get the default.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_addoption(parser):
    parser.addoption("--run-large", action="store_true", default=False,
                     help="also run the tests marked large (CI runs them)")


# Tests that pytest-xdist runs on one worker, one after another, in their order: the
# documents' commands share one sandbox in document order (docs/benchmarks.md times the exports
# docs/deploy.md made), and these need gigabytes each (ResNet-50 int8 exports, full-width
# parity, runtime benchmarks). Every other test goes to whichever worker is free. (xdist's own
# `--dist loadgroup` marks do not group under pytest 9.2, which no longer reads `item._nodeid`.)
ONE_WORKER = ("tests/test_readme.py::test_every_command_runs_as_written",
              "tests/test_slim_parity.py::test_full_resnet_v2_matches_slim",
              "tests/test_slim_parity_v1.py::test_full_resnet_v1_matches_slim",
              "tests/test_benchmark.py::test_bench_forward_backward_against_keras_applications",
              "tests/test_benchmark.py::test_bench_runtimes_interleaved_report_and_json")


@pytest.hookimpl(optionalhook=True)  # xdist's hook: unknown where xdist is not loaded
def pytest_xdist_make_scheduler(config, log):
    """xdist's scope scheduling, with one scope for the ONE_WORKER tests and one for each
    other test (so these spread like `--dist load`)."""
    from xdist.scheduler import LoadScopeScheduling

    class Scheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return "one-worker" if nodeid.startswith(ONE_WORKER) else nodeid

    return Scheduling(config, log)


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-large"):
        return
    skip = pytest.mark.skip(reason="large: run with --run-large")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip)


def resnet_tf_command(*args, cwd=ROOT, env=None, timeout=900):
    """`resnet-tf ARGS` in a subprocess (the module form, so the checkout under test runs)."""
    return subprocess.run([sys.executable, "-m", "resnet_tf_cli", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)


def shared_once(factory, name, make):
    """`make(directory)` run once per test session, also when pytest-xdist spreads the session
    over workers: the first worker to ask makes it under a lock in the directory the workers
    share, the others wait for it and reuse it. Returns the directory."""
    import fcntl

    base = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # pytest-of-USER/pytest-N/, above each worker's popen-gwK/
    target = base / f"shared-{name}"
    with open(base / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "done").exists():
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            make(target)
            (target / "done").write_text("")
    return target


def _train_once(factory, name, *args):
    def train(directory):
        result = resnet_tf_command("train", "--config", "quickstart", "--model-dir",
                                   directory / "run", *args)
        assert result.returncode == 0, result.stderr[-3000:]

    return str(shared_once(factory, name, train) / "run")


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory):
    """The README's quickstart, trained once through `resnet-tf train` (real digits, 8
    epochs). Read-only: copy it (`copy_run`) to change it."""
    return _train_once(tmp_path_factory, "quickstart")


def copy_run(run, target):
    """A copy of a shared run that a test may change (paths inside stay valid: a run records
    absolute paths to its data only)."""
    shutil.copytree(run, target)
    return str(target)


def tiered(cases, fast):
    """`cases` for `parametrize`, each one not in `fast` marked large: the fast tier runs a
    covering subset, the large tier the rest."""
    return [case if case in fast else
            pytest.param(*(case if isinstance(case, tuple) else (case,)),
                         marks=pytest.mark.large) for case in cases]


# Every pair of values of the parity grids' five factors (output stride, image size, head,
# global pool, training mode) appears in one of these six cases.
PAIRWISE_PARITY = [(None, 64, None, True, False), (None, 49, 5, False, True),
                   (8, 64, 5, True, True), (8, 49, None, False, False),
                   (16, 64, None, False, True), (16, 49, 5, True, False)]
