"""The recurrent network's layers: the notes' "memory loops", with backpropagation through
time written out.

Each Function runs one layer in one direction over the whole sequence; its backward runs the
δ recursion backwards through time. The wrappers ``rnn_tanh``, ``rnn_relu`` and ``lstm``
stack them into layers and directions with the signatures of ``torch.rnn_tanh`` /
``torch.lstm`` (what ``torch.nn.RNN`` / ``torch.nn.LSTM`` call).

Notation: ``x_t`` (N, I) the input at step t, ``h_t`` (N, H) the hidden state (the layer's
memory and output), ``W_ih`` (G·H, I) and ``W_hh`` (G·H, H) the input and recurrent weights,
``b_ih``, ``b_hh`` (G·H,) their biases (G = 1 for the RNN, 4 gates for the LSTM); ``z_t`` the
pre-activation, ``δ_t = ∂C/∂z_t`` the error signal at step t, ``g_t = ∂C/∂h_t`` the gradient
arriving from outside (the layer above or the cost) at step t.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from handprop.functional.activations import ReLUFunction, SigmoidFunction, TanhFunction
from handprop.functional.base import HandFunction
from handprop.functional.dropout import dropout


def _steps(T: int, reverse: bool) -> range:
    """The time steps in the order the forward visits them."""
    return range(T - 1, -1, -1) if reverse else range(T)


def _previous_states(
    h0: Tensor, states: Tensor, reverse: bool, t0: int = 0, t1: int | None = None
) -> Tensor:
    """``h_{t−1}`` for t in ``[t0, t1)`` (all steps by default), (t1 − t0, N, H): the state
    before each step, which is the initial state ``h0`` for the first step (the next one in
    time, for a layer that reads the sequence backwards). A view where no ``h0`` is needed."""
    T = states.shape[0]
    t1 = T if t1 is None else t1
    if reverse:
        if t1 < T:
            return states[t0 + 1 : t1 + 1]
        return torch.cat([states[t0 + 1 :], h0.unsqueeze(0)])
    if t0 > 0:
        return states[t0 - 1 : t1 - 1]
    return torch.cat([h0.unsqueeze(0), states[: t1 - 1]])


#: Bytes of one block of time steps the backward prepares at once: small enough to stay in
#: the core's cache while the step-by-step recursion reads it, large enough that the few
#: operations per block cost little next to the recursion's own.
_BLOCK_BYTES = 1 << 20


def _blocks(T: int, step_bytes: int, reverse: bool) -> list[tuple[int, int]]:
    """The time steps ``[t0, t1)`` in blocks, in the order the backward visits them (the
    forward's order, reversed)."""
    size = max(1, min(T, _BLOCK_BYTES // max(step_bytes, 1)))
    starts = range(0, T, size)
    blocks = [(t0, min(t0 + size, T)) for t0 in starts]
    return blocks if reverse else blocks[::-1]


def _input_part(x: Tensor, w_ih: Tensor, b_ih: Tensor | None, b_hh: Tensor | None) -> Tensor:
    """``x_t W_ihᵀ + b_ih + b_hh`` for every step at once: one matrix product, (T, N, G·H)."""
    T, N, _ = x.shape
    flat = x.reshape(T * N, -1)
    if b_ih is None:
        z = flat.mm(w_ih.t())
    else:
        z = torch.addmm(b_ih + b_hh, flat, w_ih.t())
    return z.view(T, N, -1)


class _SumsOverTime:
    """The gradients that are sums over time (the weights are shared by every step),
    accumulated one block of steps at a time, while the block's δ is still in cache:
    ``∂C/∂W_ih = Σ_t δ_tᵀ x_t``, ``∂C/∂W_hh = Σ_t δ_tᵀ h_{t−1}``,
    ``∂C/∂b_ih = ∂C/∂b_hh = Σ_t Σ_n δ_t``, and ``∂C/∂x_t = δ_t W_ih``; each a matrix product
    over the block's rows."""

    def __init__(self, ctx: Any, x: Tensor, h0: Tensor, states: Tensor, w_ih: Tensor) -> None:
        offset = 1 if ctx.is_lstm else 0  # the LSTM has the cell state c_0 after h_0
        need = ctx.needs_input_grad
        self.need_x, self.need_w_ih, self.need_w_hh = need[0], need[2 + offset], need[3 + offset]
        self.need_b = ctx.has_bias and (need[4 + offset] or need[5 + offset])
        self.x, self.h0, self.states, self.w_ih, self.reverse = x, h0, states, w_ih, ctx.reverse
        self.grad_x: dict[int, Tensor] = {}
        self.grad_w_ih = self.grad_w_hh = self.grad_b = None

    def add(self, t0: int, t1: int, delta: Tensor) -> None:
        """Add the terms of steps ``[t0, t1)``; ``delta`` (t1 − t0, N, G·H)."""
        flat = delta.reshape(-1, delta.shape[-1])
        if self.need_x:
            self.grad_x[t0] = flat.mm(self.w_ih).view(*delta.shape[:2], -1)
        if self.need_w_ih:
            x = self.x[t0:t1].reshape(flat.shape[0], -1)
            self.grad_w_ih = _addmm(self.grad_w_ih, flat.t(), x)
        if self.need_w_hh:
            h_prev = _previous_states(self.h0, self.states, self.reverse, t0, t1)
            self.grad_w_hh = _addmm(self.grad_w_hh, flat.t(), h_prev.reshape(flat.shape[0], -1))
        if self.need_b:
            self.grad_b = _sum(self.grad_b, flat.sum(0))

    def result(self) -> tuple[Tensor | None, ...]:
        grad_x = torch.cat([self.grad_x[t] for t in sorted(self.grad_x)]) if self.need_x else None
        return grad_x, self.grad_w_ih, self.grad_w_hh, self.grad_b


def _back_through_w_hh(
    delta: Tensor, w_hh: Tensor, grad_output: Tensor | None, t: int, reverse: bool
) -> Tensor:
    """``∂C/∂h_{t−1} = g_{t−1} + δ_t W_hh``: the error sent back one step through the recurrent
    weights, plus the gradient arriving from outside at that step (one fused product)."""
    before = t + 1 if reverse else t - 1
    if grad_output is None or not 0 <= before < grad_output.shape[0]:
        return delta.mm(w_hh)
    return torch.addmm(grad_output[before], delta, w_hh)


def _addmm(total: Tensor | None, a: Tensor, b: Tensor) -> Tensor:
    """``total + a b`` (out of place), or ``a b`` for the first term."""
    return a.mm(b) if total is None else torch.addmm(total, a, b)


def _sum(*terms: Tensor | None) -> Tensor | None:
    """The sum of the terms that are there (a missing gradient or tangent is zero)."""
    total = None
    for t in terms:
        if t is not None:
            total = t if total is None else total + t
    return total


def _tangent_input_part(
    x: Tensor, h_prev: Tensor, w_ih: Tensor, tangents: tuple, like: Tensor
) -> Tensor:
    """The tangent of ``z_t`` except for the recurrent ``ḣ_{t−1} W_hhᵀ``, every step at once:
    ``ẋ_t W_ihᵀ + x_t Ẇ_ihᵀ + h_{t−1} Ẇ_hhᵀ + ḃ_ih + ḃ_hh`` (zeros shaped ``like`` if none)."""
    x_t, w_ih_t, w_hh_t, b_ih_t, b_hh_t = tangents
    total = _sum(
        x_t.matmul(w_ih.t()) if x_t is not None else None,
        x.matmul(w_ih_t.t()) if w_ih_t is not None else None,
        h_prev.matmul(w_hh_t.t()) if w_hh_t is not None else None,
        b_ih_t,
        b_hh_t,
    )
    return torch.zeros_like(like) if total is None else total.expand_as(like)


def _vmap_rule(
    fn: type[HandFunction], info: Any, in_dims: tuple, args: tuple, states: int
) -> tuple[tuple[Tensor, ...], tuple]:
    """vmap for the recurrent Functions (whose forward writes into its own fresh tensors).

    With shared weights, a vmapped batch is more sequences: ``B`` batches of ``N`` are one
    batch of ``B·N`` (the sequence ``(T, N, ·)`` as ``(T, B·N, ·)``, states ``(N, H)`` as
    ``(B·N, H)``), one call. Batched weights (several networks) run one call per network.
    ``args`` = input, ``states`` initial states, the weights and biases, then the flags."""
    B = info.batch_size
    n_tensors = 1 + states + 4
    if all(d is None for d in in_dims[1 + states : n_tensors]):

        def fold(t: Tensor, d: int | None, at: int) -> Tensor:  # B into the batch at ``at``
            t = (
                t.unsqueeze(at).expand(*t.shape[:at], B, *t.shape[at:])
                if d is None
                else (t.movedim(d, at))
            )
            return t.reshape(*t.shape[:at], -1, *t.shape[at + 2 :])

        x = fold(args[0], in_dims[0], 1)
        init = [
            fold(t, d, 0)
            for t, d in zip(args[1 : 1 + states], in_dims[1 : 1 + states], strict=True)
        ]
        out = fn.apply(x, *init, *args[1 + states :])
        # sequences (T, B·N, ·) → (T, B, N, ·), batched at 1; states (B·N, H) → (B, N, H), at 0
        unfold = [
            o.view(o.shape[0], B, -1, o.shape[-1]) if o.dim() == 3 else o.view(B, -1, o.shape[-1])
            for o in out
        ]
        return tuple(unfold), tuple(1 if o.dim() == 4 else 0 for o in unfold)
    per_network = []
    for k in range(B):
        per_network.append(
            fn.apply(
                *(
                    a.select(d, k) if d is not None else a
                    for a, d in zip(args, in_dims, strict=True)
                )
            )
        )
    return tuple(torch.stack(o) for o in zip(*per_network, strict=True)), (0,) * len(per_network[0])


# --------------------------------------------------------------------------------------------
# The Elman RNN
# --------------------------------------------------------------------------------------------
class RNNFunction(HandFunction):
    r"""One layer of the Elman RNN over a whole sequence:

    ``z_t = x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh``,  ``h_t = a(z_t)``, ``a = tanh`` or ReLU,

    for t = 1 … T (T … 1 with ``reverse``), from the initial state ``h_0``. Shapes: ``x``
    (T, N, I), ``h_0`` (N, H), ``W_ih`` (H, I), ``W_hh`` (H, H), biases (H,) or None; returns
    every state ``h`` (T, N, H) and the last one ``h_T`` (N, H).

    Backward (backpropagation through time). ``h_t`` reaches the cost directly (``g_t``, and
    ``∂C/∂h_T`` for the returned last state) and through ``z_{t+1}``, so from t = T down to 1:

    * ``∂C/∂h_t = g_t + δ_{t+1} W_hh``       (with ``δ_{T+1} W_hh`` replaced by ``∂C/∂h_T``)
    * ``δ_t = ∂C/∂h_t ⊙ a'(z_t)``            (``a' = 1 − h_t²`` for tanh, ``1[h_t > 0]`` ReLU)
    * ``∂C/∂h_0 = δ_1 W_hh``

    The weights are shared by every step, so their gradients are sums over time:
    ``∂C/∂W_ih = Σ_t δ_tᵀ x_t``, ``∂C/∂W_hh = Σ_t δ_tᵀ h_{t−1}``,
    ``∂C/∂b_ih = ∂C/∂b_hh = Σ_t Σ_n δ_t``, and ``∂C/∂x_t = δ_t W_ih``.

    Forward mode runs the same recursion forwards:
    ``ḣ_t = a'(z_t) ⊙ (ẋ_t W_ihᵀ + x_t Ẇ_ihᵀ + ḃ_ih + ḣ_{t−1} W_hhᵀ + h_{t−1} Ẇ_hhᵀ + ḃ_hh)``.
    """

    @staticmethod
    def forward(
        input: Tensor,
        hx: Tensor,
        weight_ih: Tensor,
        weight_hh: Tensor,
        bias_ih: Tensor | None,
        bias_hh: Tensor | None,
        relu: bool,
        reverse: bool,
    ) -> tuple[Tensor, Tensor]:
        # Each step is written in place into its slot of the output, which starts as the input
        # part x_t W_ihᵀ + b: no per-step temporaries and no final copy (the forward owns these
        # fresh tensors; the vmap rule below keeps batched tensors out of it).
        states = _input_part(input, weight_ih, bias_ih, bias_hh)
        w_hh_t = weight_hh.t().contiguous()  # a plain (not transposed) GEMM: ~40% faster
        h = hx
        for t in _steps(input.shape[0], reverse):
            z = states[t].addmm_(h, w_hh_t)  # z_t = x_t W_ihᵀ + b + h_{t−1} W_hhᵀ
            h = z.clamp_min_(0) if relu else z.tanh_()  # h_t = a(z_t)
        return states, h.clone()

    @staticmethod
    def vmap(info: Any, in_dims: tuple, *args: Any) -> tuple[tuple[Tensor, ...], tuple]:
        return _vmap_rule(RNNFunction, info, in_dims, args, states=1)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple[Tensor, Tensor]) -> None:
        input, hx, weight_ih, weight_hh, bias_ih, _, ctx.relu, ctx.reverse = inputs
        ctx.save_for_backward(input, hx, weight_ih, weight_hh, output[0])
        ctx.save_for_forward(input, hx, weight_ih, weight_hh, output[0])
        ctx.has_bias, ctx.is_lstm = bias_ih is not None, False
        ctx.set_materialize_grads(False)

    @staticmethod
    def derivative(h: Tensor, relu: bool) -> Tensor:
        """``a'(z)`` from the states ``h = a(z)``: the activation's own rule."""
        return ReLUFunction.derivative(h) if relu else TanhFunction.derivative(h)

    @staticmethod
    def backward(
        ctx: Any, grad_output: Tensor | None, grad_h_n: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        input, hx, weight_ih, weight_hh, states = ctx.saved_tensors
        if grad_output is None and grad_h_n is None:
            return (None,) * 8
        T = input.shape[0]
        sums = _SumsOverTime(ctx, input, hx, states, weight_ih)
        # ∂C/∂h_T arrives from outside, plus g_T; then δ_{t+1} W_hh + g_t from the loop
        grad_h = grad_h_n if grad_h_n is not None else torch.zeros_like(hx)
        if grad_output is not None:
            grad_h = grad_h + grad_output[0 if ctx.reverse else T - 1]
        for t0, t1 in _blocks(T, states[0].numel() * states.element_size(), ctx.reverse):
            deriv = RNNFunction.derivative(states[t0:t1], ctx.relu)  # a'(z_t), a block at once
            deltas: list[Tensor] = [None] * (t1 - t0)  # type: ignore[list-item]
            for t in range(t0, t1) if ctx.reverse else range(t1 - 1, t0 - 1, -1):
                delta = deltas[t - t0] = grad_h * deriv[t - t0]  # δ_t = ∂C/∂h_t ⊙ a'(z_t)
                # on to h_{t−1}: ∂C/∂h_{t−1} = g_{t−1} + δ_t W_hh
                grad_h = _back_through_w_hh(delta, weight_hh, grad_output, t, ctx.reverse)
            sums.add(t0, t1, torch.stack(deltas))
        grad_x, grad_w_ih, grad_w_hh, grad_b = sums.result()
        grad_hx = grad_h if ctx.needs_input_grad[1] else None  # ∂C/∂h_0 = δ_1 W_hh
        return grad_x, grad_hx, grad_w_ih, grad_w_hh, grad_b, grad_b, None, None

    @staticmethod
    def jvp(
        ctx: Any,
        input_t: Tensor | None,
        hx_t: Tensor | None,
        weight_ih_t: Tensor | None,
        weight_hh_t: Tensor | None,
        bias_ih_t: Tensor | None,
        bias_hh_t: Tensor | None,
        *_: Any,
    ) -> tuple[Tensor, Tensor]:
        input, hx, weight_ih, weight_hh, states = ctx.saved_tensors
        h_prev = _previous_states(hx, states, ctx.reverse)
        tangents = (input_t, weight_ih_t, weight_hh_t, bias_ih_t, bias_hh_t)
        z_in_t = _tangent_input_part(input, h_prev, weight_ih, tangents, states)
        deriv = RNNFunction.derivative(states, ctx.relu)
        h_t, out = hx_t, [None] * input.shape[0]
        for t in _steps(input.shape[0], ctx.reverse):
            z_t = z_in_t[t] if h_t is None else z_in_t[t] + h_t.mm(weight_hh.t())
            h_t = deriv[t] * z_t  # ḣ_t = a'(z_t) ⊙ ż_t
            out[t] = h_t
        return torch.stack(out), h_t


# --------------------------------------------------------------------------------------------
# The LSTM
# --------------------------------------------------------------------------------------------
class LSTMFunction(HandFunction):
    r"""One layer of the long short-term memory over a whole sequence. Its memory is the cell
    state ``c_t``, changed only by gated addition; four gates (torch's order) read ``x_t`` and
    ``h_{t−1}``:

    * ``[z_i, z_f, z_g, z_o] = x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh``
    * ``i = σ(z_i)`` input gate, ``f = σ(z_f)`` forget gate, ``g = tanh(z_g)`` the candidate,
      ``o = σ(z_o)`` output gate
    * ``c_t = f ⊙ c_{t−1} + i ⊙ g``
    * ``h_t = o ⊙ tanh(c_t)``

    Shapes: ``x`` (T, N, I), ``h_0``, ``c_0`` (N, H), ``W_ih`` (4H, I), ``W_hh`` (4H, H),
    biases (4H,) or None. Returns every ``h`` (T, N, H), ``h_T``, ``c_T`` (N, H), and, so that
    the backward uses only the Function's inputs and outputs (which double backward needs),
    every ``c`` (T, N, H) and the gates ``[i, f, g, o]`` (T, N, 4H).

    Backward through time, from t = T down to 1 (``g_t`` from outside as for the RNN;
    ``∂C/∂h_T``, ``∂C/∂c_T`` start the recursion in place of the terms from step T + 1):

    * ``∂C/∂h_t = g_t + δ_{t+1} W_hh``
    * ``∂C/∂c_t = ∂C/∂c_{t+1} ⊙ f_{t+1} + ∂C/∂h_t ⊙ o ⊙ tanh'(c_t)`` — the cell's path back
      in time is only multiplied by the forget gate, which is why the LSTM remembers longer
    * ``δ_i = ∂C/∂c_t ⊙ g ⊙ σ'(z_i)``, ``δ_f = ∂C/∂c_t ⊙ c_{t−1} ⊙ σ'(z_f)``,
      ``δ_g = ∂C/∂c_t ⊙ i ⊙ tanh'(z_g)``, ``δ_o = ∂C/∂h_t ⊙ tanh(c_t) ⊙ σ'(z_o)``;
      ``δ_t = [δ_i, δ_f, δ_g, δ_o]`` (N, 4H)
    * ``∂C/∂h_0 = δ_1 W_hh``, ``∂C/∂c_0 = ∂C/∂c_1 ⊙ f_1``

    and the weights' sums over time as for the RNN (``∂C/∂W_ih = Σ_t δ_tᵀ x_t``, …).

    Forward mode, the same recursion forwards: ``[i̇, ḟ, ġ, ȯ] = ż_t ⊙ a'(z_t)`` with ``ż_t`` as
    for the RNN, ``ċ_t = ḟ c_{t−1} + f ċ_{t−1} + i̇ g + i ġ``,
    ``ḣ_t = ȯ tanh(c_t) + o tanh'(c_t) ċ_t``.
    """

    @staticmethod
    def forward(
        input: Tensor,
        hx: Tensor,
        cx: Tensor,
        weight_ih: Tensor,
        weight_hh: Tensor,
        bias_ih: Tensor | None,
        bias_hh: Tensor | None,
        reverse: bool,
    ) -> tuple[Tensor, ...]:
        H = hx.shape[-1]
        # Written in place into the outputs, as in RNNFunction: the gates' slot starts as the
        # input part x_t W_ihᵀ + b and becomes z_t, then the gates.
        gates = _input_part(input, weight_ih, bias_ih, bias_hh)
        states = gates.new_empty(*gates.shape[:-1], H)
        cells = torch.empty_like(states)
        w_hh_t = weight_hh.t().contiguous()  # a plain (not transposed) GEMM: ~40% faster
        h, c = hx, cx
        for t in _steps(input.shape[0], reverse):
            a = gates[t].addmm_(h, w_hh_t)  # (N, 4H): [z_i, z_f, z_g, z_o]
            a[:, : 2 * H].sigmoid_()  # i, f = σ(z_i), σ(z_f)
            a[:, 2 * H : 3 * H].tanh_()  # g = tanh(z_g)
            a[:, 3 * H :].sigmoid_()  # o = σ(z_o)
            i, f, g, o = a.chunk(4, 1)
            c = torch.addcmul(f * c, i, g, out=cells[t])  # c_t = f ⊙ c_{t−1} + i ⊙ g
            h = torch.mul(o, TanhFunction.forward(c), out=states[t])  # h_t = o ⊙ tanh(c_t)
        return states, h.clone(), c.clone(), cells, gates

    @staticmethod
    def vmap(info: Any, in_dims: tuple, *args: Any) -> tuple[tuple[Tensor, ...], tuple]:
        return _vmap_rule(LSTMFunction, info, in_dims, args, states=2)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple[Tensor, ...]) -> None:
        input, hx, cx, weight_ih, weight_hh, bias_ih, _, ctx.reverse = inputs
        states, _, _, cells, gates = output
        ctx.save_for_backward(input, hx, cx, weight_ih, weight_hh, states, cells, gates)
        ctx.save_for_forward(input, hx, cx, weight_ih, weight_hh, states, cells, gates)
        ctx.has_bias, ctx.is_lstm = bias_ih is not None, True
        ctx.set_materialize_grads(False)

    @staticmethod
    def derivative(gates: Tensor) -> Tensor:
        """``a'(z)`` of every gate from its value: ``σ' = a(1 − a)`` for i, f, o and
        ``tanh' = 1 − g²`` for g, (…, 4H), each from its activation's rule."""
        H = gates.shape[-1] // 4
        sigmoid_prime = SigmoidFunction.derivative(gates)  # also over g: cheaper than 2 slices
        tanh_prime = TanhFunction.derivative(gates[..., 2 * H : 3 * H])
        return torch.cat([sigmoid_prime[..., : 2 * H], tanh_prime, sigmoid_prime[..., 3 * H :]], -1)

    @staticmethod
    def backward(
        ctx: Any,
        grad_output: Tensor | None,
        grad_h_n: Tensor | None,
        grad_c_n: Tensor | None,
        grad_cells: Tensor | None,
        grad_gates: Tensor | None,
    ) -> tuple[Tensor | None, ...]:
        input, hx, cx, weight_ih, weight_hh, states, cells, gates = ctx.saved_tensors
        if all(g is None for g in (grad_output, grad_h_n, grad_c_n, grad_cells, grad_gates)):
            return (None,) * 8
        T = input.shape[0]
        sums = _SumsOverTime(ctx, input, hx, states, weight_ih)
        grad_h = grad_h_n if grad_h_n is not None else torch.zeros_like(hx)
        if grad_output is not None:
            grad_h = grad_h + grad_output[0 if ctx.reverse else T - 1]
        grad_c = grad_c_n if grad_c_n is not None else torch.zeros_like(cx)
        # The factors that do not depend on the recursion are prepared for a block of steps at
        # a time (a block stays in cache; the whole sequence at once costs passes through
        # memory, step by step costs many small operations); then the recursion, step by step.
        for t0, t1 in _blocks(T, gates[0].numel() * gates.element_size(), ctx.reverse):
            a = gates[t0:t1]
            i, f, g, o = a.chunk(4, -1)
            tanh_c = TanhFunction.forward(cells[t0:t1])
            c_prev = _previous_states(cx, cells, ctx.reverse, t0, t1)
            # σ' over all four gates is one operation; its g part is not used
            sigmoid_i, sigmoid_f, _, sigmoid_o = SigmoidFunction.derivative(a).chunk(4, -1)
            # δ_t = [∂C/∂c_t, ∂C/∂c_t, ∂C/∂c_t, ∂C/∂h_t] ⊙ coeff_t
            coeff = torch.cat(
                [
                    g * sigmoid_i,
                    c_prev * sigmoid_f,
                    i * TanhFunction.derivative(g),
                    tanh_c * sigmoid_o,
                ],
                -1,
            )
            dh_dc = o * TanhFunction.derivative(tanh_c)  # ∂h_t/∂c_t = o ⊙ tanh'(c_t)
            if grad_gates is not None:
                deriv = LSTMFunction.derivative(a)
            deltas: list[Tensor] = [None] * (t1 - t0)  # type: ignore[list-item]
            for t in range(t0, t1) if ctx.reverse else range(t1 - 1, t0 - 1, -1):
                j = t - t0
                if grad_cells is not None:
                    grad_c = grad_c + grad_cells[t]
                # ∂C/∂c_t = ∂C/∂c_{t+1} ⊙ f_{t+1} + ∂C/∂h_t ⊙ o ⊙ tanh'(c_t)
                grad_c = torch.addcmul(grad_c, grad_h, dh_dc[j])
                delta = torch.cat([grad_c, grad_c, grad_c, grad_h], 1) * coeff[j]
                if grad_gates is not None:  # the gates were used outside too (double backward)
                    delta = delta + grad_gates[t] * deriv[j]
                deltas[j] = delta
                grad_c = grad_c * f[j]  # on to c_{t−1}: ∂C/∂c_t ⊙ f_t
                # on to h_{t−1}: ∂C/∂h_{t−1} = g_{t−1} + δ_t W_hh
                grad_h = _back_through_w_hh(delta, weight_hh, grad_output, t, ctx.reverse)
            sums.add(t0, t1, torch.stack(deltas))
        grad_x, grad_w_ih, grad_w_hh, grad_b = sums.result()
        need = ctx.needs_input_grad
        return (
            grad_x,
            grad_h if need[1] else None,  # ∂C/∂h_0 = δ_1 W_hh
            grad_c if need[2] else None,  # ∂C/∂c_0 = ∂C/∂c_1 ⊙ f_1
            grad_w_ih,
            grad_w_hh,
            grad_b,
            grad_b,
            None,
        )

    @staticmethod
    def jvp(
        ctx: Any,
        input_t: Tensor | None,
        hx_t: Tensor | None,
        cx_t: Tensor | None,
        weight_ih_t: Tensor | None,
        weight_hh_t: Tensor | None,
        bias_ih_t: Tensor | None,
        bias_hh_t: Tensor | None,
        _: Any,
    ) -> tuple[Tensor, ...]:
        input, hx, cx, weight_ih, weight_hh, states, cells, gates = ctx.saved_tensors
        T = input.shape[0]
        h_prev = _previous_states(hx, states, ctx.reverse)
        c_prev = _previous_states(cx, cells, ctx.reverse)
        tangents = (input_t, weight_ih_t, weight_hh_t, bias_ih_t, bias_hh_t)
        z_in_t = _tangent_input_part(input, h_prev, weight_ih, tangents, gates)
        deriv = LSTMFunction.derivative(gates)
        tanh_c = TanhFunction.forward(cells)
        dh_dc = gates.chunk(4, -1)[3] * TanhFunction.derivative(tanh_c)  # o ⊙ tanh'(c_t)
        h_t = hx_t if hx_t is not None else torch.zeros_like(hx)
        c_t = cx_t if cx_t is not None else torch.zeros_like(cx)
        out_h, out_c, out_a = [None] * T, [None] * T, [None] * T
        for t in _steps(T, ctx.reverse):
            a_t = (z_in_t[t] + h_t.mm(weight_hh.t())) * deriv[t]  # [i̇, ḟ, ġ, ȯ]
            i_t, f_t, g_t, o_t = a_t.chunk(4, 1)
            i, f, g, _ = gates[t].chunk(4, 1)
            c_t = f_t * c_prev[t] + f * c_t + i_t * g + i * g_t  # ċ_t
            h_t = o_t * tanh_c[t] + dh_dc[t] * c_t  # ḣ_t
            out_h[t], out_c[t], out_a[t] = h_t, c_t, a_t
        return torch.stack(out_h), h_t, c_t, torch.stack(out_c), torch.stack(out_a)


# --------------------------------------------------------------------------------------------
# Layers and directions, with torch's signatures
# --------------------------------------------------------------------------------------------
def _stacked(
    cell: str,
    input: Tensor,
    hx: Sequence[Tensor],
    params: Sequence[Tensor],
    has_biases: bool,
    num_layers: int,
    dropout_p: float,
    train: bool,
    bidirectional: bool,
    batch_first: bool,
) -> tuple[Tensor, ...]:
    """Layer ℓ + 1 reads layer ℓ's states (both directions side by side), with dropout
    between layers while training, as in torch."""
    if input.dim() != 3:
        raise ValueError(
            f"{cell}: input must be 3-D (seq, batch, features), got {input.dim()}-D; "
            "the modules also take unbatched 2-D input"
        )
    directions = 2 if bidirectional else 1
    per = 4 if has_biases else 2
    if len(params) != num_layers * directions * per:
        raise RuntimeError(
            f"{cell}: got an incorrect number of RNN parameters: expected "
            f"{num_layers * directions * per} weights for {num_layers} layers and {directions} "
            f"directions, got {len(params)}"
        )
    x = input.transpose(0, 1) if batch_first else input
    finals: list[list[Tensor]] = [[] for _ in hx]
    for layer in range(num_layers):
        outputs = []
        for direction in range(directions):
            k = layer * directions + direction
            w = params[k * per : (k + 1) * per]
            w_ih, w_hh = w[0], w[1]
            b_ih, b_hh = (w[2], w[3]) if has_biases else (None, None)
            reverse = direction == 1
            if cell == "lstm":
                out, h_n, c_n, _, _ = LSTMFunction.apply(
                    x, hx[0][k], hx[1][k], w_ih, w_hh, b_ih, b_hh, reverse
                )
                finals[0].append(h_n)
                finals[1].append(c_n)
            else:
                out, h_n = RNNFunction.apply(
                    x, hx[0][k], w_ih, w_hh, b_ih, b_hh, cell == "rnn_relu", reverse
                )
                finals[0].append(h_n)
            outputs.append(out)
        x = outputs[0] if directions == 1 else torch.cat(outputs, 2)
        if dropout_p > 0 and train and layer < num_layers - 1:
            x = dropout(x, dropout_p, True)
    output = x.transpose(0, 1) if batch_first else x
    return (output, *(torch.stack(f) for f in finals))


def rnn_tanh(
    input: Tensor,
    hx: Tensor,
    params: Sequence[Tensor],
    has_biases: bool,
    num_layers: int,
    dropout: float,
    train: bool,
    bidirectional: bool,
    batch_first: bool,
) -> tuple[Tensor, Tensor]:
    """Elman RNN with tanh, as ``torch.rnn_tanh`` (what ``torch.nn.RNN`` calls).

    Args:
        input: (T, N, I), or (N, T, I) with ``batch_first``.
        hx: the initial states, (num_layers·D, N, H); D = 2 if ``bidirectional`` else 1.
        params: per layer and direction ``W_ih, W_hh[, b_ih, b_hh]``, in ``nn.RNN``'s order.
        has_biases, num_layers, bidirectional, batch_first: as in ``nn.RNN``.
        dropout, train: dropout on each layer's output but the last, when ``train``.

    Returns:
        ``(output, h_n)``: every state of the last layer (T, N, D·H) (batch first with
        ``batch_first``) and every layer's final state (num_layers·D, N, H).
    """
    return _stacked(
        "rnn_tanh",
        input,
        (hx,),
        params,
        has_biases,
        num_layers,
        dropout,
        train,
        bidirectional,
        batch_first,
    )


def rnn_relu(
    input: Tensor,
    hx: Tensor,
    params: Sequence[Tensor],
    has_biases: bool,
    num_layers: int,
    dropout: float,
    train: bool,
    bidirectional: bool,
    batch_first: bool,
) -> tuple[Tensor, Tensor]:
    """Elman RNN with ReLU, as ``torch.rnn_relu``; arguments and results as :func:`rnn_tanh`."""
    return _stacked(
        "rnn_relu",
        input,
        (hx,),
        params,
        has_biases,
        num_layers,
        dropout,
        train,
        bidirectional,
        batch_first,
    )


def lstm(
    input: Tensor,
    hx: Sequence[Tensor],
    params: Sequence[Tensor],
    has_biases: bool,
    num_layers: int,
    dropout: float,
    train: bool,
    bidirectional: bool,
    batch_first: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """LSTM, as ``torch.lstm`` (what ``torch.nn.LSTM`` calls).

    Args:
        input: (T, N, I), or (N, T, I) with ``batch_first``.
        hx: ``(h_0, c_0)``, each (num_layers·D, N, H).
        params: per layer and direction ``W_ih (4H, ·), W_hh (4H, H)[, b_ih, b_hh]``.
        the rest: as :func:`rnn_tanh`.

    Returns:
        ``(output, h_n, c_n)``: every ``h`` of the last layer (T, N, D·H), and every layer's
        final ``h`` and ``c`` (num_layers·D, N, H).
    """
    if len(hx) != 2:
        raise RuntimeError(f"lstm expects two hidden states (h_0, c_0), got {len(hx)}")
    return _stacked(
        "lstm",
        input,
        tuple(hx),
        params,
        has_biases,
        num_layers,
        dropout,
        train,
        bidirectional,
        batch_first,
    )
