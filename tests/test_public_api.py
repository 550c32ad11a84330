"""Public APIs only: no code under ``src/`` uses an underscore member of torch, Lightning or any
other library (``torch._C``, ``torch._dynamo``, ``from torch.x import _y``,
``optimizer._on_before_step()``): an upgrade can change those without notice.

The check reads the code (``ast``), so comments and strings do not count. An attribute whose name
starts with one underscore is flagged unless handprop itself defines that name somewhere under
``src/`` (its own helpers and attributes, e.g. ``self._epoch_sum``); dunders are public.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _own_names(trees: list[ast.AST]) -> set[str]:
    """Every private name the project defines: functions, classes, module and class attributes,
    attributes it assigns (``self._x = …``), arguments and its own private modules."""
    names: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store | ast.Del):
                names.add(node.attr)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.keyword) and node.arg:
                names.add(node.arg)  # type(...)-built classes: {"_is_twin": True}
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names.add(node.value)  # setattr / dict-built attributes
    names |= {p.stem for p in SRC.rglob("_*.py")}
    return {n for n in names if _private(n)}


def foreign_private_uses(files: dict[str, str]) -> list[str]:
    """``file:line: what`` for each use of another library's underscore member."""
    trees = {name: ast.parse(text, name) for name, text in files.items()}
    own = _own_names(list(trees.values()))
    found = []
    for name, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                bad = [a.name for a in node.names if any(map(_private, a.name.split(".")))]
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if module.split(".")[0] == "handprop" or node.level:
                    bad = []  # the project's own modules
                elif any(map(_private, module.split("."))):
                    bad = [module]
                else:
                    bad = [f"{module}.{a.name}" for a in node.names if _private(a.name)]
            elif isinstance(node, ast.Attribute) and _private(node.attr):
                bad = [] if node.attr in own else [f".{node.attr}"]
            else:
                bad = []
            found += [f"{name}:{node.lineno}: {b}" for b in bad]
    return found


def test_src_uses_no_private_member_of_torch_or_lightning():
    files = {str(p.relative_to(SRC)): p.read_text() for p in sorted(SRC.rglob("*.py"))}
    assert files
    assert foreign_private_uses(files) == []


@pytest.mark.parametrize(
    "code",
    [
        "import torch\ntorch._C._are_functorch_transforms_active()",
        "import torch\ntorch._dynamo.reset()",
        "import torch._dynamo",
        "from torch._functorch import utils",
        "from torch.autograd.function import _is_setup_context_defined",
        "def step(opt):\n    opt._on_before_step()",
        "def f(node):\n    return node._forward_cls",
        "import lightning.pytorch as pl\npl.trainer._something",
    ],
)
def test_the_check_catches(code):
    assert foreign_private_uses({"x.py": code})


@pytest.mark.parametrize(
    "code",
    [
        "class A:\n    def __init__(self):\n        self._n = 0\n    def f(self):\n        return self._n",
        "from handprop.functional.base import _reduce",
        "import torch\nx = torch.nn.functional.relu\ny = torch.Tensor.__add__",
        "# torch._C in a comment\ns = 'torch._dynamo in a string'",
    ],
)
def test_the_check_allows(code):
    assert foreign_private_uses({"x.py": code}) == []
