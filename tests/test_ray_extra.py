"""The ray extra is optional: using the Ray parts without it names the extra.

(That `import minie5` never imports Ray, pyarrow or pandas is test_api.py's test_importing_minie5_imports_no_framework.)

Each check runs in a fresh interpreter in which `import ray` fails (a None
entry in sys.modules makes Python raise ImportError), as on a machine where
`pip install minie5` was run without `[ray]`.
"""
from __future__ import annotations

import subprocess
import sys

from cli_helpers import REPO

WITHOUT_RAY = "import sys; sys.modules['ray'] = None; sys.modules['pyarrow'] = None\n"


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_RAY + code], capture_output=True, text=True, cwd=REPO,
                          timeout=300)


def test_the_ray_module_without_ray_names_the_extra():
    result = run_python("""
import minie5
try:
    import minie5.distributed
except minie5.Minie5Error as e:
    print(type(e).__name__, isinstance(e, ImportError), e)
""")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("MissingExtraError True minie5.distributed needs Ray Data")
    assert "pip install 'minie5[ray]'" in result.stdout


def test_embed_ray_without_ray_is_a_one_line_error(tmp_path):
    (tmp_path / "in.txt").write_text("a text\n")
    result = run_python(f"""
import minie5.cli.main
sys.exit(minie5.cli.main.main(["embed", "--ray", "local", "-i", {str(tmp_path / 'in.txt')!r}, "-o", {str(tmp_path / 'out')!r}]))
""")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "minie5: error: minie5.distributed needs Ray Data (ray is not installed): pip install 'minie5[ray]'"]
