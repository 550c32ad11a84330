r"""The notes' update rules for a stack of models (:class:`~handprop.networks.MLPStack`): every
parameter has a leading model dimension ``J``, and every hyperparameter may differ per model
(a float for all, or a tensor of shape (J,), broadcast over the model's slice).

Model ``j``'s slice follows the update of the ``torch.optim`` optimizer of the same name with
model ``j``'s hyperparameters, written out in torch's order of operations (``foreach=False``),
so the two agree to float rounding (``tests/test_stack.py``). Scalars that torch computes in
Python (bias corrections) are computed here in float64 per model, then used at the
parameter's precision, as torch uses a Python float.

* :class:`StackedSGD`: ``v ← μ v + (1 − τ) g`` (``v = g`` at the first step);
  ``W ← W − η v``, or ``W ← W − η (g + μ v)`` with Nesterov.
* :class:`StackedRMSprop`: ``s ← α s + (1 − α) g²``; ``W ← W − η g / (√s + ε)``
  (centred: ``√(s − ḡ²)``; with momentum ``b ← μ b + g / (√s + ε)``, ``W ← W − η b``).
* :class:`StackedAdam`: ``m ← β₁ m + (1 − β₁) g``, ``v ← β₂ v + (1 − β₂) g²``,
  ``W ← W − η/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)``; weight decay ``λ`` adds ``λ W``
  to ``g``.
* :class:`StackedAdamW`: Adam with decoupled weight decay, ``W ← W (1 − ηλ)`` first.

Each has :meth:`~StackedOptimizer.model_state` (model ``j``'s state as its ``torch.optim``
twin keeps it, to save or to continue alone), :meth:`~StackedOptimizer.load_model_state`
and :meth:`~StackedOptimizer.select_` (keep some models, e.g. those still training).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "StackedOptimizer",
    "StackedSGD",
    "StackedRMSprop",
    "StackedAdam",
    "StackedAdamW",
    "STACKED",
]


def per_model(value: Any, n_models: int, device: torch.device | None = None) -> Tensor:
    """A hyperparameter as a float64 tensor (J,): a number repeated, or one value per model."""
    t = torch.as_tensor(value, dtype=torch.float64, device=device)
    if t.dim() == 0:
        return t.expand(n_models).clone()
    if t.shape != (n_models,):
        raise ValueError(
            f"a per-model hyperparameter needs shape ({n_models},), got {tuple(t.shape)}"
        )
    return t.clone()


class StackedOptimizer:
    """An update rule over parameters (J, …) with per-model hyperparameters (J,).

    Args:
        params: tensors with the same leading model dimension ``J`` (e.g. an
            :class:`~handprop.networks.MLPStack`'s parameters, or the one (J, P) tensor of
            :func:`~handprop.networks.stack.contiguous_stack`).
        hyper: each hyperparameter, a number or a (J,) sequence / tensor.
    """

    #: The ``torch.optim`` class whose update each model's slice follows.
    TORCH: type[torch.optim.Optimizer]
    #: Hyperparameters and their defaults (torch's).
    DEFAULTS: dict[str, float] = {}
    #: Per-parameter state, in torch's names (``step`` is kept per model, (J,) float64).
    STATE: tuple[str, ...] = ()

    def __init__(self, params: Iterable[Tensor], **hyper: Any) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        self.n_models = self.params[0].shape[0]
        if any(p.dim() < 1 or p.shape[0] != self.n_models for p in self.params):
            raise ValueError("every parameter needs the same leading model dimension J")
        unknown = set(hyper) - set(self.DEFAULTS)
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unknown hyperparameters {sorted(unknown)}; it takes "
                f"{', '.join(self.DEFAULTS)}"
            )
        device = self.params[0].device
        self.hyper: dict[str, Tensor] = {
            k: per_model(hyper.get(k, d), self.n_models, device) for k, d in self.DEFAULTS.items()
        }
        self._check()
        self.state: list[dict[str, Tensor]] = [{} for _ in self.params]
        self._cast: dict[tuple[str, int], Tensor] = {}
        self._refresh()

    def _refresh(self) -> None:
        """Which per-model options any model uses, decided once per change of the
        hyperparameters: not a device sync at every step."""
        self._cast_pairs: dict[str, Tensor] = {}
        self.any = {k: bool((v != 0).any()) for k, v in self.hyper.items()}
        self.all = {k: bool((v != 0).all()) for k, v in self.hyper.items()}

    def _check(self) -> None:
        h = self.hyper
        if (h["lr"] < 0).any():
            raise ValueError(f"invalid learning rate: {h['lr'].tolist()}")
        if (h.get("weight_decay", torch.zeros(1)) < 0).any():
            raise ValueError(f"invalid weight_decay: {h['weight_decay'].tolist()}")

    # ---- hyperparameters --------------------------------------------------------------------
    def set_hyper(self, name: str, value: Any) -> None:
        """Set hyperparameter ``name`` (a number or (J,) values), e.g. each model's scheduled
        learning rate."""
        if name not in self.hyper:
            raise KeyError(f"{type(self).__name__} has no hyperparameter {name!r}")
        self.hyper[name] = per_model(value, self.n_models, self.params[0].device)
        self._cast = {
            k: v for k, v in self._cast.items() if name not in k[0] and k[0] != "1-lr*weight_decay"
        }
        self._refresh()

    def h(self, name: str, p: Tensor) -> Tensor:
        """Hyperparameter ``name`` at ``p``'s precision, shaped (J, 1, …) to broadcast over
        each model's slice of ``p``; ``"1-beta1"`` is ``1 − β₁``, computed in float64 first
        (torch computes it as a Python float)."""
        key = (name, p.dim())
        cached = self._cast.get(key)
        if cached is None or cached.dtype != p.dtype:
            if name == "1-lr*weight_decay":  # AdamW's decay factor, a Python float in torch
                values = 1 - self.hyper["lr"] * self.hyper["weight_decay"]
            elif name.startswith("1-"):
                values = 1 - self.hyper[name[2:]]
            else:
                values = self.hyper[name]
            cached = self.as_scalar(values, p)
            self._cast[key] = cached
        return cached

    def as_scalar(self, values: Tensor, p: Tensor) -> Tensor:
        """Per-model float64 values (J,) used as torch uses a Python float with ``p``: at
        ``p``'s precision, broadcast over each model's slice."""
        return values.to(p.dtype).view(-1, *([1] * (p.dim() - 1)))

    # ---- the step -----------------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = False) -> None:
        for p in self.params:
            if p.grad is not None:
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One update of every model's slice of every parameter (those with a gradient)."""
        for i, p in enumerate(self.params):
            if p.grad is not None:
                self.update(p, p.grad, self.state[i])

    def update(self, p: Tensor, g: Tensor, state: dict[str, Tensor]) -> None:
        raise NotImplementedError

    # ---- models in and out --------------------------------------------------------------------
    def select_(self, index: Tensor | Sequence[int], params: Sequence[Tensor]) -> None:
        """Keep models ``index`` (in that order), the optimizer now stepping ``params``
        (their slices ``index``, e.g. the compacted stack's parameters)."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.params[0].device)
        self.params = list(params)
        self.n_models = len(index)
        if any(p.shape[0] != self.n_models for p in self.params):
            raise ValueError("select_: the new parameters' first dimension must match index")
        self.hyper = {k: v.index_select(0, index) for k, v in self.hyper.items()}
        self.state = [{k: v.index_select(0, index) for k, v in s.items()} for s in self.state]
        self._cast = {}
        self._refresh()

    def model_state(self, j: int, i: int = 0) -> dict[str, Tensor]:
        """Model ``j``'s state for parameter ``i`` as its ``torch.optim`` twin keeps it for the
        model's own parameter (``step`` a 0-dim float32 tensor, buffers copies of the slice);
        empty before the first step."""
        s = self.state[i]
        out = {}
        for k in self.STATE:
            if k in s:
                v = s[k][j]
                out[k] = v.to(torch.float32).cpu() if k == "step" else v.detach().clone()
        return out

    def load_model_state(self, j: int, state: dict[str, Tensor], i: int = 0) -> None:
        """Set model ``j``'s state for parameter ``i`` from its ``torch.optim`` twin's."""
        p = self.params[i]
        s = self.state[i]
        for k in self.STATE:
            if k not in state:
                continue
            v = state[k]
            if k not in s:
                shape = (self.n_models,) if k == "step" else p.shape
                dtype = torch.float64 if k == "step" else p.dtype
                s[k] = torch.zeros(shape, dtype=dtype, device=p.device)
            s[k][j] = v.to(s[k].dtype) if k == "step" else v

    def model_hyper(self, j: int) -> dict[str, float]:
        """Model ``j``'s hyperparameters as plain numbers."""
        return {k: float(v[j]) for k, v in self.hyper.items()}

    def _step_count(self, p: Tensor, state: dict[str, Tensor]) -> Tensor:
        """``t ← t + 1`` per model (float64 (J,)); returns ``t``."""
        if "step" not in state:
            state["step"] = torch.zeros(self.n_models, dtype=torch.float64, device=p.device)
        return state["step"].add_(1)


class StackedSGD(StackedOptimizer):
    """SGD per model, as ``torch.optim.SGD``: ``g ← g + λ W``; with momentum ``μ``,
    ``v ← g`` (first step) then ``v ← μ v + (1 − τ) g``, and ``g ← g + μ v`` (Nesterov) or
    ``g ← v``; ``W ← W − η g``. ``nesterov`` may differ per model (1 or 0)."""

    TORCH = torch.optim.SGD
    DEFAULTS = {"lr": 1e-3, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0, "nesterov": 0}
    STATE = ("momentum_buffer",)

    def update(self, p: Tensor, g: Tensor, state: dict[str, Tensor]) -> None:
        if self.any["weight_decay"]:
            g = g.add(p * self.h("weight_decay", p))
        if self.any["momentum"]:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.clone()
            else:
                buf.mul_(self.h("momentum", p)).add_(g * self.h("1-dampening", p))
            if self.all["nesterov"]:
                g = g.add(buf * self.h("momentum", p))
            elif self.any["nesterov"]:
                ahead = g.add(buf * self.h("momentum", p))
                g = torch.where(self.h("nesterov", p) != 0, ahead, buf)
            else:
                g = buf
        p.sub_(g * self.h("lr", p))

    def model_state(self, j: int, i: int = 0) -> dict[str, Tensor]:
        if float(self.hyper["momentum"][j]) == 0:
            return {}  # torch keeps no buffer without momentum
        return super().model_state(j, i)


class StackedRMSprop(StackedOptimizer):
    """RMSprop per model, as ``torch.optim.RMSprop``: ``g ← g + λ W``,
    ``s ← α s + (1 − α) g²``, ``d = √s + ε`` (centred: ``ḡ ← ḡ + (1 − α)(g − ḡ)``,
    ``d = √(s − ḡ²) + ε``); ``W ← W − η g / d``, or with momentum ``b ← μ b + g / d``,
    ``W ← W − η b``."""

    TORCH = torch.optim.RMSprop
    DEFAULTS = {
        "lr": 1e-2,
        "alpha": 0.99,
        "eps": 1e-8,
        "weight_decay": 0.0,
        "momentum": 0.0,
        "centered": 0,
    }
    STATE = ("step", "square_avg", "momentum_buffer", "grad_avg")

    def update(self, p: Tensor, g: Tensor, state: dict[str, Tensor]) -> None:
        self._step_count(p, state)
        if "square_avg" not in state:
            state["square_avg"] = torch.zeros_like(p)
            state["momentum_buffer"] = torch.zeros_like(p)
            state["grad_avg"] = torch.zeros_like(p)
        if self.any["weight_decay"]:
            g = g.add(p * self.h("weight_decay", p))
        sq = state["square_avg"]
        sq.mul_(self.h("alpha", p)).add_(self.h("1-alpha", p) * g * g)
        if self.any["centered"]:
            ga = state["grad_avg"]
            ga.lerp_(g, self.h("1-alpha", p))
            avg = torch.where(self.h("centered", p) != 0, sq - ga * ga, sq).sqrt_()
        else:
            avg = sq.sqrt()
        avg = avg.add_(self.h("eps", p))
        if self.any["momentum"]:
            buf = state["momentum_buffer"]
            buf.mul_(self.h("momentum", p)).add_(g / avg)
            p.sub_(buf * self.h("lr", p))
        else:
            p.add_((-self.h("lr", p)) * g / avg)

    def model_state(self, j: int, i: int = 0) -> dict[str, Tensor]:
        out = super().model_state(j, i)
        if float(self.hyper["momentum"][j]) == 0:
            out.pop("momentum_buffer", None)
        if float(self.hyper["centered"][j]) == 0:
            out.pop("grad_avg", None)
        return out


class StackedAdam(StackedOptimizer):
    """Adam per model, as ``torch.optim.Adam`` (``betas`` given as ``beta1``, ``beta2``,
    each a number or (J,) values): see the module's docstring."""

    TORCH = torch.optim.Adam
    DEFAULTS = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0}
    STATE = ("step", "exp_avg", "exp_avg_sq")
    #: Weight decay decoupled from the gradient (AdamW).
    DECOUPLED = False

    def __init__(self, params: Iterable[Tensor], betas: Any = None, **hyper: Any) -> None:
        if betas is not None:  # torch's spelling: (β₁, β₂), each a number or (J,) values
            hyper["beta1"], hyper["beta2"] = betas
        super().__init__(params, **hyper)

    def update(self, p: Tensor, g: Tensor, state: dict[str, Tensor]) -> None:
        t = self._step_count(p, state)
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        h = self.hyper
        if self.any["weight_decay"]:
            if self.DECOUPLED:
                p.mul_(self.h("1-lr*weight_decay", p))
            else:
                g = g.add(p * self.h("weight_decay", p))
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m.lerp_(g, self.h("1-beta1", p))
        v.mul_(self.h("beta2", p)).add_(self.h("1-beta2", p) * g * g)
        # The bias corrections: Python floats in torch, float64 per model here, both at once.
        if "betas" not in self._cast_pairs:
            self._cast_pairs["betas"] = torch.stack((h["beta1"], h["beta2"]))
        bias = 1 - self._cast_pairs["betas"] ** t  # (2, J): 1 − β₁ᵗ, 1 − β₂ᵗ
        scalars = torch.stack((-h["lr"] / bias[0], bias[1].sqrt())).to(p.dtype)
        step_size, bias2_sqrt = scalars.view(2, -1, *([1] * (p.dim() - 1)))
        denom = (v.sqrt() / bias2_sqrt).add_(self.h("eps", p))
        p.add_(step_size * m / denom)


class StackedAdamW(StackedAdam):
    """AdamW per model, as ``torch.optim.AdamW``: ``W ← W (1 − ηλ)``, then Adam's step."""

    TORCH = torch.optim.AdamW
    DEFAULTS = {**StackedAdam.DEFAULTS, "weight_decay": 1e-2}
    DECOUPLED = True


#: The ``torch.optim`` classes with a stacked twin.
STACKED: dict[type[torch.optim.Optimizer], type[StackedOptimizer]] = {
    torch.optim.SGD: StackedSGD,
    torch.optim.RMSprop: StackedRMSprop,
    torch.optim.Adam: StackedAdam,
    torch.optim.AdamW: StackedAdamW,
}
