"""Two rooms: the library (``handprop.functional``, ``handprop.nn``, ``handprop.networks``) installs
and runs with torch and numpy alone; the trainer (``handprop.trainer``) and the demos sit on it.

* imports run one way: nothing in the library imports the trainer, the demos or the trainer's
  packages (read from the code, and checked in a process where those packages cannot load);
* ``handprop-train`` without the trainer's packages says in one line what to install;
* the built wheel holds every config file and declares the core and extra requirements.
"""

from __future__ import annotations

import ast
import email
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "handprop"
LIBRARY = ("functional", "nn", "networks", "optim")
#: The trainer's packages: none of them may load with the library.
TRAINER_PACKAGES = (
    "lightning",
    "pytorch_lightning",
    "lightning_fabric",
    "hydra",
    "omegaconf",
    "tensorboard",
    "torchmetrics",
    "sklearn",
    "matplotlib",
)

# A process in which the trainer's packages cannot be imported, as where only torch is installed.
BLOCK = f"""
import sys
BLOCKED = {TRAINER_PACKAGES!r}
class Hide:  # every finder, blind to the blocked names: they look uninstalled
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return None
        return self.finder.find_spec(name, path, target)
    def __getattr__(self, name):
        return getattr(self.finder, name)
sys.meta_path[:] = [Hide(f) for f in sys.meta_path]
"""


def _library_files() -> list[Path]:
    files = [SRC / "__init__.py"]
    for room in LIBRARY:
        files += sorted((SRC / room).rglob("*.py"))
    return files


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.add(node.module or "")
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_the_library_imports_neither_the_trainer_nor_its_packages() -> None:
    found = []
    for path in _library_files():
        for name in _imports(path):
            top = name.split(".")[0]
            if top in TRAINER_PACKAGES or name.startswith(("handprop.trainer", "handprop.demos")):
                found.append(f"{path.relative_to(ROOT)}: {name}")
    assert not found, found


def test_the_library_trains_where_the_trainer_packages_cannot_load() -> None:
    code = (
        BLOCK
        + """
import torch, handprop, handprop.functional as HF, handprop.nn as hnn
from handprop.networks import GAN, MLP, Autoencoder, ConvNet, RecurrentNet
torch.manual_seed(0)
X = torch.randn(64, 4); y = X.sum(1, keepdim=True)
net = hnn.MLP(4, [5], 1)
opt = torch.optim.SGD(net.parameters(), lr=0.05)
first = None
for _ in range(50):
    opt.zero_grad()
    loss = hnn.MSELoss()(net(X), y)
    loss.backward()
    opt.step()
    first = first if first is not None else loss.item()
assert loss.item() < 0.5 * first, (first, loss.item())
m = hnn.to_handprop(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU()))
assert type(m[0]) is hnn.Linear
loaded = sorted({n.split(".")[0] for n in sys.modules} & set(BLOCKED))
assert not loaded, loaded
assert not [n for n in sys.modules if n.startswith("handprop.trainer")]
print("ok", round(first, 3), round(loss.item(), 3))
"""
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("ok")


@pytest.mark.parametrize("entry", ["train_main", "eval_main", "predict_main", "demo_main"])
def test_a_command_without_the_trainer_packages_says_what_to_install(entry: str) -> None:
    code = BLOCK + f"from handprop.trainer import {entry}; {entry}()"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("error: handprop-") and 'pip install "handprop[train]"' in lines[0]
    assert "lightning" in lines[0] and "hydra-core" in lines[0]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (whl,) = out.glob("handprop-*.whl")
    return whl


def test_the_wheel_holds_every_config_file(wheel: Path) -> None:
    conf = SRC / "trainer" / "conf"
    want = {f"handprop/trainer/conf/{p.relative_to(conf).as_posix()}" for p in conf.rglob("*.yaml")}
    assert len(want) > 50
    names = set(zipfile.ZipFile(wheel).namelist())
    assert want <= names, sorted(want - names)
    assert "hydra_plugins/handprop_launcher/__init__.py" in names


def test_the_wheel_declares_torch_and_numpy_and_the_trainer_as_an_extra(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        msg = email.message_from_bytes(z.read(meta))
    requires = msg.get_all("Requires-Dist")
    core = sorted(r.split(">")[0].split("=")[0] for r in requires if "extra ==" not in r)
    assert core == ["numpy", "torch"], requires
    extras = set(msg.get_all("Provides-Extra"))
    assert {"train", "scale", "optuna", "dev"} <= extras
    train = {
        r.split(";")[0].split(">")[0].split("<")[0] for r in requires if 'extra == "train"' in r
    }
    assert {"lightning", "hydra-core", "tensorboard", "torchmetrics", "scikit-learn"} <= train
    assert {"matplotlib"} <= train
