"""Training augmentation inside jit, per example, from a key: random crop after zero padding and a
random horizontal flip (the standard CIFAR recipe)."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def crop_flip(rng, x, pad: int = 4):
    """x: [B, H, W, C] → same shape; each example shifted by up to `pad` pixels and maybe flipped."""
    b, h, w, _ = x.shape
    k_crop, k_flip = jax.random.split(rng)
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = jax.random.randint(k_crop, (b, 2), 0, 2 * pad + 1)
    flips = jax.random.bernoulli(k_flip, 0.5, (b,))

    def one(img, off, flip):
        out = jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))
        return jnp.where(flip, out[:, ::-1], out)

    return jax.vmap(one)(padded, offsets, flips)


AUGMENTATIONS = {"none": None, "crop_flip": crop_flip}
