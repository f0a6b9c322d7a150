"""PMOE, Probabilistic Mixture-of-Experts (Ren et al., 2021, arXiv 2104.09122): PPO with a
Gaussian-mixture policy.

The policy family ``"mixture"`` (:mod:`prpo.mixture`, registered here): K diagonal-Gaussian
primitives with a categorical gate, ``π(a|s) = Σ_k w_k(s) N(a; μ_k(s), σ_k²)``, trained by the
PPO clip on the exact mixture log-likelihood ``logsumexp_k [log w_k + log N_k(a)]``.

**The paper's estimator and why it is an option here.** The paper's problem is SAC: its
reparameterised action ``a = μ_k + σ_k ε`` is not differentiable in the discrete choice ``k``, so
the gate gets no gradient from ``Q(s, a)``. Its "frequency approximate gradient" trains the gate
(routing function) towards how often each primitive gives the best action: sample one action
per primitive, take the one-hot of ``argmax_k Q(s, a_k)`` as the target and regress the gate
weights on it, ``L_freq = mean_k (w_k − onehot_k)²``; the primitives themselves are trained
through back-propagation of the usual policy loss. For a likelihood-ratio method like PPO the
problem does not arise: the likelihood is exact and differentiable in the gate, its gradient
``∂ log π/∂g_k = γ_k − w_k`` (posterior responsibility minus prior) is the unbiased policy
gradient, so ``pmoe_gate="likelihood"`` (the default) is PPO on the mixture and nothing else.
The authors' PPO version keeps the likelihood ratio *and* adds the frequency loss with a learned
``Q(s, a)`` regressed on the value targets; that is ``pmoe_gate="frequency"`` (loss terms
``pmoe_freq_coef · L_freq + pmoe_q_coef · (Q(s, a) − R)²``, both 1.0 as in that code;
``L_freq`` also averages over the K components as there). ``"frequency_only"`` trains the gate
by the frequency loss alone (the gate is under stop-gradient inside the likelihood), the closest
to the paper's SAC setting. The frequency loss is a biased estimator (one sample per primitive,
a learned Q); it differs meaningfully from the likelihood gradient and is not implied by it.

Defaults: ``mixture_components = 4`` (UNVERIFIED: the paper studies the number of primitives;
its PPO code uses 5), per-component state-independent log-stds, near-uniform gates at init,
entropy ``mixture_entropy="mc"`` (stratified one-sample-per-component estimate; ``"bound"``:
``H(w) + Σ_k w_k H_k``) — with the PPO presets' ``ent_coef = 0`` it is only logged. The rest
are the PPO presets (``ppo-classic-continuous``, ``ppo-brax``), so ``ppo`` vs ``pmoe`` differs
only in the policy family; with K = 1 it is Gaussian PPO exactly (same parameters per key, same
losses). Continuous actions only; no analytic KL (``kl_schedule="none"``).

Claim to test (paper, Fig. 3/Table 1): on MuJoCo a PMOE policy learns faster (higher return
AUC) than the unimodal Gaussian with the same algorithm; on a task with two equally good optima
a mixture can keep both modes where a Gaussian must pick one (``experiments/multimodal.py``).
"""

from __future__ import annotations

import math

from prpo import mixture
from prpo.algorithm import Algorithm, action_dim, register
from prpo.config import ConfigError
from prpo.registry import hyperparameter, register_policy, static

__all__ = ["PMOE", "add_returns"]


def _positive_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _make_mixture(cfg, spec, network=None):
    gate = getattr(cfg, "pmoe_gate", "likelihood")  # the pmoe algorithm's option; plain likelihood elsewhere
    if network is None:
        network = mixture.make_mixture_actor_critic(
            cfg.mixture_components, action_dim(spec), obs_ndim=len(spec.obs_shape), actor_hidden=cfg.actor_hidden,
            critic_hidden=cfg.critic_hidden, activation=cfg.activation, shared_trunk=cfg.shared_trunk,
            log_std_init=cfg.log_std_init, mean_spread=cfg.mixture_mean_spread, q_head=gate != "likelihood",
        )
    return mixture.MixturePolicy(network, entropy=cfg.mixture_entropy, gate=gate)


def _check_mixture(cfg):
    if cfg.kl_schedule != "none":
        raise ConfigError(f"kl_schedule={cfg.kl_schedule!r} needs an analytic KL, which a Gaussian mixture has not; "
                          "policy='mixture' allows only kl_schedule='none'")
    if cfg.distribution not in ("auto", "gaussian"):
        raise ConfigError(f"policy='mixture' is a continuous-action family; distribution={cfg.distribution!r} "
                          "conflicts with it (allowed: 'auto', 'gaussian')")


register_policy(
    "mixture", _make_mixture, check=_check_mixture, doc="K-component Gaussian mixture with a categorical gate (PMOE)",
    options={
        "mixture_components": static(4, "mixture components (primitives) K (UNVERIFIED default)", type=int,
                                     check=_positive_int, allowed="a positive integer"),
        "mixture_entropy": static("mc", "entropy estimate: mc (one reparameterised sample per component, "
                                  "gate-weighted) or bound (H(w) + Σ w_k H_k)", choices=mixture.ENTROPIES),
        "mixture_mean_spread": static(0.0, "std of the component-mean bias init (0: zeros, the reference; "
                                      "> 0 breaks the components' symmetry, UNVERIFIED)", type=float,
                                      check=lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                                      and math.isfinite(v) and v >= 0, allowed="a finite number >= 0"),
    },
)


def add_returns(policy, algo_state, batch):
    """``prepare_batch``: the value targets into ``batch.aux["returns"]`` (the Q regression of the
    frequency loss); unchanged for ``pmoe_gate="likelihood"``."""
    if getattr(policy, "gate", "likelihood") == "likelihood":
        return batch
    return batch.replace(aux={**batch.aux, "returns": batch.returns})


_COEF = dict(check=lambda v: v >= 0, allowed=">= 0")

PMOE = register(Algorithm(
    name="pmoe",
    description="PMOE: PPO with a K-component Gaussian-mixture policy (exact likelihood; optional frequency loss)",
    overrides=dict(policy="mixture"),
    presets=("classic-continuous", "brax"),
    preset_docs={
        "classic-continuous": "PMOE on continuous gymnax control: the PPO Pendulum settings, K = 4 primitives",
        "brax": "PMOE on Brax: the PPO Brax settings, K = 4 primitives",
    },
    options={
        "pmoe_gate": static("likelihood", "gate training: likelihood (exact mixture likelihood), frequency (+ the "
                            "paper's frequency loss with a learned Q), frequency_only (gate by the frequency loss "
                            "alone)", choices=mixture.GATES),
        "pmoe_freq_coef": hyperparameter(1.0, "weight of PMOE's frequency loss (pmoe_gate=frequency*)", **_COEF),
        "pmoe_q_coef": hyperparameter(1.0, "weight of the Q(s, a) regression (pmoe_gate=frequency*)", **_COEF),
    },
    action_spaces=("continuous",),
    policies=("mixture",),
    prepare_batch=add_returns,
))
