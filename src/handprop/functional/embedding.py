"""The embedding: a lookup table of learned vectors, one row per token (``embedding``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from handprop.functional.base import HandFunction


class EmbeddingFunction(HandFunction):
    r"""``y[…] = W[i[…]]``: each index picks its row of the table ``W`` (V, D).

    The same as a linear layer on one-hot inputs, ``y = onehot(i) W``, without building the
    one-hot matrix. Shapes: indices ``i`` (*) (int64 / int32), ``W`` (V, D) → ``y`` (*, D).

    Backward, with ``δ = ∂C/∂y`` (*, D): a row's gradient is the sum of the δ of every position
    that looked it up, ``∂C/∂W[v] = Σ_{p: i[p] = v} δ[p]`` (``onehot(i)ᵀ δ``, an index-add),
    except that

    * the row ``padding_idx`` gets no gradient (its positions' δ are dropped): padding tokens
      do not train their vector;
    * with ``scale_grad_by_freq`` each δ is divided by how often its index occurs in ``i``;
    * with ``sparse`` the gradient is a sparse (V, D) tensor holding only the rows looked up.

    The indices get no gradient. Forward mode: ``ẏ[…] = Ẇ[i[…]]``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        input: Tensor, weight: Tensor, padding_idx: int, scale_grad_by_freq: bool, sparse: bool
    ) -> Tensor:
        return weight.index_select(0, input.reshape(-1)).view(*input.shape, weight.shape[1])

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        input, weight, ctx.padding_idx, ctx.scale_grad_by_freq, ctx.sparse = inputs
        ctx.save_for_backward(input)
        ctx.save_for_forward(input)
        ctx.num_weights = weight.shape[0]

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        if not ctx.needs_input_grad[1]:
            return None, None, None, None, None
        (input,) = ctx.saved_tensors
        index = input.reshape(-1)
        delta = grad_output.reshape(index.shape[0], grad_output.shape[-1])  # δ, one row each
        if ctx.scale_grad_by_freq:  # δ[p] / (how often i[p] occurs)
            counts = torch.bincount(index, minlength=ctx.num_weights)
            delta = delta / counts[index].unsqueeze(1).to(delta.dtype)
        if ctx.sparse:
            if ctx.padding_idx >= 0:  # padding positions are left out of the sparse gradient
                keep = index != ctx.padding_idx
                index, delta = index[keep], delta[keep]
            return None, torch.sparse_coo_tensor(
                index.unsqueeze(0), delta, (ctx.num_weights, delta.shape[1]), check_invariants=False
            ), None, None, None  # fmt: skip
        if ctx.padding_idx >= 0:  # the padding row gets nothing
            delta = delta.masked_fill((index == ctx.padding_idx).unsqueeze(1), 0)
        # Σ of δ into each looked-up row; out of place (δ may be a vmap batch)
        grad_weight = delta.new_zeros(ctx.num_weights, delta.shape[1]).index_add(0, index, delta)
        return None, grad_weight, None, None, None

    @staticmethod
    def jvp(ctx: Any, input_t: Any, weight_t: Tensor, *_: Any) -> Tensor:
        (input,) = ctx.saved_tensors
        return EmbeddingFunction.forward(input, weight_t, -1, False, False)


def _padding_index(padding_idx: int | None, num_embeddings: int) -> int:
    """torch's normalisation of ``padding_idx`` (a negative one counts from the end; −1: none),
    with its AssertionError for one out of range."""
    if padding_idx is None:
        return -1
    if padding_idx > 0 and padding_idx >= num_embeddings:
        raise AssertionError("Padding_idx must be within num_embeddings")
    if padding_idx < 0:
        if padding_idx < -num_embeddings:
            raise AssertionError("Padding_idx must be within num_embeddings")
        padding_idx = num_embeddings + padding_idx
    return padding_idx


@torch.no_grad()
def _renorm_(weight: Tensor, input: Tensor, max_norm: float, norm_type: float) -> None:
    """torch's ``max_norm``: every row looked up whose ``norm_type``-norm exceeds ``max_norm``
    is scaled in place to ``max_norm / (norm + 1e-7)`` of itself (not a differentiable step)."""
    rows = torch.unique(input.reshape(-1))
    norms = torch.linalg.vector_norm(weight[rows], ord=norm_type, dim=1)
    scale = torch.where(norms > max_norm, max_norm / (norms + 1e-7), torch.ones_like(norms))
    weight[rows] = weight[rows] * scale.unsqueeze(1)


def embedding(
    input: Tensor,
    weight: Tensor,
    padding_idx: int | None = None,
    max_norm: float | None = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
) -> Tensor:
    """The rows of ``weight`` at ``input``, as ``torch.nn.functional.embedding``.

    Args:
        input: indices (*), int64 or int32, each in ``[0, V)``.
        weight: the table (V, D).
        padding_idx: this row gets no gradient (a negative one counts from the end).
        max_norm: rows looked up are first renormalised in place to at most this norm.
        norm_type: the p of that norm.
        scale_grad_by_freq: divide each gradient by its index's frequency in ``input``.
        sparse: give ``weight`` a sparse gradient.

    Shape: (*, D).
    """
    if weight.dim() != 2:
        raise RuntimeError(f"'weight' must be 2-D, got {weight.dim()}-D")
    if input.dtype not in (torch.long, torch.int):
        raise RuntimeError(
            "Expected tensor for argument #1 'indices' to have one of the following scalar "
            f"types: Long, Int; but got {input.type()} instead (while checking arguments for "
            "embedding)"
        )
    padding = _padding_index(padding_idx, weight.shape[0])
    if max_norm is not None:
        _renorm_(weight, input.contiguous(), max_norm, norm_type)
    return EmbeddingFunction.apply(input, weight, padding, bool(scale_grad_by_freq), bool(sparse))
