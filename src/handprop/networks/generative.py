"""The notes' encoding-decoding and adversarial networks, built from :class:`handprop.nn.MLP`.

* :class:`Autoencoder` — "autoencoders: dimensionality reduction, encoding-decoding": an
  encoder MLP squeezes each row into a code of a few units, a decoder MLP rebuilds the row
  from the code; trained to reproduce its input (``task=reconstruction``).
* :class:`GAN` — "GANs: image generation, adversarial model": a generator MLP turns noise
  into a sample, a discriminator MLP tells samples from real rows (a logit); trained against
  each other (:class:`handprop.trainer.gan.GANModule`).

Both run on the hand-written Functions: autograd through them, or the δ recursion of
:meth:`MLP.backprop` chained from one MLP into the next (:meth:`MLP.forward_kept`,
:meth:`MLP.backward_from`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from handprop.networks.mlp import MLP
from handprop.nn.layers import ACTIVATION_RULES, ACTIVATIONS

__all__ = ["Autoencoder", "GAN"]


def _sizes(net: MLP) -> str:
    return "-".join(map(str, [net.in_features, *net.hidden_features, net.out_features]))


class Autoencoder(nn.Module):
    r"""``x → encoder → c → decoder → x̂``: a code ``c`` of ``code_size`` units between an
    encoder MLP ``in_features → hidden_features… → code_size`` and a decoder MLP
    ``code_size → reversed(hidden_features)… → in_features``.

    The code and the reconstruction are linear outputs (no activation), so with no hidden
    layer the best an autoencoder can do is PCA's subspace; the hidden layers let it bend.

    Shapes: input (N, in_features) → output (N, in_features); :meth:`encode` → (N, code_size).
    Parameters: ``encoder.layers.*`` and ``decoder.layers.*``, as :class:`MLP`'s.

    Examples::

        >>> ae = Autoencoder(64, [32], 2)
        >>> ae.encode(torch.randn(5, 64)).shape, ae(torch.randn(5, 64)).shape
        (torch.Size([5, 2]), torch.Size([5, 64]))
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: Sequence[int],
        code_size: int = 2,
        activation: str = "relu",
        init: str = "auto",
    ) -> None:
        super().__init__()
        if int(code_size) != code_size or code_size <= 0:
            raise ValueError(f"code_size must be a positive integer, got {code_size}")
        hidden = list(hidden_features)
        self.in_features = self.out_features = in_features
        self.code_size = code_size
        # what describe() and the HParams read: every layer's width, input to output
        self.hidden_features = [*hidden, code_size, *hidden[::-1]]
        self.encoder = MLP(in_features, hidden, code_size, activation, init)
        self.decoder = MLP(code_size, hidden[::-1], in_features, activation, init)

    def encode(self, input: Tensor) -> Tensor:
        """The code ``c`` (N, code_size) of each row."""
        return self.encoder(input)

    def decode(self, code: Tensor) -> Tensor:
        """The row ``x̂`` (N, in_features) rebuilt from a code."""
        return self.decoder(code)

    def forward(self, input: Tensor) -> Tensor:
        return self.decoder(self.encoder(input))

    def backprop(
        self,
        input: Tensor,
        target: Tensor,
        cost: nn.Module,
        record: Callable[[str, int, Tensor], None] | None = None,
    ) -> Tensor:
        r"""One forward and backward pass by the δ recursion, as :meth:`MLP.backprop`, through
        both halves: the decoder's recursion ends in ``δ_c = ∂C/∂c`` (the code is the
        encoder's linear output, so that is the encoder's ``δ_L``), and the encoder's starts
        from it. Returns ``C``; every ``.grad`` is overwritten. ``record`` as
        :meth:`MLP.backprop`'s, the layers counted through the encoder, then the decoder."""
        shift = len(self.encoder.linears)
        on_decoder = None if record is None else (lambda kind, l, t: record(kind, l + shift, t))
        with torch.no_grad():
            enc = self.encoder.forward_kept(input)
            dec = self.decoder.forward_kept(enc[-1])
            C, delta = cost.value_and_delta(dec[-1], target)
            if record is not None:
                for l, a in enumerate(enc[2:-1:2]):  # the hidden layers' activations
                    record("activation", l, a)
                for l, a in enumerate(dec[2:-1:2]):
                    on_decoder("activation", l, a)
            delta_code = self.decoder.backward_from(dec, delta, input_delta=True, record=on_decoder)
            self.encoder.backward_from(enc, delta_code, record=record)
        return C


class GAN(nn.Module):
    r"""A generator ``G: ℝ^noise_size → ℝ^sample_features`` and a discriminator
    ``D: ℝ^sample_features → ℝ`` (a logit: ``σ(D(x))`` is its belief that ``x`` is real), both
    MLPs with ``hidden_features`` hidden units.

    ``forward(z)`` is ``G(z)``: samples from noise ``z ~ N(0, I)``. The generator's output
    layer is linear, or ``output`` (e.g. ``sigmoid`` for pixels scaled to [0, 1]) applied to it.

    Shapes: noise (N, noise_size) → samples (N, sample_features); :meth:`discriminate`:
    (N, sample_features) → (N, 1).
    Parameters: ``generator.layers.*`` and ``discriminator.layers.*``.
    """

    def __init__(
        self,
        sample_features: int,
        noise_size: int = 2,
        hidden_features: Sequence[int] = (64, 64),
        activation: str = "relu",
        init: str = "auto",
        output: str = "linear",
    ) -> None:
        super().__init__()
        if int(noise_size) != noise_size or noise_size <= 0:
            raise ValueError(f"noise_size must be a positive integer, got {noise_size}")
        if output != "linear" and output not in ACTIVATIONS:
            raise ValueError(f"output must be linear or one of {', '.join(ACTIVATIONS)}")
        self.sample_features, self.noise_size, self.output = sample_features, noise_size, output
        self.generator = MLP(noise_size, list(hidden_features), sample_features, activation, init)
        self.discriminator = MLP(sample_features, list(hidden_features), 1, activation, init)
        self.squash = ACTIVATIONS[output]() if output != "linear" else nn.Identity()

    def forward(self, noise: Tensor) -> Tensor:
        return self.squash(self.generator(noise))

    def output_rule(self) -> tuple[Any, Any] | None:
        """The output activation's ``σ(z)`` and ``σ'(z, a)`` for the δ recursion (None when
        the output is linear)."""
        return ACTIVATION_RULES[self.output] if self.output != "linear" else None

    def discriminate(self, samples: Tensor) -> Tensor:
        """``D(x)``: the logit that each row is real (N, 1)."""
        return self.discriminator(samples)

    def noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` noise vectors ``z ~ N(0, I)`` (n, noise_size) on the networks' device, drawn on
        ``generator``'s device (a CPU generator draws the same numbers whatever the networks'
        device)."""
        w = self.generator.linears[0].weight
        device = generator.device if generator is not None else w.device
        z = torch.randn(n, self.noise_size, generator=generator, device=device, dtype=w.dtype)
        return z.to(w.device)

    def describe(self) -> str:
        return (
            f"GAN: generator {_sizes(self.generator)}, discriminator {_sizes(self.discriminator)}"
        )
