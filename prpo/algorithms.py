"""Algorithm registry: each algorithm is a name bound to a composition of core pieces.

An :class:`Algorithm` names its surrogate (``Config.objective``), the action spaces it
supports and the checks it makes on a config before compilation. PPO is the first; SPO, BPO,
MDPO, A2C, PQN and the flow/diffusion families plug in here.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Callable

from prpo.config import Config, ConfigError

__all__ = ["Algorithm", "register", "get", "names"]


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """A named composition: option overrides applied on top of the env family's preset."""

    name: str
    description: str
    overrides: dict = dataclasses.field(default_factory=dict)  # static options and hyperparameters
    family_overrides: dict = dataclasses.field(default_factory=dict)  # preset kind -> extra overrides
    action_spaces: tuple[str, ...] = ("discrete", "continuous")
    extra_check: Callable[[Config], None] | None = None
    value_based: bool = False  # True: a Q-learning algorithm (QPolicy + TD loss in the shared loop)

    def config(self, env: str = "CartPole-v1", preset_name: str | None = None, **overrides) -> Config:
        """The config of this algorithm on ``env``: preset (default: the env family's), then the
        algorithm's own settings (unless the preset is the algorithm's own), then ``overrides``."""
        from prpo.config import PRESETS, apply_overrides, default_preset_name, preset

        name = preset_name or default_preset_name(self.name, env)
        cfg = preset(name)
        own = name.startswith(self.name + "-") and name in PRESETS
        kind = name.split("-", 1)[1] if "-" in name else name
        mine = {} if own else {**self.overrides, **self.family_overrides.get(kind, {})}
        cfg = apply_overrides(cfg, {**mine, "algo": self.name, "env": env, **overrides})
        self.check(cfg)
        return cfg

    def check(self, cfg: Config):
        """Validate ``cfg`` for this algorithm and its env (no compilation); return the env spec."""
        from prpo import envs
        from prpo.train import check_env

        spec = check_env(cfg)
        kind = "discrete" if isinstance(spec.action_space, envs.Discrete) else "continuous"
        if kind not in self.action_spaces:
            raise ConfigError(
                f"algorithm {self.name!r} supports {' and '.join(self.action_spaces)} action spaces only; "
                f"env {cfg.env!r} is {kind}"
            )
        if self.extra_check is not None:
            self.extra_check(cfg)
        return spec


_REGISTRY: dict[str, Algorithm] = {}


def register(algo: Algorithm) -> Algorithm:
    _REGISTRY[algo.name] = algo
    return algo


def get(name: str) -> Algorithm:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown algorithm {name!r}{hint}; available: {', '.join(names())}")
    return _REGISTRY[name]


def names() -> list[str]:
    return list(_REGISTRY)


register(
    Algorithm(
        name="ppo",
        description="PPO (clip / dual-clip / plain PG surrogate; GAE with truncation bootstrap)",
    )
)

#: A2C is PPO with 1 epoch, one full-batch minibatch (r ≡ 1, so the clip is inactive and the
#: gradient is A·∇log π), λ = 1, no advantage normalisation, no value clipping and RMSprop.
#: No entropy bonus (SB3's A2C default): with the PPO preset's c_e = 0.01, 4 of 32 CartPole seeds
#: ended below 475 (73, 287, 420, 460; H200), with c_e = 0 all 32 reached 500
#: (benchmarks/results/learning-spread-a2c-grid-h200.json).
register(
    Algorithm(
        name="a2c",
        description="A2C as the PPO special case: 1 epoch, 1 minibatch, λ=1, RMSprop, no normalisation",
        overrides=dict(
            objective="pg", update_epochs=1, num_minibatches=1, adv_norm="none", clip_value=False,
            optimizer="rmsprop", num_steps=5, gae_lambda=1.0, lr=7e-4, adam_eps=1e-5, rms_decay=0.99,
            ent_coef=0.0,
        ),
    )
)


#: SPO: PPO's pipeline with the clip replaced by the quadratic penalty |A|/(2ε)·(r − 1)², whose
#: optimum is exactly r* = 1 + sign(A)·ε (every sample keeps a restoring gradient).
register(
    Algorithm(
        name="spo",
        description="Simple Policy Optimization: quadratic ratio penalty instead of the clip (spo-brax: 7-layer policy)",
        overrides=dict(objective="spo"),
        # the paper's point: a deep (7-layer) policy, where PPO's ratio deviation grows
        family_overrides={
            kind: dict(actor_hidden=(256, 256, 128, 128, 64, 64), critic_hidden=(64, 64))
            for kind in ("brax", "classic-continuous")
        },
    )
)

#: On-policy MDPO: plain surrogate −r·A + KL(π_θ‖π_k)/t_k to the policy frozen at the start of
#: the iteration (the rollout policy), m full-batch steps per iteration, whole-batch advantage
#: normalisation. The value function trains jointly in the same steps (the reference code
#: trains it separately: 5 epochs × minibatch 128).
register(
    Algorithm(
        name="mdpo",
        description="Mirror-descent policy optimisation (on-policy): −r·A + KL(π‖π_k)/t_k, m full-batch steps",
        overrides=dict(objective="pg", kl_schedule="mdpo", adv_norm="batch", update_epochs=10, num_minibatches=1),
        # 10 full-batch steps per iteration take far fewer SGD steps than PPO's 4 × 4 minibatches
        family_overrides={"cartpole": dict(lr=1e-3)},
    )
)


#: BPO: fit π to the bounded target ratio ρ* with an advantage-weighted total-variation loss;
#: a median head u(s) (trained with g(x) = softplus(x) − x/2) sets ρ*'s centre. SB3 defaults:
#: no advantage normalisation, ε 0.3, λ 1e-3, c_v 0.5, c_u 0.5, no value clipping, grad clip 1.
register(
    Algorithm(
        name="bpo",
        description="Bounded Policy Optimization: |r − ρ*|·|R − V| with ρ* from a learned median head",
        overrides=dict(objective="bpo", adv_norm="none", clip_value=False),
        # no entropy bonus as in the reference; its MuJoCo gradient clip 1.0 on continuous control,
        # the PPO preset's 0.5 on CartPole (1.0 left one of 4 seeds at ≈ 300 there)
        family_overrides={
            "cartpole": dict(ent_coef=0.0),
            "minatar": dict(ent_coef=0.0),
            **{kind: dict(max_grad_norm=1.0, ent_coef=0.0) for kind in ("brax", "classic-continuous")},
        },
    )
)

#: PPO-EWMA (decoupled PPO, Hilton et al.): clip against a proximal policy that is an EWMA of
#: the parameters, importance-weight by π_θ/π_behaviour (capped at 100). Simplification: the
#: EWMA is taken once per update (the paper updates it after every optimizer step).
register(
    Algorithm(
        name="ppo_ewma",
        description="PPO-EWMA / decoupled PPO: clip to an EWMA proximal policy (batch-size invariance)",
        overrides=dict(objective="decoupled"),
    )
)


def _check_pqn(cfg: Config) -> None:
    if cfg.normalize_reward:
        raise ConfigError("normalize_reward=True is not used by pqn; scale rewards with reward_scale instead")


#: PQN: ε-greedy Q-learning with LayerNorm, Q(λ) targets from rollout-time Q values, RAdam and
#: no replay buffer or target network. Presets pqn-cartpole / pqn-minatar (purejaxql defaults).
register(
    Algorithm(
        name="pqn",
        description="PQN: parallelised Q(λ)-learning, LayerNorm Q-network, ε-greedy (discrete actions)",
        overrides=dict(optimizer="radam", activation="relu", actor_hidden=(256, 256), adam_eps=1e-8, max_grad_norm=10.0),
        action_spaces=("discrete",),
        extra_check=_check_pqn,
        value_based=True,
    )
)



#: FPO: a flow-matching policy whose ratio is exp(mean ℓ_old − mean ℓ_new) over n_mc stored
#: conditional-flow-matching (t, ε) pairs per action, PPO-clipped with a small ε (0.05).
#: Own presets: fpo-classic-continuous, fpo-brax (the reference's settings).
register(
    Algorithm(
        name="fpo",
        description="Flow Matching Policy Gradients: flow policy, ratio from CFM losses, PPO clip ε=0.05",
        overrides=dict(policy="flow", clip_eps=0.05, ent_coef=0.0, clip_value=False, activation="silu",
                       actor_hidden=(32, 32, 32, 32)),
        action_spaces=("continuous",),
    )
)

#: DPPO: a K-step diffusion policy; each of the last K′ denoising steps is a Gaussian PPO sample
#: with advantage γ_denoise^(K′−1−i)·A and a per-step clip ε_i rising to clip_eps.
register(
    Algorithm(
        name="dppo",
        description="Diffusion Policy Policy Optimization: per-denoising-step Gaussian ratios, fine-tune last K' steps",
        overrides=dict(policy="diffusion", clip_eps=0.1, dppo_clip_base=0.1, ent_coef=0.0, clip_value=False,
                       activation="silu"),
        action_spaces=("continuous",),
    )
)

#: PolicyFlow (no reference code): CNF + learned Gaussian noise, ratio of the terminal noise via
#: velocity differences along the interpolation path, PPO clip 0.2, Brownian regulariser.
register(
    Algorithm(
        name="policyflow",
        description="PolicyFlow: velocity-variation ratio + Brownian regulariser (formulas only; choices flagged)",
        overrides=dict(policy="policyflow", activation="silu"),
        action_spaces=("continuous",),
    )
)
