"""NumPy references shared by the diffusion-family tests (independent of prpo.diffusion)."""

import math

import numpy as np


def np_schedule(k, s=0.008):
    """DDPM constants from the formulas (independent of prpo.diffusion.Schedule)."""
    f = [math.cos(((i / k) + s) / (1 + s) * math.pi / 2) ** 2 for i in range(k + 1)]
    betas = np.array([min(1 - f[i + 1] / f[i], 0.999) for i in range(k)])
    ac = np.cumprod(1 - betas)
    acp = np.concatenate([[1.0], ac[:-1]])
    var = betas * (1 - acp) / (1 - ac)
    return dict(betas=betas, ac=ac, c0=betas * np.sqrt(acp) / (1 - ac), ct=(1 - acp) * np.sqrt(1 - betas) / (1 - ac),
                std=np.sqrt(np.maximum(var, 1e-20)))
