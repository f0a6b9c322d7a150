"""prpo: functional, jit-compiled policy optimisation in JAX.

The public API re-exported here is what users compose; each layer is its own module:
``distributions``, ``advantages``, ``objectives``, ``regularizers``, ``networks``,
``policies`` (and the families ``flow``, ``diffusion``, ``qlearning``), ``envs``, ``normalization``,
the engine ``rollout``, ``update``, ``train`` with its algorithm protocol ``algorithm``, the
algorithms ``algorithms`` (one module each), the open ``registry``, ``parallel`` and the driver
``experiment``. See docs/architecture.md for the layers and how to add an algorithm or an env.

``prpo.toy_envs`` (the multimodal bandit) is imported on use: importing it imports gymnax, which
starts JAX's backend, and ``import prpo`` must not, so that ``prpo.initialize_distributed`` can
run first.
"""

from prpo import (
    advantages,
    algorithm,
    algorithms,
    checkpoint,
    diffusion,
    distributions,
    envs,
    evaluation,
    flow,
    networks,
    normalization,
    objectives,
    parallel,
    policies,
    regularizers,
    registry,
    rollout,
    update,
)
from prpo.advantages import gae, lambda_returns, normalize
from prpo.config import PRESETS, Config, ConfigError, Hyperparams, apply_overrides, preset
from prpo.distributions import Categorical, DiagGaussian, TanhGaussian
from prpo.diffusion import DiffusionPolicy
from prpo.envs import make_env
from prpo.flow import FlowPolicy, PolicyFlowPolicy
from prpo.evaluation import load
from prpo.experiment import ExperimentResult, RunInterrupted, grid_hyperparams, run_experiment
from prpo.parallel import initialize_distributed, make_mesh, make_sharded_train
from prpo.objectives import bpo, ce_gppo, dual_clip, policy_gradient, ppo_clip, pspo, ratio_diagnostics, spo, topr
from prpo.policies import CategoricalPolicy, GaussianPolicy
from prpo.regularizers import clipped_value_loss, entropy_loss, value_loss
from prpo.algorithm import Algorithm
from prpo.train import NonFiniteLossError, TrainState, Trainer, evaluate, make_policy, make_train

__version__ = "0.1.0"  # the one version source: pyproject.toml reads it without importing prpo

__all__ = [
    "Categorical",
    "CategoricalPolicy",
    "Config",
    "ConfigError",
    "DiagGaussian",
    "DiffusionPolicy",
    "FlowPolicy",
    "PolicyFlowPolicy",
    "diffusion",
    "flow",
    "ExperimentResult",
    "RunInterrupted",
    "checkpoint",
    "evaluation",
    "load",
    "GaussianPolicy",
    "Hyperparams",
    "NonFiniteLossError",
    "PRESETS",
    "TanhGaussian",
    "TrainState",
    "Trainer",
    "Algorithm",
    "advantages",
    "algorithm",
    "algorithms",
    "apply_overrides",
    "clipped_value_loss",
    "distributions",
    "dual_clip",
    "bpo",
    "ce_gppo",
    "pspo",
    "spo",
    "topr",
    "entropy_loss",
    "envs",
    "evaluate",
    "gae",
    "grid_hyperparams",
    "lambda_returns",
    "make_env",
    "make_policy",
    "make_mesh",
    "make_sharded_train",
    "initialize_distributed",
    "parallel",
    "make_train",
    "networks",
    "normalization",
    "normalize",
    "objectives",
    "policies",
    "policy_gradient",
    "ppo_clip",
    "preset",
    "ratio_diagnostics",
    "registry",
    "regularizers",
    "rollout",
    "run_experiment",
    "update",
    "value_loss",
]
