"""A2C (Mnih et al., 2016) as the PPO special case — settings only, no code of its own.

One epoch of one full-batch minibatch takes the single gradient step at r ≡ 1, where the clip is
inactive and the surrogate's gradient is A·∇log π; with λ = 1 (n-step returns), no advantage
normalisation, no value clipping and RMSprop that is textbook A2C (tests/test_a2c.py checks it
against a hand-written A2C update).

No entropy bonus (SB3's A2C default): with the PPO preset's c_e = 0.01, 4 of 32 CartPole seeds
ended below 475 (73, 287, 420, 460; measured with benchmarks/learning_spread.py on an H200),
with c_e = 0 all 32 reached 500.
"""

from __future__ import annotations

from prpo.algorithm import Algorithm, register

__all__ = ["A2C"]

A2C = register(Algorithm(
    name="a2c",
    description="A2C as the PPO special case: 1 epoch, 1 minibatch, λ=1, RMSprop, no normalisation",
    overrides=dict(
        objective="pg", update_epochs=1, num_minibatches=1, adv_norm="none", clip_value=False,
        optimizer="rmsprop", num_steps=5, gae_lambda=1.0, lr=7e-4, adam_eps=1e-5, rms_decay=0.99, ent_coef=0.0,
    ),
))
