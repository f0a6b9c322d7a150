"""Render one episode of a trained policy to frames, and frames to a video file.

::

    frames, ret = episode_frames(trainer, state, key)    # uint8 [T, H, W, 3], the episode's return
    write_video(frames, "cartpole.gif", fps=30)          # or .mp4

``episode_frames`` plays one episode with one env (``trainer.env.with_num_envs(1)``), acting as
:func:`prpo.train.evaluate` does (the mode action, or a sample with ``deterministic=False``;
observation normalisation frozen at ``state.obs_rms``; actions clipped to a Box's bounds), with
the same keys as ``prpo.evaluate(trainer, state, key, num_episodes=1)``, so its return is that
evaluation's return. The rollout is one jit-compiled ``lax.scan`` over ``spec.max_episode_steps``
steps that records what the renderer needs of every step's state; the host then draws the steps
up to and including the first done.

**Frames.** One frame per env step: frame ``t`` shows the state reached by step ``t + 1`` (for
the last frame, the terminal or time-limit state, before any reset). The initial (reset) state is
not drawn, so ``len(frames)`` is the episode length (``TimeStep.episode_length`` of its done step).

**Renderers** (:func:`renderer_for`):

* gymnax classic control (``CartPole-v1``, ``Pendulum-v1``, ``Acrobot-v1``, ``MountainCar-v0``,
  ``MountainCarContinuous-v0``): a small matplotlib drawing of the gymnax env state (gymnax's own
  visualiser needs gym), on an off-screen Agg canvas, one figure per episode whose artists are
  moved frame by frame.
* brax (``ant``, ``hopper``, ...): the MuJoCo renderer, as ``brax.io.image.render_array`` uses it
  (``qpos``/``qvel`` → ``mj_forward`` → render), from the model's ``track`` camera where it has
  one (the locomotion envs), else MuJoCo's free camera (brax's default).
* MuJoCo Playground (``playground/<Name>``): the env's own ``env.render(trajectory, height, width)``.

The MuJoCo renderers need an OpenGL context without a screen: ``MUJOCO_GL=egl`` (a GPU, or Mesa's
software EGL) or ``osmesa`` (Mesa's off-screen software renderer, ``libOSMesa``). A ``MUJOCO_GL``
the user set is used as it is; otherwise prpo tries ``egl`` then ``osmesa`` when JAX has a GPU,
``osmesa`` then ``egl`` when not (each in a short subprocess, as a failed attempt cannot be undone
in this one), sets ``MUJOCO_GL`` to the first that works, and (when mujoco was imported before,
e.g. by brax, with another backend) reloads mujoco's GL-context module so that it takes effect.
When none works, a one-line :class:`~prpo.registry.ConfigError` says what was tried and what to
install.

matplotlib, imageio (and imageio-ffmpeg for .mp4) and mujoco are optional and imported only when
used: ``import prpo.render`` imports none of them.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes.util
import dataclasses
import functools
import importlib
import importlib.util
import os
import pathlib
import subprocess
import sys
import tempfile
import types
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from prpo import envs as envs_lib
from prpo.registry import ConfigError
from prpo.train import _action_transform, _obs_transform

__all__ = ["episode_frames", "write_video", "check_video_path", "renderer_for", "Renderer", "VIDEO_SUFFIXES",
           "CLASSIC_CONTROL"]

#: video file suffixes :func:`write_video` writes, and the packages each needs
VIDEO_SUFFIXES = {".gif": ("imageio", "pillow"), ".mp4": ("imageio", "imageio-ffmpeg")}
#: gymnax env names with a matplotlib renderer, by their gymnax class name
CLASSIC_CONTROL = {
    "CartPole": "CartPole-v1",
    "Pendulum": "Pendulum-v1",
    "Acrobot": "Acrobot-v1",
    "MountainCar": "MountainCar-v0",
    "ContinuousMountainCar": "MountainCarContinuous-v0",
}
GL_BACKENDS = ("egl", "osmesa")
_GL_INSTALL = ("install one: apt-get install libegl1 libegl-mesa0 (egl: a GPU driver's EGL, or Mesa's software EGL "
               "without a GPU) or apt-get install libosmesa6 (osmesa)")


def _renderable() -> str:
    gym = ", ".join(CLASSIC_CONTROL.values())
    return (f"renderable envs: gymnax {gym}; every brax env ({', '.join(envs_lib.BRAX_ENV_NAMES)}); "
            "MuJoCo Playground envs (playground/<Name>)")


# --------------------------------------------------------------------------- renderers


@dataclasses.dataclass(frozen=True, eq=False)
class Renderer:
    """How one env is drawn. ``record(env_state)`` (traced, inside the rollout) picks what drawing
    needs from one env's backend state (:attr:`VecEnvState.env_state` of one env, not batched);
    calling the renderer, ``renderer(records, width, height)``, draws records stacked on a leading
    ``[T]`` axis (numpy or JAX arrays) into uint8 frames ``[T, height, width, 3]`` on the host."""

    name: str
    record: Callable[[Any], Any]
    draw: Callable[[Any, int, int], np.ndarray]

    def __call__(self, records, width: int = 320, height: int = 240) -> np.ndarray:
        width, height = _size("width", width), _size("height", height)
        records = jax.tree.map(np.asarray, records)
        frames = np.asarray(self.draw(records, width, height))
        if frames.dtype != np.uint8 or frames.shape[1:] != (height, width, 3):  # pragma: no cover - renderer bug
            raise RuntimeError(f"renderer {self.name} drew {frames.dtype} {frames.shape}, "
                               f"not uint8 [T, {height}, {width}, 3]")
        return frames


def _size(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a positive int (pixels), got {value!r}")
    return int(value)


def renderer_for(env) -> Renderer:
    """The :class:`Renderer` of ``env`` (a prpo VecEnv, e.g. ``trainer.env``, or an env name);
    :class:`~prpo.registry.ConfigError` naming the renderable envs for one without a renderer, or
    (MuJoCo renderers) when no OpenGL backend works here."""
    if isinstance(env, str):
        try:
            env = envs_lib.make_env(env, 1)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if isinstance(env, envs_lib.PlaygroundVecEnv):  # (a BraxVecEnv subclass: first)
        _ensure_gl()
        return _playground_renderer(env._env)
    if isinstance(env, envs_lib.BraxVecEnv):
        sys_ = getattr(env._env, "sys", None)
        if getattr(sys_, "mj_model", None) is None:
            raise ConfigError(f"brax env {env.name!r} has no MuJoCo model (env.sys.mj_model) to render; "
                              f"{_renderable()}")
        _ensure_gl()
        return _brax_renderer(env.name, sys_.mj_model)
    if isinstance(env, envs_lib.GymnaxVecEnv):
        kind = _classic_kind(env._env)
        if kind is not None:
            return _classic_renderer(kind, env._params)
        raise ConfigError(f"gymnax env {env.name!r} has no renderer; {_renderable()}")
    raise ConfigError(f"env {envs_lib._short_repr(env)} has no renderer (not a prpo gymnax, brax or Playground env); "
                      f"{_renderable()}")


def _classic_kind(genv) -> str | None:
    """The classic-control class name ``genv`` is an instance of (subclasses count), else None."""
    from gymnax.environments import classic_control as cc

    for name in CLASSIC_CONTROL:  # ContinuousMountainCar is no MountainCar subclass; order is safe
        if isinstance(genv, getattr(cc, name)):
            return name
    return None


# ---- gymnax classic control: matplotlib on an Agg canvas


class _Canvas:
    """One off-screen matplotlib figure of ``width`` × ``height`` pixels whose axes fill it, with
    equal x/y scale and at least the world box ``xlim`` × ``ylim`` in view."""

    DPI = 100

    def __init__(self, width: int, height: int, xlim, ylim):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.width, self.height = width, height
        self.fig = Figure(figsize=(width / self.DPI, height / self.DPI), dpi=self.DPI, facecolor="white")
        self.canvas = FigureCanvasAgg(self.fig)
        self.ax = self.fig.add_axes((0.0, 0.0, 1.0, 1.0))
        self.ax.set_axis_off()
        (x0, x1), (y0, y1) = xlim, ylim
        per_px = max((x1 - x0) / width, (y1 - y0) / height)  # world units per pixel, the same on both axes
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        self.ax.set_xlim(cx - per_px * width / 2, cx + per_px * width / 2)
        self.ax.set_ylim(cy - per_px * height / 2, cy + per_px * height / 2)
        self.per_px = per_px

    def points(self, world: float) -> float:
        """A length in world units as matplotlib points (for line widths)."""
        return max(world / self.per_px, 1.0) * 72.0 / self.DPI

    def grab(self, out: np.ndarray) -> None:
        self.canvas.draw()
        rgba = np.asarray(self.canvas.buffer_rgba())
        h, w = min(rgba.shape[0], self.height), min(rgba.shape[1], self.width)  # float figure sizes: ±1 px
        out[...] = 255
        out[:h, :w] = rgba[:h, :w, :3]


def _field(states, name: str) -> np.ndarray:
    return np.asarray(getattr(states, name), np.float64).reshape(-1)


def _draw_cartpole(states, params, width, height):
    from matplotlib.patches import Rectangle

    xt = float(getattr(params, "x_threshold", 2.4))
    pole = 2.0 * float(getattr(params, "length", 0.5))
    cart_w, cart_h = 0.5, 0.3
    c = _Canvas(width, height, (-1.2 * xt, 1.2 * xt), (-0.4, cart_h / 2 + pole + 0.15))
    ax = c.ax
    ax.plot([-1.2 * xt, 1.2 * xt], [0, 0], color="black", lw=c.points(0.02), zorder=1)
    for s in (-xt, xt):  # the termination bounds
        ax.plot([s, s], [-0.1, 0.1], color="0.6", lw=c.points(0.02), zorder=1)
    cart = ax.add_patch(Rectangle((0, 0), cart_w, cart_h, color="0.15", zorder=2))
    (rod,) = ax.plot([], [], color=(0.79, 0.6, 0.4), lw=c.points(0.1), solid_capstyle="round", zorder=3)
    (axle,) = ax.plot([], [], "o", color=(0.5, 0.52, 0.8), ms=c.points(0.1), zorder=4)
    x, theta = _field(states, "x"), _field(states, "theta")
    out = np.empty((len(x), height, width, 3), np.uint8)
    for t in range(len(x)):
        cart.set_xy((x[t] - cart_w / 2, -cart_h / 2))
        top = cart_h / 2
        rod.set_data([x[t], x[t] + pole * np.sin(theta[t])], [top, top + pole * np.cos(theta[t])])
        axle.set_data([x[t]], [top])
        c.grab(out[t])
    return out


def _draw_pendulum(states, params, width, height):
    length = float(getattr(params, "l", 1.0))
    r = 1.25 * length
    c = _Canvas(width, height, (-r, r), (-r, r))
    (rod,) = c.ax.plot([], [], color=(0.8, 0.3, 0.3), lw=c.points(0.2 * length), solid_capstyle="round", zorder=2)
    c.ax.plot([0], [0], "o", color="black", ms=c.points(0.08 * length), zorder=3)
    theta = _field(states, "theta")  # 0 = upright, counter-clockwise positive (gym's drawing)
    out = np.empty((len(theta), height, width, 3), np.uint8)
    for t in range(len(theta)):
        rod.set_data([0, -length * np.sin(theta[t])], [0, length * np.cos(theta[t])])
        c.grab(out[t])
    return out


def _draw_acrobot(states, params, width, height):
    l1 = float(getattr(params, "link_length_1", 1.0))
    l2 = float(getattr(params, "link_length_2", 1.0))
    r = 1.1 * (l1 + l2)
    c = _Canvas(width, height, (-r, r), (-r, r))
    c.ax.axhline(1.0, color="0.5", ls="--", lw=c.points(0.02), zorder=1)  # the goal height
    (links,) = c.ax.plot([], [], color=(0, 0.4, 0.4), lw=c.points(0.12), solid_capstyle="round", zorder=2)
    (joints,) = c.ax.plot([], [], "o", color=(0.8, 0.8, 0), ms=c.points(0.1), zorder=3)
    a1, a2 = _field(states, "joint_angle1"), _field(states, "joint_angle2")
    out = np.empty((len(a1), height, width, 3), np.uint8)
    for t in range(len(a1)):  # angle 0 hangs down (gym's drawing)
        p1 = (l1 * np.sin(a1[t]), -l1 * np.cos(a1[t]))
        p2 = (p1[0] + l2 * np.sin(a1[t] + a2[t]), p1[1] - l2 * np.cos(a1[t] + a2[t]))
        links.set_data([0, p1[0], p2[0]], [0, p1[1], p2[1]])
        joints.set_data([0, p1[0]], [0, p1[1]])
        c.grab(out[t])
    return out


def _draw_mountain_car(states, params, width, height):
    from matplotlib.patches import Rectangle

    lo, hi = float(getattr(params, "min_position", -1.2)), float(getattr(params, "max_position", 0.6))
    goal = float(getattr(params, "goal_position", 0.5))
    hill = lambda p: np.sin(3 * p) * 0.45 + 0.55  # noqa: E731 -- gymnax's height
    c = _Canvas(width, height, (lo, hi), (0.0, 1.15))
    xs = np.linspace(lo, hi, 200)
    c.ax.plot(xs, hill(xs), color="black", lw=c.points(0.01), zorder=1)
    c.ax.plot([goal, goal], [hill(goal), hill(goal) + 0.12], color="0.3", lw=c.points(0.008), zorder=1)
    c.ax.fill([goal, goal, goal + 0.07], [hill(goal) + 0.12, hill(goal) + 0.08, hill(goal) + 0.1], color=(0.8, 0.8, 0))
    car_w, car_h = 0.16, 0.07
    car = c.ax.add_patch(Rectangle((0, 0), car_w, car_h, color="0.15", rotation_point="center", zorder=2))
    pos = _field(states, "position")
    out = np.empty((len(pos), height, width, 3), np.uint8)
    for t in range(len(pos)):
        slope = np.arctan(1.35 * np.cos(3 * pos[t]))  # d hill / dp
        nx, ny = -np.sin(slope), np.cos(slope)  # the hill's normal: the car sits on the surface
        cx, cy = pos[t] + nx * car_h / 2, hill(pos[t]) + ny * car_h / 2
        car.set_xy((cx - car_w / 2, cy - car_h / 2))
        car.set_angle(np.degrees(slope))
        c.grab(out[t])
    return out


_CLASSIC_DRAW = {
    "CartPole": _draw_cartpole,
    "Pendulum": _draw_pendulum,
    "Acrobot": _draw_acrobot,
    "MountainCar": _draw_mountain_car,
    "ContinuousMountainCar": _draw_mountain_car,
}


def _classic_renderer(kind: str, params) -> Renderer:
    try:
        import matplotlib  # noqa: F401 -- checked here, used when drawing
    except ImportError:
        raise ConfigError(f"rendering {CLASSIC_CONTROL[kind]} needs matplotlib: pip install matplotlib") from None
    draw = _CLASSIC_DRAW[kind]
    return Renderer(name=f"{CLASSIC_CONTROL[kind]} (matplotlib)", record=_gymnax_record,
                    draw=lambda states, w, h: draw(states, params, w, h))


def _gymnax_record(env_state):
    return env_state  # the gymnax EnvState itself (a few scalars)


# ---- MuJoCo: brax and Playground


def _mujoco_frames(mj_model, records, width, height, camera) -> np.ndarray:
    """``records``: dict of ``qpos``, ``qvel`` (and ``mocap_pos``/``mocap_quat``) with a leading [T]."""
    import mujoco

    model = mj_model
    vis = model.vis.global_
    if width > vis.offwidth or height > vis.offheight:  # the offscreen buffer is the model's (640 × 480 default)
        model = copy.deepcopy(mj_model)
        model.vis.global_.offwidth = max(width, vis.offwidth)
        model.vis.global_.offheight = max(height, vis.offheight)
    try:
        renderer = mujoco.Renderer(model, height=height, width=width)
    except Exception as e:  # noqa: BLE001 -- GL failures come as several exception types
        raise ConfigError(f"MuJoCo renderer failed (MUJOCO_GL={os.environ.get('MUJOCO_GL', '')!r}): "
                          f"{_one_line(e)}; {_GL_INSTALL}") from None
    try:
        data = mujoco.MjData(model)
        qpos = records["qpos"]
        out = np.empty((qpos.shape[0], height, width, 3), np.uint8)
        for t in range(qpos.shape[0]):
            data.qpos[:], data.qvel[:] = qpos[t], records["qvel"][t]
            if "mocap_pos" in records and model.nmocap:
                data.mocap_pos[:], data.mocap_quat[:] = records["mocap_pos"][t], records["mocap_quat"][t]
            mujoco.mj_forward(model, data)
            renderer.update_scene(data, camera=camera)
            renderer.render(out=out[t])
        return out
    finally:
        try:
            renderer.close()
        except Exception:  # noqa: BLE001 -- mujoco's OSMesa context can fail to release; the frames are done
            pass


def _brax_renderer(name: str, mj_model) -> Renderer:
    import mujoco

    names = [mujoco.mj_id2name(mj_model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(mj_model.ncam)]
    camera = "track" if "track" in names else -1
    return Renderer(name=f"brax {name} (MuJoCo)", record=_brax_record,
                    draw=lambda rec, w, h: _mujoco_frames(mj_model, rec, w, h, camera))


def _brax_record(ps):
    """A brax pipeline state (any backend): q, qd, and the mocap bodies where it has them."""
    out = {"qpos": ps.q, "qvel": ps.qd}
    if getattr(ps, "mocap_pos", None) is not None and getattr(ps, "mocap_quat", None) is not None:
        out.update(mocap_pos=ps.mocap_pos, mocap_quat=ps.mocap_quat)
    return out


_PLAYGROUND_FIELDS = ("qpos", "qvel", "mocap_pos", "mocap_quat", "xfrc_applied")


def _playground_record(data):
    """An mjx.Data: only what Playground's render_array reads."""
    return {f: getattr(data, f) for f in _PLAYGROUND_FIELDS}


def _playground_renderer(penv) -> Renderer:
    def draw(rec, w, h):
        n = rec["qpos"].shape[0]
        traj = [types.SimpleNamespace(data=types.SimpleNamespace(**{f: rec[f][t] for f in _PLAYGROUND_FIELDS}))
                for t in range(n)]
        vis = penv.mj_model.vis.global_
        vis.offwidth, vis.offheight = max(w, vis.offwidth), max(h, vis.offheight)  # env.render uses its own model
        try:
            frames = penv.render(traj, height=h, width=w)
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001
            if "context" in str(e).lower() or "gl" in type(e).__name__.lower():
                raise ConfigError(f"MuJoCo renderer failed (MUJOCO_GL={os.environ.get('MUJOCO_GL', '')!r}): "
                                  f"{_one_line(e)}; {_GL_INSTALL}") from None
            raise
        return np.stack([np.asarray(f, np.uint8) for f in frames])

    return Renderer(name=f"playground {type(penv).__name__} (MuJoCo)", record=_playground_record, draw=draw)


# ---- OpenGL for MuJoCo

_GL_PROBE = """
import mujoco
m = mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom size='.1'/></worldbody></mujoco>")
r = mujoco.Renderer(m, 8, 8)
d = mujoco.MjData(m)
mujoco.mj_forward(m, d)
r.update_scene(d)
r.render()
r.close()
print("prpo-gl-ok", flush=True)
"""
_GL_LIBRARY = {"egl": "EGL", "osmesa": "OSMesa"}
_gl_ready: str | None = None  # the backend made current in this process


def _one_line(e: BaseException | str, limit: int = 160) -> str:
    text = str(e).strip() or type(e).__name__
    if isinstance(e, BaseException):
        text = f"{type(e).__name__}: {text}"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def _quiet_fork():
    """Silence JAX's warning about ``os.fork()``: the subprocesses started here (the GL probe,
    ffmpeg) exec at once and never run JAX code."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        yield


def _has_gpu() -> bool:
    try:
        return jax.default_backend() in ("gpu", "cuda", "rocm")
    except Exception:  # noqa: BLE001
        return False


@functools.lru_cache(maxsize=None)
def _probe_gl(backend: str) -> str | None:
    """None when ``MUJOCO_GL=backend`` renders in a fresh interpreter, else why not (one line)."""
    lib = _GL_LIBRARY.get(backend)
    if lib is not None and ctypes.util.find_library(lib) is None:
        return f"lib{lib} not found"
    env = {**os.environ, "MUJOCO_GL": backend}
    try:
        with _quiet_fork():
            res = subprocess.run([sys.executable, "-c", _GL_PROBE], env=env, capture_output=True, text=True,
                                 timeout=120)
    except (OSError, subprocess.SubprocessError) as e:
        return _one_line(e)
    if res.returncode == 0 and "prpo-gl-ok" in res.stdout.split():
        return None
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    return _one_line(lines[-1] if lines else f"exit status {res.returncode}")


def _gl_context_module():
    try:
        return importlib.import_module("mujoco.rendering.classic.gl_context")  # mujoco >= 3.4
    except ImportError:
        return importlib.import_module("mujoco.gl_context")


def _ensure_gl() -> str:
    """Make MuJoCo's off-screen renderer work in this process (see the module docstring); returns
    the ``MUJOCO_GL`` backend in use. ConfigError (one line) when none works."""
    global _gl_ready
    if _gl_ready is not None:
        return _gl_ready
    try:
        found = importlib.util.find_spec("mujoco") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ConfigError("rendering MuJoCo envs needs mujoco: pip install mujoco")
    user = os.environ.get("MUJOCO_GL", "").strip().lower()
    if user:
        chosen, tried = user, []
    else:
        order = GL_BACKENDS if _has_gpu() else tuple(reversed(GL_BACKENDS))
        chosen, tried = None, []
        for backend in order:
            why = _probe_gl(backend)
            if why is None:
                chosen = backend
                break
            tried.append(f"MUJOCO_GL={backend} ({why})")
        if chosen is None:
            raise ConfigError(f"no OpenGL backend for MuJoCo rendering works here: tried {'; '.join(tried)}; "
                              f"{_GL_INSTALL}")
        os.environ["MUJOCO_GL"] = chosen  # before mujoco's first import, or for the reload below
    try:
        gl = _gl_context_module()  # imports mujoco (which reads MUJOCO_GL) unless it is imported already
        if getattr(gl, "_MUJOCO_GL", chosen) != chosen:  # mujoco was imported with another (or no) MUJOCO_GL
            importlib.reload(gl)
    except Exception as e:  # noqa: BLE001 -- e.g. an invalid MUJOCO_GL: RuntimeError
        raise ConfigError(f"loading mujoco's GL context with MUJOCO_GL={chosen} failed: {_one_line(e)}") from None
    why = _check_gl_here()
    if why is not None:
        if user:
            raise ConfigError(f"MuJoCo rendering fails with MUJOCO_GL={chosen} (set by you): {why}; unset MUJOCO_GL to "
                              f"let prpo try {' and '.join(GL_BACKENDS)}, or {_GL_INSTALL}")
        raise ConfigError(f"MuJoCo rendering failed with MUJOCO_GL={chosen} in this process: {why}"
                          + (f" (also tried: {'; '.join(tried)})" if tried else "") + f"; {_GL_INSTALL}")
    _gl_ready = chosen
    return chosen


def _check_gl_here() -> str | None:
    import mujoco

    try:
        m = mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom size='.1'/></worldbody></mujoco>")
        r = mujoco.Renderer(m, 8, 8)
    except Exception as e:  # noqa: BLE001
        return _one_line(e)
    try:
        r.close()
    except Exception:  # noqa: BLE001
        pass
    return None


# --------------------------------------------------------------------------- the episode


@dataclasses.dataclass(frozen=True)
class _Stepper:
    """One env of ``env`` stepped without auto-reset, with the keys the VecEnv wrapper derives for
    env 0 of a one-env batch (so a rollout matches :func:`prpo.train.evaluate`'s)."""

    env: Any  # the VecEnv (hashable): its backend env and options

    def reset(self, key):
        k0 = jax.random.split(key, 1)[0]  # VecEnv._split of one key for one env
        env = self.env
        if isinstance(env, envs_lib.GymnaxVecEnv):
            obs, s = env._env.reset_env(k0, env._params)
            return envs_lib._cast(s, envs_lib._dtypes(s)), jnp.asarray(obs, jnp.float32)
        s = env._reset_one(k0)
        return s, s.obs

    def step(self, s, action, key, t):
        """``(state, obs, reward, done, physics)``: the state reached (never reset) and its physics state."""
        env = self.env
        spec = env.spec
        dtypes = envs_lib._dtypes(s)
        if isinstance(env, envs_lib.GymnaxVecEnv):
            discrete = isinstance(spec.action_space, envs_lib.Discrete)
            action = jnp.asarray(action, jnp.int32 if discrete else jnp.float32)
            k_step = jax.random.split(jax.random.split(key)[0], 1)[0]  # as GymnaxVecEnv.step with one key
            genv, params = env._env, env._params
            obs, s_new, reward, terminated, _ = genv.step_env(k_step, s, action, params)
            terminated = jnp.asarray(terminated, jnp.bool_).reshape(())
            truncated = jnp.asarray(genv.is_truncated(s_new, params), jnp.bool_).reshape(()) & ~terminated
            s_new = envs_lib._cast(s_new, dtypes)
            return (s_new, jnp.asarray(obs, jnp.float32), jnp.asarray(reward, jnp.float32).reshape(()),
                    terminated | truncated, s_new)
        nxt = env._env.step(s, jnp.asarray(action, jnp.float32))
        reward = jnp.asarray(nxt.reward, jnp.float32).reshape(())
        terminated = (jnp.asarray(nxt.done) > 0.5).reshape(())
        truncated = (t + 1 >= env._episode_length) & ~terminated  # BraxVecEnv's time limit
        obs = jnp.asarray(nxt.obs, jnp.float32)
        nxt = envs_lib._cast(nxt.replace(obs=obs, reward=reward), dtypes)
        return nxt, obs, reward, terminated | truncated, getattr(nxt, env.physics_field)


def _rollout(stepper: _Stepper, record, policy, cfg, deterministic: bool, params, obs_rms, key):
    """One episode of ``spec.max_episode_steps`` steps; the recorded states, a done-or-before mask
    (True up to and including the first done), the episode length and its return."""
    spec = stepper.env.spec
    to_input = _obs_transform(cfg, obs_rms)
    clip = _action_transform(spec)
    k_reset, k_run = jax.random.split(envs_lib._as_typed_key(key))  # as prpo.train._greedy_return
    s, obs = stepper.reset(k_reset)

    def step(carry, xs):
        s, obs, done_before, ret, length = carry
        k, t = xs
        k_act, k_env = jax.random.split(k)
        x = to_input(obs[None])  # a batch of one env, as evaluate's
        action = policy.mode(params, x) if deterministic else policy.act(params, x, k_act)[0]
        s, obs, reward, done, physics = stepper.step(s, clip(action)[0], k_env, t)
        live = ~done_before  # this step belongs to the episode
        ret = ret + jnp.where(live, reward, 0.0)
        length = length + live.astype(jnp.int32)
        return (s, obs, done_before | done, ret, length), (record(physics), live)

    n = spec.max_episode_steps
    init = (s, obs, jnp.zeros((), bool), jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))
    (_, _, _, ret, length), (records, live) = jax.lax.scan(
        step, init, (jax.random.split(k_run, n), jnp.arange(n, dtype=jnp.int32))
    )
    return records, live, length, ret


@functools.lru_cache(maxsize=16)
def _compiled(stepper, record, policy, cfg, deterministic):
    return jax.jit(functools.partial(_rollout, stepper, record, policy, cfg, deterministic))


def episode_frames(trainer, state, key, *, deterministic: bool = True, width: int = 320,
                   height: int = 240) -> tuple[np.ndarray, float]:
    """Play one episode of the policy in ``state`` (one run's :class:`~prpo.train.TrainState`, no
    seed or setting axes) with one env of ``trainer.env`` and render it.

    Acts as :func:`prpo.train.evaluate` does, with its keys: ``episode_frames(trainer, state, key)``
    plays the episode ``prpo.evaluate(trainer, state, key, num_episodes=1)`` scores. Returns
    ``(frames, episode_return)``: uint8 frames ``[T, height, width, 3]`` where ``T`` is the episode
    length, frame ``t`` showing the state reached by step ``t + 1`` (the last one the terminal or
    time-limit state, before the reset; the initial state is not drawn). An episode that has not
    finished after ``spec.max_episode_steps`` steps (only a custom env without a time limit) gives
    all those steps. Raises :class:`~prpo.registry.ConfigError` before anything is compiled for an
    env without a renderer (:func:`renderer_for`), a batched state or a bad size.
    """
    if not all(hasattr(trainer, a) for a in ("config", "env", "policy")):
        raise ConfigError(f"episode_frames needs a prpo Trainer (prpo.make_train), got {type(trainer).__name__}")
    width, height = _size("width", width), _size("height", height)
    if not isinstance(deterministic, (bool, np.bool_)):
        raise ConfigError(f"deterministic must be a bool, got {deterministic!r}")
    env = trainer.env
    spec = env.spec
    mean_shape = tuple(np.shape(state.obs_rms.mean))
    if mean_shape != tuple(spec.obs_shape):
        raise ConfigError(
            f"episode_frames takes one run's TrainState, but state.obs_rms.mean has shape {mean_shape} for "
            f"observations of shape {tuple(spec.obs_shape)}: pick one run first, "
            "e.g. jax.tree.map(lambda x: x[i], state)"
        )
    if not callable(getattr(env, "with_num_envs", None)):
        raise ConfigError(f"env {envs_lib._short_repr(env)} has no with_num_envs(n); {_renderable()}")
    env1 = env.with_num_envs(1)
    renderer = renderer_for(env1)
    args = (_Stepper(env1), renderer.record, trainer.policy, trainer.config, bool(deterministic))
    try:
        fn = _compiled(*args)
    except TypeError:  # an unhashable policy or config: compile for this call only
        fn = jax.jit(functools.partial(_rollout, *args))
    records, live, length, ret = fn(state.params, state.obs_rms, key)
    n = int(length)
    if n == 0:  # pragma: no cover - max_episode_steps >= 1, and the first step is always live
        raise RuntimeError("the episode has no steps")
    records = jax.tree.map(lambda x: np.asarray(x)[:n], records)
    frames = renderer(records, width, height)
    return frames, float(ret)


# --------------------------------------------------------------------------- video files


def _video_path(path) -> pathlib.Path:
    try:
        return pathlib.Path(os.fspath(path))
    except TypeError:
        raise ConfigError(f"video path must be a str or os.PathLike, got {type(path).__name__} {path!r}") from None


def _import_writer(suffix: str):
    """imageio.v3 with what ``suffix`` needs; ConfigError with the pip command when something is missing."""
    needs = VIDEO_SUFFIXES[suffix]
    hint = f"writing {suffix} videos needs {' and '.join(needs)}: pip install {' '.join(needs)}"
    try:
        import imageio.v3 as iio
        if suffix == ".gif":
            import PIL  # noqa: F401 -- imageio's pillow plugin
        else:
            import imageio_ffmpeg

            imageio_ffmpeg.get_ffmpeg_exe()  # the ffmpeg binary it ships (or finds)
    except (ImportError, RuntimeError) as e:
        raise ConfigError(f"{hint} ({_one_line(e)})") from None
    return iio


def check_video_path(path) -> None:
    """ConfigError unless a video can be written to ``path``: its suffix is one of
    :data:`VIDEO_SUFFIXES`, its directory exists and is writable (tried with a temporary file), it is
    not a directory, and the libraries the suffix needs import. Run it before training or rendering."""
    p = _video_path(path)
    suffix = p.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ConfigError(f"video path {str(p)!r} must end in one of {', '.join(VIDEO_SUFFIXES)} "
                          f"(got {suffix or 'no suffix'!r})")
    if p.is_dir():
        raise ConfigError(f"video path {str(p)!r} is a directory")
    parent = p.parent
    if not parent.exists():
        raise ConfigError(f"the directory {str(parent)!r} of video path {str(p)!r} does not exist")
    if not parent.is_dir():
        raise ConfigError(f"the parent {str(parent)!r} of video path {str(p)!r} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as e:
        raise ConfigError(f"cannot write a video into {str(parent)!r}: {e.strerror or e}") from None
    _import_writer(suffix)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_video(frames: np.ndarray, path, fps: int = 30) -> None:
    """Write uint8 frames ``[T, H, W, 3]`` to ``path``: a GIF (imageio's pillow plugin; looping,
    ``1000 / fps`` ms a frame, which GIF rounds to 10 ms) or an MP4 (imageio-ffmpeg, H.264; odd
    sizes are padded by one edge pixel row/column, as yuv420p needs even ones), by the suffix. The
    file is written to a temporary file in the same directory and moved onto ``path`` when complete,
    so a failed write leaves no partial file (and an older file at ``path`` untouched)."""
    check_video_path(path)
    p = _video_path(path)
    suffix = p.suffix.lower()
    if isinstance(fps, bool) or not isinstance(fps, (int, float, np.integer, np.floating)) or not fps > 0:
        raise ConfigError(f"fps must be a positive number, got {fps!r}")
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1 or frames.dtype != np.uint8:
        raise ConfigError(f"frames must be uint8 [T >= 1, H, W, 3], got {frames.dtype} {frames.shape}")
    iio = _import_writer(suffix)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.stem}.", suffix=f".part{suffix}")
    os.close(fd)
    try:
        if suffix == ".gif":
            iio.imwrite(tmp, frames, extension=".gif", plugin="pillow", duration=1000.0 / float(fps), loop=0)
        else:
            pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
            if pad_h or pad_w:
                frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            with _quiet_fork():
                iio.imwrite(tmp, frames, extension=".mp4", plugin="FFMPEG", fps=float(fps), codec="libx264",
                            pixelformat="yuv420p", macro_block_size=1)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 → an ordinary file's mode
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
