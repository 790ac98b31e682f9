"""docs/architecture.md stays true to the code: its links point at the functions they name, the
functions it names exist, and its worked tokenizer example is what the fixture's tokenizer gives."""
from __future__ import annotations

import re
from pathlib import Path

import minie5
from minie5.engine import blas, encoder, kernels, kernels_int8, kernels_panel, layer_loop, matmul_plan, workers
from minie5 import reference

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "architecture.md"


def test_line_anchors_point_at_the_named_function():
    text = DOC.read_text(encoding="utf-8")
    links = re.findall(r"\[`(\w+)\.(\w+)`\]\(\.\./minie5/(\w+)\.py#L(\d+)\)", text)
    assert len(links) >= 12
    for module, function, file, line in links:
        assert module == file, (module, file)
        source = (REPO / "minie5" / f"{file}.py").read_text(encoding="utf-8").splitlines()
        assert source[int(line) - 1].startswith(f"def {function}("), \
            f"{file}.py#L{line} is not `def {function}`: {source[int(line) - 1]!r}"


def test_named_functions_exist():
    text = DOC.read_text(encoding="utf-8")
    modules = {"reference": reference, "kernels": kernels, "encoder": encoder, "blas": blas, "matmul_plan": matmul_plan,
               "workers": workers, "kernels_int8": kernels_int8, "kernels_panel": kernels_panel, "layer_loop": layer_loop}
    named = {m for m in re.findall(r"`(reference|kernels|encoder|blas|matmul_plan|workers|kernels_int8|kernels_panel|"
                                   r"layer_loop)\.(\w+)`", text)
             if m[1] != "py"}  # not file names
    assert len(named) >= 15
    for module, name in named:
        assert hasattr(modules[module], name), f"{module}.{name}"
    assert "forward_with_intermediates" in vars(encoder.FastEncoder)
    assert hasattr(minie5, "ForwardOutput")


def test_worked_tokenizer_example(e5_model):
    text = DOC.read_text(encoding="utf-8")
    example = "query: Ｔhe ﬁrst café  in Köln"
    assert f"`'{example}'`" in text
    tokenizer = e5_model.tokenizer.backend
    normalized = tokenizer.normalizer.normalize_str(example)
    assert f"`'{normalized}'`" in text
    words = [w for w, _ in tokenizer.pre_tokenizer.pre_tokenize_str(normalized)]
    assert " ".join(f"`{w}`" for w in words) in text
    encoding = tokenizer.encode(example)
    assert " ".join(f"`{p}`" for p in encoding.tokens[1:-1]) in text
    assert "[" + ", ".join(map(str, encoding.ids)) + "]" in text
    assert e5_model.tokenizer.encode([example])[0][0] == encoding.ids
