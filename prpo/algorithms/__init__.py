"""The algorithms: one module per family, each an :class:`~prpo.algorithm.Algorithm` registered here.

``prpo.algorithms.get("ppo").config("CartPole-v1")`` gives an algorithm's config for an env.
Each module owns everything of its algorithm — defaults (presets), its own options and
hyperparameters, checks, its surrogate or loss and its engine hooks:

=================  =======================================================================
``ppo``            PPO and its ratio surrogates (clip, dual clip, plain PG, PSPO, CE-GPPO,
                   TOPR, ratio variance) and the base presets ``ppo-<kind>``
``a2c``            A2C as the PPO special case
``spo``            Simple Policy Optimization (quadratic ratio penalty)
``mdpo``           on-policy mirror-descent policy optimisation
``bpo``            Bounded Policy Optimization (median head, target ratio)
``ppo_ewma``       PPO-EWMA / decoupled PPO (proximal EWMA parameters)
``pqn``            PQN, parallelised Q(λ)-learning
``fpo``            Flow Matching Policy Gradients (flow policy family)
``dppo``           Diffusion Policy Policy Optimization (diffusion policy family)
``policyflow``     PolicyFlow (velocity-variation ratio, Brownian regulariser)
``dispo``          DISPO, sign-decoupled clip ranges (four bounds)
``bapo``           BAPO, per-minibatch adaptive clip bounds balancing ± gradient shares
``sign_weighted``  ± sample reweighting (negative-sample reinforcement, asymmetric REINFORCE)
``dropout_ppo``    D-PPO, PPO-clip with sample dropout (surrogate variance)
``vcppo``          VC-PPO's decoupled GAE (separate λ for the value targets)
``r2vpo``          R²VPO, ratio-variance penalty with ν learned by dual ascent
``group``          critic-free group rollouts from cloned env states: ``rloo``, ``remax``,
                   ``grpo``, ``reinforce_pp`` (leave-one-out, greedy-rollout, group- and
                   batch-normalised baselines)
``stppo``          ST-PPO, segment-level ratios with a clipping-bias correction
``props``          PROPS, an adaptive behaviour policy correcting the sampling error
``pmoe``           PMOE, PPO with a Gaussian-mixture policy family (``policy="mixture"``)
``vineppo``        VinePPO, critic-free MC values from rollouts branched at visited states
=================  =======================================================================

A new algorithm is one file that builds an ``Algorithm`` and calls :func:`register` (from
anywhere: a test file, a notebook); ``docs/architecture.md`` walks through one.
"""

from __future__ import annotations

from prpo.algorithm import Algorithm, get, names, register

__all__ = ["Algorithm", "register", "get", "names"]

# the built-in algorithms, in the order `prpo list` shows them
from prpo.algorithms import ppo, a2c, spo, mdpo, bpo, ppo_ewma, pqn, fpo, dppo, policyflow  # noqa: E402,F401
from prpo.algorithms import dispo, bapo, sign_weighted, dropout_ppo, vcppo, r2vpo  # noqa: E402,F401
from prpo.algorithms import group, stppo, props, pmoe  # noqa: E402,F401
from prpo.algorithms import vineppo  # noqa: E402,F401
