"""CI fails on a skip it does not allow (tests/allowed_skips.py): pytest runs on small test files in a temporary tree.

Each run is a child `python -m pytest` on a copy of this repository's tests/conftest.py and
tests/allowed_skips.py (the real wiring and the real list), with CI=true or without CI; the
outcome of every test is read from pytest's JUnit XML report.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from allowed_skips import ALLOWED_SKIPS

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

# A test file whose every test skips in a way CI does not allow: in the body (as a missing
# package found late would), by a skipif mark, and through a fixture (as a missing model fixture).
UNEXPECTED = '''
import pytest

@pytest.fixture
def model_fixture():
    pytest.skip("no e5-small fixture")

def test_skips_in_its_body():
    pytest.importorskip("no_such_package_for_minie5")

@pytest.mark.skipif(True, reason="torch + transformers not installed")
def test_skips_by_a_mark():
    pass

def test_skips_in_a_fixture(model_fixture):
    pass

def test_passes():
    pass

@pytest.mark.xfail(reason="an expected failure, not a skip")
def test_expected_failure():
    assert False
'''


def run_pytest(root: Path, ci: bool) -> tuple[int, str, dict]:
    """pytest in root (CI=true or no CI at all) -> (exit code, output, {test name: outcome, message})."""
    env = {k: v for k, v in os.environ.items() if k != "CI" and not k.startswith("PYTEST_")}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the policy is in conftest.py; installed plugins only cost time
    if ci:
        env["CI"] = "true"
    report = root / "report.xml"
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA",
                             f"--junitxml={report}"], cwd=root, env=env, capture_output=True, text=True,
                            timeout=300)
    outcomes = {}
    if report.is_file():
        for case in ET.parse(report).iter("testcase"):
            results = [(child.tag, child.get("message", "")) for child in case
                       if child.tag in ("failure", "error", "skipped")]
            outcomes[case.get("name")] = results[0] if results else ("passed", "")
    return result.returncode, result.stdout + result.stderr, outcomes


def make_tree(root: Path, files: dict) -> Path:
    """root/pyproject.toml, root/tests/ with the real conftest.py and allowed_skips.py, and the given files."""
    (root / "tests").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[tool.pytest.ini_options]\ntestpaths = ["tests"]\n')
    for name in ("conftest.py", "allowed_skips.py"):
        shutil.copy(TESTS / name, root / "tests" / name)
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(textwrap.dedent(text))
    return root


def files_for(entries) -> dict:
    """Test files holding the tests ALLOWED_SKIPS entries name, each skipping with its entry's reason."""
    files = {}
    for entry in entries:
        path, _, name = entry.test.partition("::")
        function, _, parameter = name.partition("[")
        parametrize = f"@pytest.mark.parametrize('case', [{parameter.rstrip(']')!r}])\n" if parameter else ""
        arguments = "case" if parameter else ""
        files[path] = (files.get(path, "import pytest\n") + f"\n\n{parametrize}def {function}({arguments}):\n"
                       f"    pytest.skip({entry.reason + ' (on this machine)'!r})\n")
    return files


def test_ci_fails_each_skip_it_does_not_allow(tmp_path):
    """CI=true: skips in a body, by a mark, in a fixture, and a listed test skipping for another reason, fail."""
    listed_test = files_for([ALLOWED_SKIPS[0]._replace(reason="no e5-small fixture")])
    root = make_tree(tmp_path, {"tests/test_unexpected.py": UNEXPECTED, **listed_test})
    listed_name = ALLOWED_SKIPS[0].test.split("::")[1]
    code, output, outcomes = run_pytest(root, ci=True)
    assert code == 1, output
    for name, reason in [("test_skips_in_its_body", "could not import 'no_such_package_for_minie5'"),
                         ("test_skips_by_a_mark", "torch + transformers not installed"),
                         ("test_skips_in_a_fixture", "no e5-small fixture"),
                         (listed_name, "no e5-small fixture")]:  # listed, but for its CPU reason only
        kind, message = outcomes[name]
        assert kind in ("failure", "error") and "unexpected skip in CI: " + reason in message, (name, outcomes)
    assert outcomes["test_passes"] == ("passed", "")
    assert outcomes["test_expected_failure"][0] == "skipped"  # an xfail stays an xfail
    assert "CI: a skip not listed in tests/allowed_skips.py" in output  # the header says the rule applies

    code, output, outcomes = run_pytest(root, ci=False)  # outside CI a skip stays a skip
    assert code == 0, output
    assert sorted(name for name, (kind, _) in outcomes.items() if kind == "skipped") == sorted([
        "test_skips_in_its_body", "test_skips_by_a_mark", "test_skips_in_a_fixture", "test_expected_failure",
        listed_name])
    assert "allowed_skips" not in output


def test_ci_fails_a_module_skipped_at_import(tmp_path):
    """A module-level importorskip (as tests/test_distributed.py's ray) becomes a collection error: exit 2."""
    root = make_tree(tmp_path, {"tests/test_needs_a_package.py": """
        import pytest
        ray = pytest.importorskip("no_such_package_for_minie5")

        def test_uses_it():
            pass
        """, "tests/test_other.py": "def test_passes():\n    pass\n"})
    code, output, _ = run_pytest(root, ci=True)
    assert code == 2, output
    assert re.search(r"ERROR tests/test_needs_a_package\.py - unexpected skip in CI: could not import "
                     r"'no_such_package_for_minie5'", output), output


def test_ci_allows_the_listed_skips(tmp_path):
    """Every ALLOWED_SKIPS entry, skipping with its reason, stays a skip, listed with why: the run passes."""
    root = make_tree(tmp_path, files_for(ALLOWED_SKIPS))
    code, output, outcomes = run_pytest(root, ci=True)
    assert code == 0, output
    assert [kind for kind, _ in outcomes.values()] == ["skipped"] * len(ALLOWED_SKIPS), outcomes
    for entry in ALLOWED_SKIPS:
        assert f"{entry.test}: {entry.why}" in output


def test_ci_run_with_no_test_fails(tmp_path):
    """pytest's exit 5 (no test collected) stands, so .ci/run (which exits with pytest's code) fails."""
    code, output, _ = run_pytest(make_tree(tmp_path, {"tests/test_empty.py": "# no tests\n"}), ci=True)
    assert code == 5, output


@pytest.mark.parametrize("entry", ALLOWED_SKIPS, ids=[e.test.split("::")[1].replace("[", "-").rstrip("]")
                                                         for e in ALLOWED_SKIPS])
def test_each_allowed_skip_names_a_real_test_and_its_reason(entry):
    """No stale entry: the file holds the test function and the skip reason the entry names."""
    path, _, name = entry.test.partition("::")
    source = (REPO / path).read_text(encoding="utf-8")
    function = name.partition("[")[0]
    assert re.search(rf"^def {function}\(", source, re.MULTILINE), f"{path} has no test {function}"
    assert entry.reason in source, f"{path} never skips with {entry.reason!r}"
    assert entry.why.strip()


def test_ci_script_sets_ci_and_exits_with_pytests_code():
    """.ci/run exports CI=true (run by hand too) and ends with pytest, so its exit code is pytest's."""
    lines = (REPO / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert "export CI=true" in lines
    assert lines[-1].endswith("python -m pytest --durations=20")
