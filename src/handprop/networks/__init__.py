"""The notes' networks, built from :mod:`handprop.nn`'s layers: the multi-layer perceptron
(:class:`MLP`, with the δ recursion written out; :class:`MLPStack`, many of them trained at
once), the convolutional (:class:`ConvNet`) and recurrent (:class:`RecurrentNet`) networks,
the :class:`Autoencoder` and the :class:`GAN`.

The library's direction: :mod:`handprop.functional` (equations) → :mod:`handprop.nn` (modules)
→ ``handprop.networks``. Nothing here imports the trainer (:mod:`handprop.trainer`).
"""

from handprop.networks.convolutional import POOLS, ConvNet, block_pools, conv_output_size
from handprop.networks.generative import GAN, Autoencoder
from handprop.networks.mlp import MLP
from handprop.networks.recurrent import CELLS, RecurrentNet
from handprop.networks.stack import MLPStack, to_stack, unstack

__all__ = [
    "MLP",
    "MLPStack",
    "to_stack",
    "unstack",
    "ConvNet",
    "RecurrentNet",
    "Autoencoder",
    "GAN",
    "POOLS",
    "CELLS",
    "block_pools",
    "conv_output_size",
]
