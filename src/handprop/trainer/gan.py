"""Training a GAN: the generator and the discriminator, each by its own optimizer, in turns.

:class:`GANModule` is a :class:`~handprop.trainer.model.HandpropModule` whose :meth:`~GANModule.update`
is the adversarial algorithm (Goodfellow et al., 2014, Algorithm 1, with the non-saturating
generator cost): everything else — the chunked training step, the update axis of every logged
scalar, checkpoints, resuming, progress — is the base module's.

One **update** is one generator step, preceded by ``d_steps`` discriminator steps: the
update's rows are split into ``d_steps`` batches of real rows (``gd.batch_size`` each), one
per discriminator step; the generator step draws as many noise vectors as one batch. So an
epoch shows every training row to the discriminator once, ``trainer.max_steps`` counts
generator steps, and ``train/g_loss`` / ``train/d_loss`` are logged at the generator step's
number.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor

from handprop.trainer.model import HandpropModule
from handprop.trainer.trained import EVAL_SAMPLES


class GANModule(HandpropModule):
    """A :class:`~handprop.networks.GAN` trained adversarially.

    Args:
        d_steps: discriminator steps per generator step (the notes' alternating updates;
            Goodfellow et al.'s ``k``).
        ema: when > 0, the run reports and samples from ``θ̄``, a running average of the
            generator's weights, ``θ̄ ← θ̄ + (1 − ema)(θ − θ̄)`` after every generator step
            (Yazıcı et al., 2019); the generator that trains is unchanged by it.
        **kwargs: :class:`HandpropModule`'s; ``network`` names a ``gan``, ``task`` is
            ``generation`` (its cost the binary cross-entropy Function).

    The discriminator step descends ``½ [BCE(D(x), 1) + BCE(D(G(z)), 0)]`` on a batch of
    real rows ``x`` and as many samples ``G(z)`` (held fixed: no gradient reaches ``G``). The
    generator step descends the **non-saturating** cost ``BCE(D(G(z)), 1) = −log σ(D(G(z)))``
    (``D`` held fixed: its weights and its optimizer are not touched), whose gradient
    ``∂C/∂D(G(z)) = σ(D(G(z))) − 1`` stays near −1 while the discriminator rejects the
    samples, where the minimax cost ``log(1 − σ(D(G(z))))`` would give ``−σ(D(G(z)))`` ≈ 0.
    """

    LOSS = "g_loss"
    LOGGED_COSTS = ("d_loss",)  # the discriminator's, beside the generator's (the base module's)

    def __init__(self, *args: Any, d_steps: int = 1, ema: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if int(d_steps) != d_steps or d_steps < 1:
            raise ValueError(f"d_steps must be a positive integer, got {d_steps}")
        if not 0 <= ema < 1:
            raise ValueError(f"ema must be in [0, 1), got {ema}")
        self.d_steps, self.ema = int(d_steps), float(ema)
        # The generator the run reports and samples from: the running average of the
        # trained generator's weights (Yazıcı et al., 2019), or the trained one (ema = 0).
        self.ema_generator = (
            copy.deepcopy(self.net.generator).requires_grad_(False) if self.ema else None
        )
        seed = int((self.hparams.get("config") or {}).get("seed", 0))
        # The training noise has its own generator, saved in every checkpoint, so a resumed
        # run draws the same noise as an uninterrupted one.
        self.noise_rng = torch.Generator().manual_seed(seed)
        eval_rng = torch.Generator().manual_seed(seed + 1)
        self.register_buffer("eval_noise", self.net.noise(EVAL_SAMPLES, eval_rng))
        self._targets: dict[int, tuple[Tensor, Tensor]] = {}  # by batch size

    # ---- sampling -------------------------------------------------------------------------------
    def draw_noise(self, n: int) -> Tensor:
        """``n`` training noise vectors from the module's own generator, on its device."""
        return self.net.noise(n, self.noise_rng).to(self.device)

    @torch.no_grad()
    def sample(self, z: Tensor) -> Tensor:
        """Samples (scaled) for noise ``z`` from the reported generator: the weights' running
        average when ``ema`` > 0, else the trained generator itself."""
        if self.ema_generator is None:
            return self.net(z)
        return self.net.squash(self.ema_generator(z))

    @torch.no_grad()
    def sample_raw(self, n: int, seed: int = 0) -> Tensor:
        """``n`` samples in the data's own units, from noise seeded by ``seed``."""
        z = self.net.noise(n, torch.Generator().manual_seed(seed)).to(self.device)
        return self.task.prediction(self.sample(z))

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor) -> dict[str, float]:
        """The GAN's metrics on one split's real rows ``x`` and the fixed evaluation sample
        (:meth:`handprop.trainer.task.Task.generation_metrics`)."""
        fake = self.sample(self.eval_noise)
        return self.task.generation_metrics(
            self.net.discriminate(x), self.net.discriminate(fake), x, fake
        )

    # ---- one update -----------------------------------------------------------------------------
    def update(self, x: Tensor, y: Tensor) -> Tensor:
        """``d_steps`` discriminator steps, each on its share of the real rows ``x`` and as
        many fresh samples, then one generator step on the last of those samples (as PyTorch's
        DCGAN example: the generator's forward pass serves both steps). Returns the
        generator's cost, detached (the discriminator's mean cost goes to ``train/d_loss``)."""
        opt_d, opt_g = self.optimizers()
        batch = -(-len(x) // self.d_steps)
        d_losses = []
        for real in x.split(batch):
            fake = self.generate(len(real))
            d_losses.append(self.discriminator_step(real, fake, opt_d))
        g_loss = self.generator_step(fake, opt_g)
        if self.ema_generator is not None:  # θ̄ ← θ̄ + (1 − ema)(θ − θ̄)
            with torch.no_grad():
                for avg, p in zip(
                    self.ema_generator.parameters(), self.net.generator.parameters(), strict=True
                ):
                    avg.lerp_(p, 1 - self.ema)
        if self.scheduler_interval == "step" and self.scheduler_fn is not None:
            for sched in self.lr_schedulers():
                sched.step()
        d_loss = d_losses[0] if len(d_losses) == 1 else torch.stack(d_losses).mean()
        self.chunk_costs["d_loss"].append(d_loss)
        self.updates += 1
        return g_loss

    def generate(self, n: int) -> tuple[list[Tensor] | None, Tensor]:
        """``G(z)`` for ``n`` fresh noise vectors, with what the generator's backward pass
        needs: the list of :meth:`MLP.forward_kept` (the δ recursion) and the samples, or
        ``None`` and the samples with their autograd graph."""
        z = self.draw_noise(n)
        if not self.by_recursion:
            return None, self.net(z)
        with torch.no_grad():
            kept = self.net.generator.forward_kept(z)
            rule = self.net.output_rule()
            return kept, kept[-1] if rule is None else rule[0](kept[-1])

    def _targets_for(self, n: int) -> tuple[Tensor, Tensor]:
        """``[1]*n + [0]*n`` (the discriminator's targets) and ``[1]*n`` (the generator's)."""
        if n not in self._targets:
            ones = torch.ones(n, 1, device=self.device)
            self._targets[n] = (torch.cat([ones, torch.zeros_like(ones)]), ones)
        return self._targets[n]

    def discriminator_step(self, real: Tensor, fake: tuple, opt: Any) -> Tensor:
        """One step of the discriminator on ``real`` rows and the samples ``fake`` (from
        :meth:`generate`, held fixed): ``½ [BCE(D(x), 1) + BCE(D(G(z)), 0)]``, as one batch."""
        d, cost = self.net.discriminator, self.task.cost
        rows = torch.cat([real, fake[1].detach()])
        targets = self._targets_for(len(real))[0]
        return self.gradients.step(
            self,
            opt,
            d,
            recursion=lambda: d.backprop(rows, targets, cost),  # the discriminator's .grad only
            cost=lambda: cost(d(rows), targets),
        )

    def generator_step(self, fake: tuple, opt: Any) -> Tensor:
        """One step of the generator on the samples ``fake`` (from :meth:`generate`): the
        non-saturating cost ``BCE(D(G(z)), 1)``, its δ passed back through the discriminator,
        whose weights and gradients stay as they are, into the generator."""
        g, d, cost = self.net.generator, self.net.discriminator, self.task.cost
        kept_g, samples = fake
        ones = self._targets_for(len(samples))[1]

        def recursion() -> Tensor:
            with torch.no_grad():
                kept_d = d.forward_kept(samples)
                loss, delta = cost.value_and_delta(kept_d[-1], ones)
                # ∂C/∂G(z): δ through D to its input, D's own .grad untouched
                delta = d.backward_from(kept_d, delta, grads=False, input_delta=True)
                rule = self.net.output_rule()
                if rule is not None:  # through the output activation: δ ⊙ σ'(z_L)
                    delta = delta * rule[1](kept_g[-1], samples)
                g.backward_from(kept_g, delta)
            return loss

        # By autograd, D's gradients from this backward are never used: its next step zeroes
        # them first.
        return self.gradients.step(
            self, opt, g, recursion=recursion, cost=lambda: cost(d(samples), ones)
        )

    # ---- Lightning's hooks ----------------------------------------------------------------------
    def has_recursion(self) -> bool:
        """Both networks are MLPs: each step chains their δ recursions."""
        return True

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["noise_rng_state"] = self.noise_rng.get_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if "noise_rng_state" in checkpoint:
            self.noise_rng.set_state(checkpoint["noise_rng_state"])

    # ---- optimisation ----------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        """Two optimizers of the configured kind, the discriminator's first; each gets the
        configured schedule."""
        if self.optimizer_fn is None:
            raise RuntimeError("GANModule was built without an optimizer")
        opts = [
            self.make_optimizer(list(net.parameters()))
            for net in (self.net.discriminator, self.net.generator)
        ]
        if self.scheduler_fn is None:
            return opts
        scheds = [
            {"scheduler": self.scheduler_fn(o), "interval": self.scheduler_interval} for o in opts
        ]
        return opts, scheds
