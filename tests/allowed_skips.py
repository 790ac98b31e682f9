"""The skips CI allows, in one list; in CI (CI=true) any other skip fails the test that skipped.

CI installs `.[test]` (ray, openai, langchain-core, llama-index-core, pyarrow,
matplotlib, sentence-transformers, transformers) and torch, and builds both
model fixtures, so there every test is meant to run. A test that skips because
a package or a fixture is missing would hide a broken install behind a green
run. So when the environment says CI (CI=true, as CI runs `bash .ci/run`),
SkipPolicy, registered by tests/conftest.py, turns each skip into a failure
unless ALLOWED_SKIPS below names the test and the start of its skip reason:

    FAILED tests/test_x.py::test_y - unexpected skip in CI: <reason> (...)     a skip in the test's body
    ERROR tests/test_x.py::test_y - unexpected skip in CI: <reason> (...)      in a fixture or a skipif mark
    ERROR tests/test_distributed.py - unexpected skip in CI: could not import 'ray' ...

The last is a whole module skipped at import (a module-level importorskip): a
collection error, so pytest stops before running any test and exits 2. The
allowed skips stay skips, listed with why at the end of the run.
Outside CI nothing changes: a developer without ray still gets skips.

Allowed are only skips that depend on the machine itself, not on what was
installed: the CPU's instruction sets, and what the sandbox lets root do.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import pytest


class AllowedSkip(NamedTuple):
    test: str  # the test's node id (from the repository root, with its parameters)
    reason: str  # the start of the reason it skips with
    why: str  # why CI may skip it


ALLOWED_SKIPS = (
    AllowedSkip("tests/test_int8.py::test_micro_kernel_compiled_for_an_avx2_only_cpu",
                "needs an x86 CPU with AVX2",
                "the CPU: the int8 kernel compiled for Haswell runs only on a CPU with AVX2 (not on ARM or "
                "an x86 older than 2013); test_micro_kernel_compiles_to_vnni_on_this_cpu covers this CPU"),
    AllowedSkip("tests/test_kernels.py::test_panel_kernel_compiled_for_an_avx2_only_cpu",
                "needs an x86 CPU with AVX2",
                "the CPU: the float32 panel kernel compiled for Haswell runs only on a CPU with AVX2; "
                "test_panel_kernel_emits_fmas_on_wide_vectors covers this CPU"),
    AllowedSkip("tests/test_robustness.py::test_invariance_under_each_openblas_kernel[haswell]",
                "OpenBLAS's Haswell kernel needs AVX2",
                "the CPU: OPENBLAS_CORETYPE=Haswell runs AVX2 code; the [native] case covers this CPU"),
    AllowedSkip("tests/test_robustness.py::test_read_only_install_imports_and_embeds",
                "needs root and unshare -m",
                "the sandbox: a container without CAP_SYS_ADMIN refuses a new mount namespace even to root, "
                "and the test needs one for its read-only bind mount"),
)


def in_ci() -> bool:
    """True when the environment says CI: CI set to anything but "", "0", "false" or "no" (CI runs CI=true)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_reason(report) -> str:
    """The reason a skipped report gives ("Skipped: " removed)."""
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ")


def allowance(nodeid: str, reason: str, allowed=ALLOWED_SKIPS) -> AllowedSkip | None:
    """The entry that allows this test to skip with this reason, or None."""
    for entry in allowed:
        if entry.test == nodeid and reason.startswith(entry.reason):
            return entry
    return None


class SkipPolicy:
    """A pytest plugin for CI: a skip not in `allowed` becomes a failure; the allowed ones are listed at the end."""

    def __init__(self, allowed=ALLOWED_SKIPS):
        self.allowed = allowed
        self.seen_allowed: list[tuple[str, AllowedSkip]] = []

    def pytest_report_header(self):
        return "CI: a skip not listed in tests/allowed_skips.py fails the test (or the collection) that skipped"

    def judge(self, report) -> None:
        """Leave an allowed skip as it is; turn any other skip into a failure naming its reason."""
        if not report.skipped or hasattr(report, "wasxfail"):  # an xfail's report is "skipped" too: not a skip
            return
        reason = skip_reason(report)
        entry = allowance(report.nodeid, reason, self.allowed)
        if entry is not None:
            self.seen_allowed.append((report.nodeid, entry))
            return
        report.outcome = "failed"
        report.longrepr = (f"unexpected skip in CI: {reason} (a skip CI allows is listed in "
                           f"tests/allowed_skips.py; this one may hide a broken install)")

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        self.judge(outcome.get_result())

    @pytest.hookimpl(hookwrapper=True)
    def pytest_make_collect_report(self, collector):
        outcome = yield
        self.judge(outcome.get_result())

    def pytest_terminal_summary(self, terminalreporter):
        if self.seen_allowed:
            terminalreporter.section("skips CI allows (tests/allowed_skips.py)")
            for nodeid, entry in self.seen_allowed:
                terminalreporter.write_line(f"{nodeid}: {entry.why}")
