"""handprop on a CUDA GPU: hand-written gradients against torch.nn, training of each task,
mixed precision, throughput.

    python scripts/gpu_check.py            # every check
    python scripts/gpu_check.py --quick    # fewer epochs and steps (a minute or two)

1. Gradients: handprop.nn.MLP against the equivalent torch.nn.Sequential with the same
   weights, on CUDA, in float32 (TF32 off) and float64, for every activation and every loss;
   torch.autograd.gradcheck of each handprop Function in float64 on CUDA.
2. Autocast on CUDA (bf16, fp16): backward inside the autocast region (how HandpropModule
   runs it) must give finite float32 gradients close to torch.nn's; backward after the
   region is reported (a known limitation of LinearFunction, see docs/scaling.md).
3. Training, in-process through handprop-train's own code path (handprop.trainer.build.prepare, then
   trainer.fit): regression (property_prices), binary (breast_cancer), multiclass (digits),
   precision 32 and bf16-mixed; model and data tensors must be on the GPU and the training
   loss must fall. Throughput in samples/s of fit.
4. Raw step throughput: forward + backward + SGD step of a wide MLP, handprop vs torch.nn.

Exit status: 0 all checks passed, 1 a check failed, 2 no CUDA device (nothing checked).
``--device cpu`` runs the same checks on the CPU: a dry run of this script, not a GPU result.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

FAILURES: list[str] = []


def check(ok: bool, what: str, detail: str = "") -> bool:
    print(f"  {'ok  ' if ok else 'FAIL'}  {what}{'  ' + detail if detail else ''}")
    if not ok:
        FAILURES.append(what)
    return ok


def section(title: str) -> None:
    print(f"\n== {title}")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


# --------------------------------------------------------------------------------------------
# 1. Gradients against torch.nn
# --------------------------------------------------------------------------------------------
LOSSES = {
    # name: (handprop.functional name, torch.nn.functional name, target maker (n, classes))
    "mse": ("mse_loss", "mse_loss", lambda n, c, dev, dt: torch.randn(n, c, device=dev, dtype=dt)),
    "bce": (
        "binary_cross_entropy_with_logits",
        "binary_cross_entropy_with_logits",
        lambda n, c, dev, dt: torch.rand(n, c, device=dev, dtype=dt),
    ),
    "cross_entropy": (
        "cross_entropy",
        "cross_entropy",
        lambda n, c, dev, dt: torch.randint(0, c, (n,), device=dev),
    ),
}


def twins(act: str, sizes: list[int], device: str, dtype: torch.dtype, seed: int = 0):
    """A handprop MLP and a torch.nn.Sequential with the same weights."""
    from torch import nn

    from handprop.networks import MLP

    torch.manual_seed(seed)
    hp = MLP(sizes[0], sizes[1:-1], sizes[-1], act).to(device, dtype)
    act_t = {
        "relu": nn.ReLU,
        "tanh": nn.Tanh,
        "sigmoid": nn.Sigmoid,
        "leaky_relu": lambda: nn.LeakyReLU(0.01),
    }[act]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act_t())
    tn = nn.Sequential(*layers).to(device, dtype)
    tn.load_state_dict({k.removeprefix("layers."): v for k, v in hp.state_dict().items()})
    return hp, tn


def check_gradients(device: str) -> None:
    import handprop.functional as F

    section("gradients: handprop.nn.MLP vs torch.nn.Sequential (same weights) on " + device)
    torch.backends.cuda.matmul.allow_tf32 = False  # compare float32 with float32
    torch.backends.cudnn.allow_tf32 = False
    tol = {torch.float32: 1e-5, torch.float64: 1e-12}
    for dtype in (torch.float32, torch.float64):
        worst = 0.0
        for act in ("relu", "tanh", "sigmoid", "leaky_relu"):
            for loss, (hp_name, t_name, target) in LOSSES.items():
                hp, tn = twins(act, [20, 64, 32, 5], device, dtype)
                torch.manual_seed(1)
                x = torch.randn(256, 20, device=device, dtype=dtype)
                y = target(256, 5, device, dtype)
                res = []
                for model, fn in (
                    (hp, getattr(F, hp_name)),
                    (tn, getattr(torch.nn.functional, t_name)),
                ):
                    c = fn(model(x), y)
                    c.backward()
                    res.append((c, [p.grad for p in model.parameters()]))
                errs = [rel_err(res[0][0], res[1][0])]
                errs += [rel_err(a, b) for a, b in zip(res[0][1], res[1][1], strict=True)]
                worst = max(worst, *errs)
                if max(errs) > tol[dtype]:
                    check(False, f"{dtype} {act} {loss}", f"relative error {max(errs):.2e}")
        check(
            worst <= tol[dtype],
            f"{str(dtype).removeprefix('torch.')}: 4 activations x 3 losses",
            f"largest relative error {worst:.2e} (limit {tol[dtype]:.0e})",
        )

    section("gradcheck (float64, " + device + ") of each handprop Function")
    torch.manual_seed(0)
    d64 = {"device": device, "dtype": torch.float64}

    def rnd(*shape, grad=True):
        return torch.randn(*shape, **d64).requires_grad_(grad)

    cases: dict[str, tuple[Callable, tuple]] = {
        "linear": (F.linear, (rnd(6, 4), rnd(3, 4), rnd(3))),
        "sigmoid": (F.sigmoid, (rnd(5, 3),)),
        "tanh": (F.tanh, (rnd(5, 3),)),
        "relu": (
            F.relu,
            ((rnd(5, 3, grad=False) + 0.1 * torch.sign(rnd(5, 3, grad=False))).requires_grad_(),),
        ),
        "leaky_relu": (F.leaky_relu, (rnd(5, 3),)),
        "softmax": (lambda z: F.softmax(z, -1), (rnd(5, 4),)),
        "mse_loss": (F.mse_loss, (rnd(5, 3), rnd(5, 3))),
        "bce_with_logits": (
            F.binary_cross_entropy_with_logits,
            (rnd(5, 3), torch.rand(5, 3, **d64)),
        ),
        "cross_entropy": (F.cross_entropy, (rnd(5, 4), torch.randint(0, 4, (5,), device=device))),
    }
    for name, (fn, args) in cases.items():
        try:
            good = torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-5)
        except Exception as e:  # noqa: BLE001 — a failed check, reported
            good = False
            print(f"        {type(e).__name__}: {str(e).splitlines()[0]}")
        check(good, name)


# --------------------------------------------------------------------------------------------
# 2. Autocast
# --------------------------------------------------------------------------------------------
def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bf16_ok(device: str) -> bool:
    return device != "cuda" or torch.cuda.is_bf16_supported()


def check_autocast(device: str) -> None:
    import handprop.functional as F

    section("autocast on " + device)
    dtypes = [torch.float16]
    if bf16_ok(device):
        dtypes.insert(0, torch.bfloat16)
    for dt in dtypes:
        for act in ("relu", "tanh"):
            for loss, (hp_name, t_name, target) in LOSSES.items():
                hp, tn = twins(act, [20, 64, 32, 5], device, torch.float32)
                torch.manual_seed(1)
                x = torch.randn(256, 20, device=device)
                y = target(256, 5, device, torch.float32)
                grads = []
                for model, fn in (
                    (hp, getattr(F, hp_name)),
                    (tn, getattr(torch.nn.functional, t_name)),
                ):
                    with torch.autocast(device, dtype=dt):
                        z = model(x)
                        fn(z, y).backward()  # inside the region, as HandpropModule does
                    grads.append([p.grad for p in model.parameters()])
                fine = z.dtype == dt and all(
                    g.dtype == torch.float32 and bool(torch.isfinite(g).all()) for g in grads[0]
                )
                err = max(rel_err(a, b) for a, b in zip(grads[0], grads[1], strict=True))
                check(
                    fine and err < 3e-2,
                    f"{str(dt).removeprefix('torch.')} {act} {loss}: backward inside autocast",
                    f"grad relative error vs torch.nn {err:.1e}",
                )
        # torch's recommended pattern: backward after leaving the region.
        hp, _ = twins("relu", [20, 64, 5], device, torch.float32)
        try:
            with torch.autocast(device, dtype=dt):
                c = F.mse_loss(
                    hp(torch.randn(64, 20, device=device)), torch.randn(64, 5, device=device)
                )
            c.backward()
            print(
                f"  info  {str(dt).removeprefix('torch.')}: backward after the autocast region works"
            )
        except RuntimeError as e:
            print(
                f"  known {str(dt).removeprefix('torch.')}: backward after the autocast region fails: {str(e).splitlines()[0]}"
            )
            print(
                "        (LinearFunction.backward needs custom_fwd/custom_bwd; see docs/scaling.md)"
            )


# --------------------------------------------------------------------------------------------
# 3. Training each task through handprop-train's code path
# --------------------------------------------------------------------------------------------
TASKS = [
    ("regression", ["data=property_prices"]),
    ("binary", ["data=breast_cancer"]),
    ("multiclass", ["data=digits", "model.hidden=[64]"]),
]


def check_training(device: str, epochs: int) -> None:
    from hydra import compose, initialize_config_module

    from handprop.trainer.build import prepare

    trainer_cfg = "gpu" if device == "cuda" else "cpu"
    section(f"training on {device} (trainer={trainer_cfg}, {epochs} epochs, in-process)")
    print(f"  {'task':<11}{'precision':<11}{'samples/s':>12}{'updates':>9}{'train loss':>22}  test")
    for task, overrides in TASKS:
        for precision in ("32", "bf16-mixed"):
            if precision == "bf16-mixed" and not bf16_ok(device):
                print(f"  {task:<11}{precision:<11} skipped: no bf16 on this GPU")
                continue
            what = f"{task} {precision}"
            try:
                with initialize_config_module(
                    config_module="handprop.trainer.conf", version_base="1.3"
                ):
                    cfg = compose(
                        config_name="train",
                        overrides=[
                            *overrides,
                            f"trainer={trainer_cfg}",
                            f"trainer.precision={precision}",
                            f"trainer.max_epochs={epochs}",
                            "logger=none",
                            "callbacks.early_stopping.enabled=false",
                            "callbacks.checkpoint.enabled=false",
                        ],
                    )
                with tempfile.TemporaryDirectory() as tmp:
                    dm, model, trainer, _ = prepare(cfg, Path(tmp))
                    x, y = dm.split("train", device=device)
                    before = model.to(device).evaluate(x, y)["loss"]
                    sync(device)
                    t0 = time.perf_counter()
                    trainer.fit(model, datamodule=dm)
                    sync(device)
                    seconds = time.perf_counter() - t0
                    on_device = all(p.device.type == device for p in model.parameters()) and all(
                        t.device.type == device for t in dm._tensors["train"]
                    )
                    model.eval()
                    after = model.evaluate(*dm.split("train", device=model.device))["loss"]
                    test = model.evaluate(*dm.split("test", device=model.device))
                # (the module counts its updates itself; Lightning's global_step does not)
                samples = model.updates * (cfg.gd.batch_size or dm.num_train)
                key = {"regression": "r2", "binary": "accuracy", "multiclass": "accuracy"}[task]
                print(
                    f"  {task:<11}{precision:<11}{samples / seconds:>12,.0f}{model.updates:>9}"
                    f"{before:>11.4f} → {after:<8.4f}  {key}={test[key]:.4f}"
                )
                check(on_device, f"{what}: model and data tensors on {device}")
                check(math.isfinite(after) and after < before, f"{what}: training loss falls")
            except Exception as e:  # noqa: BLE001 — a failed check, reported
                traceback.print_exc()
                check(False, what, f"{type(e).__name__}: {e}")


# --------------------------------------------------------------------------------------------
# 4. Raw throughput
# --------------------------------------------------------------------------------------------
def check_throughput(device: str, steps: int) -> None:
    import handprop.functional as F

    section(f"raw step throughput on {device}: forward + backward + SGD step, float32")
    torch.backends.cuda.matmul.allow_tf32 = True  # as a user would train
    print(f"  {'network':<22}{'batch':>7}{'handprop samples/s':>20}{'torch.nn samples/s':>20}")
    shapes = (([64, 256, 256, 10], 512), ([1024, 2048, 2048, 10], 8192))
    for sizes, batch in shapes if device == "cuda" else shapes[:1]:
        rates = []
        for i, model in enumerate(twins("relu", sizes, device, torch.float32)):
            loss_fn = F.cross_entropy if i == 0 else torch.nn.functional.cross_entropy
            opt = torch.optim.SGD(model.parameters(), lr=1e-3)
            x = torch.randn(batch, sizes[0], device=device)
            y = torch.randint(0, sizes[-1], (batch,), device=device)
            for n, timed in ((10, False), (steps, True)):
                sync(device)
                t0 = time.perf_counter()
                for _ in range(n):
                    opt.zero_grad(set_to_none=True)
                    loss_fn(model(x), y).backward()
                    opt.step()
                sync(device)
                if timed:
                    rates.append(batch * n / (time.perf_counter() - t0))
        name = "-".join(map(str, sizes))
        print(f"  {name:<22}{batch:>7}{rates[0]:>20,.0f}{rates[1]:>20,.0f}")
        check(
            rates[0] > 0.5 * rates[1],
            f"{name}: handprop within 2x of torch.nn",
            f"ratio {rates[0] / rates[1]:.2f}",
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer epochs and timed steps")
    ap.add_argument(
        "--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a dry run of the script"
    )
    args = ap.parse_args()
    if args.device == "cpu":
        print("gpu_check --device cpu: the checks on the CPU (a dry run, not a GPU result)")
        return run_checks("cpu", args.quick)
    if not torch.cuda.is_available():
        print(
            f"gpu_check: CUDA is not available (torch {torch.__version__}, built for CUDA "
            f"{torch.version.cuda or 'none'}); nothing was checked. Run it on a machine with an "
            "NVIDIA GPU and a CUDA build of torch.",
            file=sys.stderr,
        )
        return 2
    props = torch.cuda.get_device_properties(0)
    print(
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, {props.name} "
        f"({props.total_memory / 2**30:.0f} GiB), bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}"
    )
    return run_checks("cuda", args.quick)


def run_checks(device: str, quick: bool) -> int:
    check_gradients(device)
    check_autocast(device)
    check_training(device, epochs=3 if quick else 10)
    check_throughput(device, steps=20 if quick else 100)
    if FAILURES:
        print(f"\n{len(FAILURES)} check(s) failed: {', '.join(FAILURES)}")
        return 1
    print("\nall checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
