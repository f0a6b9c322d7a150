"""prpo.render: one episode of a policy to frames (one per env step, of the state that step reached,
the last one before the auto-reset), and frames to .gif / .mp4 files written atomically.

The reference episode here is played through the public VecEnv wrapper in a plain Python loop
(auto-reset, ``TimeStep.final_obs``), with the keys prpo.evaluate uses; the frames are checked
against the renderer applied to the wrapper's observations (a CartPole observation is its state).
"""

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import prpo
from prpo import render
from prpo.normalization import RunningMeanStd, rms_normalize
from prpo.registry import ConfigError

KEY = jax.random.key(7)
#: the tests sharing the CartPole trainer and its compiles run on one xdist worker
shares_cartpole = pytest.mark.xdist_group("render_cartpole")


@functools.lru_cache(maxsize=None)
def _reference_step(env, policy, cfg, deterministic):
    """One step of the VecEnv wrapper, acting as prpo.evaluate does (jitted once per trainer)."""

    def step(params, obs_rms, s, obs, k):
        k_act, k_env = jax.random.split(k)
        x = rms_normalize(obs_rms, obs, clip=cfg.obs_clip) if cfg.normalize_obs else obs
        a = policy.mode(params, x) if deterministic else policy.act(params, x, k_act)[0]
        return env.step(s, a, k_env)

    return jax.jit(step)


def reference_episode(trainer, state, key, deterministic=True):
    """(length, return, [final_obs of every step]) of the first episode of one env of ``trainer.env``,
    in a plain Python loop over the auto-resetting VecEnv wrapper."""
    env = trainer.env.with_num_envs(1)
    step = _reference_step(env, trainer.policy, trainer.config, deterministic)
    k_reset, k_run = jax.random.split(key)
    s, obs = env.reset(k_reset)
    seen = []
    for k in jax.random.split(k_run, env.spec.max_episode_steps):
        s, ts = step(state.params, state.obs_rms, s, obs, k)
        obs = ts.obs
        seen.append(np.asarray(ts.final_obs[0]))
        if bool(ts.done[0]):
            return int(ts.episode_length[0]), float(ts.episode_return[0]), np.stack(seen)
    raise AssertionError("no episode ended within max_episode_steps")


def cartpole_states(env, obs):
    """CartPole env states [T] whose fields are the observations ``obs`` [T, 4] (x, x_dot, theta, theta_dot)."""
    _, s = env._env.reset_env(jax.random.key(0), env._params)
    obs = np.asarray(obs, np.float32)
    return s.replace(x=obs[:, 0], x_dot=obs[:, 1], theta=obs[:, 2], theta_dot=obs[:, 3],
                     time=np.zeros(len(obs), np.int32))


@pytest.fixture(scope="module")
def cartpole():
    cfg = prpo.preset("ppo-cartpole", num_envs=4, num_steps=8, total_timesteps=64)
    trainer = prpo.make_train(cfg)
    state = jax.jit(trainer.init)(jax.random.key(0), cfg.hp)
    return trainer, state


@pytest.fixture(scope="module")
def episode(cartpole):
    trainer, state = cartpole
    frames, ret = render.episode_frames(trainer, state, KEY)
    return frames, ret, reference_episode(trainer, state, KEY)


@shares_cartpole
def test_one_frame_per_step_of_the_state_it_reached(cartpole, episode):
    trainer, _ = cartpole
    frames, ret, (length, ref_return, final_obs) = episode
    assert frames.dtype == np.uint8 and frames.shape == (length, 240, 320, 3)
    assert 1 < length < trainer.env.spec.max_episode_steps  # an untrained CartPole policy falls early
    assert ret == ref_return == length  # CartPole pays 1 a step
    assert not (frames == frames[:1]).all(), "every frame is the same"
    # frame t is the state step t + 1 reached; the last one is the terminal state, not the reset one
    env = trainer.env.with_num_envs(1)
    expected = render.renderer_for(env)(cartpole_states(env, final_obs))
    np.testing.assert_array_equal(frames, expected)
    p = env._params
    assert abs(final_obs[-1, 2]) > p.theta_threshold_radians or abs(final_obs[-1, 0]) > p.x_threshold


@shares_cartpole
def test_sampled_actions_and_frozen_normalisation(cartpole, episode):
    """deterministic=False samples with evaluate's keys; normalize_obs uses state.obs_rms as training does."""
    trainer, state = cartpole
    frames, ret = render.episode_frames(trainer, state, KEY, deterministic=False, width=64, height=48)
    length, ref_return, _ = reference_episode(trainer, state, KEY, deterministic=False)
    assert frames.shape == (length, 48, 64, 3) and ret == ref_return
    assert length != len(episode[0]), "sampling changed nothing: this check would not see the mode action used"

    cfg = prpo.preset("ppo-cartpole", num_envs=4, num_steps=8, total_timesteps=64, normalize_obs=True)
    normed = prpo.make_train(cfg)
    rms = RunningMeanStd(mean=jnp.asarray([0.3, -0.5, 0.02, 0.4]), var=jnp.asarray([0.05, 0.2, 0.001, 0.3]),
                         count=jnp.asarray(100.0))
    state_n = state.replace(obs_rms=rms)
    frames_n, ret_n = render.episode_frames(normed, state_n, KEY, width=64, height=48)
    length_n, ref_n, _ = reference_episode(normed, state_n, KEY)
    assert len(frames_n) == length_n and ret_n == ref_n
    assert length_n != len(episode[0]), "the normaliser changed nothing: this check would not see it ignored"


@shares_cartpole
def test_the_renderer_draws_the_state(cartpole):
    env = cartpole[0].env.with_num_envs(1)
    r = render.renderer_for(env)
    obs = np.zeros((4, 4), np.float32)
    obs[0, 0], obs[1, 0] = -1.0, 1.0  # cart left / right, pole upright
    obs[2, 2], obs[3, 2] = -0.2, 0.2  # cart centred, pole leaning left / right
    frames = r(cartpole_states(env, obs), width=160, height=120)

    def centroid_x(img, mask):
        return np.nonzero(mask)[1].mean() if mask.any() else np.nan

    drawn = frames.min(axis=-1) < 200  # dark or coloured pixels, not the white background
    left, right = centroid_x(frames[0], drawn[0]), centroid_x(frames[1], drawn[1])
    assert left < 80 - 10 and right > 80 + 10, (left, right)
    # the pole: its tan pixels (red clearly above blue)
    pole = (frames[..., 0].astype(int) - frames[..., 2]) > 60
    assert centroid_x(frames[2], pole[2]) < 80 - 2 < 80 + 2 < centroid_x(frames[3], pole[3])
    np.testing.assert_array_equal(r(cartpole_states(env, obs[:1]), width=160, height=120)[0], frames[0])


@pytest.mark.parametrize("name", sorted(render.CLASSIC_CONTROL.values()))
def test_each_classic_control_env_draws_its_state(name):
    env = prpo.make_env(name, 1)
    _, s = env._env.reset_env(jax.random.key(0), env._params)
    moved = {"CartPole-v1": ("x", 1.5), "Pendulum-v1": ("theta", 2.0), "Acrobot-v1": ("joint_angle1", 1.5),
             "MountainCar-v0": ("position", 0.3), "MountainCarContinuous-v0": ("position", 0.3)}[name]
    s2 = s.replace(**{moved[0]: jnp.asarray(moved[1], jnp.float32)})
    states = jax.tree.map(lambda a, b: np.stack([np.asarray(a), np.asarray(b), np.asarray(a)]), s, s2)
    frames = render.renderer_for(env)(states, width=96, height=64)
    assert frames.shape == (3, 64, 96, 3) and frames.dtype == np.uint8
    assert (frames[0] != frames[1]).any() and (frames[0] == frames[2]).all()
    assert (frames[0] < 200).any() and (frames[0] == 255).any()  # something drawn on a white background


@shares_cartpole
def test_envs_without_a_renderer_are_refused_before_anything_runs(cartpole):
    with pytest.raises(ConfigError, match="renderable envs: gymnax CartPole-v1"):
        render.renderer_for("MultiGoal2D")

    class Custom:  # the VecEnv protocol, no renderer
        spec = prpo.envs.EnvSpec("Custom", (1,), prpo.envs.Discrete(2), 1)
        num_envs = 1
        reset = step = lambda *a: None

    with pytest.raises(ConfigError, match="has no renderer"):
        render.renderer_for(Custom())
    trainer, state = cartpole
    two_runs = state.replace(obs_rms=jax.tree.map(lambda x: jnp.stack([x, x]), state.obs_rms))
    with pytest.raises(ConfigError, match="one run's TrainState"):
        render.episode_frames(trainer, two_runs, KEY)
    with pytest.raises(ConfigError, match="width"):
        render.episode_frames(trainer, state, KEY, width=0)


@shares_cartpole
def test_gif_round_trip(episode, tmp_path):
    iio = pytest.importorskip("imageio.v3", reason="the video extra (imageio) is not installed")

    frames = episode[0]
    path = tmp_path / "cartpole.gif"
    render.write_video(frames, path, fps=25)
    back = iio.imread(path, index=None)
    assert back.shape[:3] == frames.shape[:3]
    assert os.listdir(tmp_path) == ["cartpole.gif"]  # no temporary file left
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")  # imageio's ffmpeg reader (write_video silences its own)
def test_mp4_round_trip_pads_odd_sizes(tmp_path):
    iio = pytest.importorskip("imageio.v3", reason="the video extra (imageio) is not installed")
    pytest.importorskip("imageio_ffmpeg", reason="imageio-ffmpeg (for .mp4) is not installed")

    rng = np.random.default_rng(0)
    frames = np.repeat(np.repeat(rng.integers(0, 255, (6, 7, 9, 3), dtype=np.uint8), 7, axis=1), 7, axis=2)
    path = tmp_path / "noise.mp4"
    render.write_video(frames, path, fps=10)  # 49 x 63: odd, padded to 50 x 64 for yuv420p
    back = iio.imread(path, plugin="FFMPEG", index=None)
    assert back.shape == (6, 50, 64, 3)
    assert np.abs(back[:, :49, :63].astype(int) - frames).mean() < 40  # lossy, but the picture


def test_bad_video_paths_raise_config_errors(tmp_path):
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    for bad in ("video.avi", "video"):
        with pytest.raises(ConfigError, match=r"\.gif, \.mp4"):
            render.check_video_path(tmp_path / bad)
        with pytest.raises(ConfigError, match=r"\.gif, \.mp4"):
            render.write_video(frames, tmp_path / bad)
    with pytest.raises(ConfigError, match="does not exist"):
        render.write_video(frames, tmp_path / "missing" / "v.gif")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        render.check_video_path(tmp_path / "file" / "v.gif")
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_missing_video_libraries_name_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio", None)  # import imageio -> ImportError
    monkeypatch.setitem(sys.modules, "imageio.v3", None)
    with pytest.raises(ConfigError, match="pip install imageio pillow"):
        render.check_video_path(tmp_path / "v.gif")
    with pytest.raises(ConfigError, match="pip install imageio imageio-ffmpeg"):
        render.write_video(np.zeros((1, 8, 8, 3), np.uint8), tmp_path / "v.mp4")
    assert os.listdir(tmp_path) == []


def test_frames_must_be_uint8_rgb(tmp_path):
    pytest.importorskip("imageio.v3", reason="the video extra (imageio) is not installed")
    for bad in (np.zeros((2, 8, 8, 3), np.float32), np.zeros((8, 8, 3), np.uint8), np.zeros((2, 8, 8, 4), np.uint8)):
        with pytest.raises(ConfigError, match="uint8"):
            render.write_video(bad, tmp_path / "v.gif")
    assert os.listdir(tmp_path) == []


def test_unwritable_directory_raises_a_config_error(tmp_path):
    if os.geteuid() != 0:
        target = tmp_path / "ro"
        target.mkdir()
        target.chmod(0o500)
    else:  # root writes through permission bits; sysfs refuses new files even to root
        target = "/sys"
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=target):
            pytest.skip(f"{target} is writable here")
    except OSError:
        pass
    with pytest.raises(ConfigError, match="cannot write a video"):
        render.write_video(np.zeros((1, 8, 8, 3), np.uint8), os.path.join(target, "v.gif"))


def test_a_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    iio = pytest.importorskip("imageio.v3", reason="the video extra (imageio) is not installed")

    path = tmp_path / "v.gif"
    path.write_bytes(b"the previous video")

    def broken(uri, *args, **kwargs):
        with open(uri, "wb") as f:
            f.write(b"GIF89a half a file")
        raise OSError("disk full")

    monkeypatch.setattr(iio, "imwrite", broken)
    with pytest.raises(OSError, match="disk full"):
        render.write_video(np.zeros((3, 8, 8, 3), np.uint8), path)
    assert os.listdir(tmp_path) == ["v.gif"] and path.read_bytes() == b"the previous video"


def test_no_gl_backend_is_one_config_error_line(monkeypatch):
    monkeypatch.setattr(render, "_gl_ready", None)
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr(render, "_probe_gl", lambda b: f"lib{b} not found")
    with pytest.raises(ConfigError) as e:
        render._ensure_gl()
    msg = str(e.value)
    assert "MUJOCO_GL=egl" in msg and "MUJOCO_GL=osmesa" in msg and "apt-get install" in msg and "\n" not in msg
    assert "MUJOCO_GL" not in os.environ  # nothing chosen, nothing set


def test_import_prpo_render_imports_no_optional_library():
    code = ("import sys, prpo, prpo.render; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'matplotlib', 'imageio', 'mujoco', 'brax'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def test_brax_episode_renders_three_frames():
    pytest.importorskip("brax")
    cfg = prpo.preset("ppo-brax", env="inverted_pendulum", env_backend="spring", num_envs=2, num_steps=4,
                      total_timesteps=8, num_minibatches=1, update_epochs=1, episode_length=3, actor_hidden=(8,))
    trainer = prpo.make_train(cfg)
    try:
        r = render.renderer_for(trainer.env.with_num_envs(1))
    except ConfigError as e:
        pytest.skip(f"no OpenGL backend for MuJoCo here: {e}")
    spec = trainer.env.spec
    params = trainer.policy.init(jax.random.key(0), jnp.zeros((1, *spec.obs_shape)))
    state = prpo.TrainState(params=params, opt_state=None, env_state=None, obs=None,
                            obs_rms=prpo.normalization.rms_init(spec.obs_shape), reward_scaler=None, key=None,
                            update=None, last_return=None, nonfinite_update=None)
    frames, ret = render.episode_frames(trainer, state, KEY, width=64, height=48)
    # the 3-step time limit ends the episode (the pole cannot fall in 3 steps); +1 a step
    assert frames.shape == (3, 48, 64, 3) and frames.dtype == np.uint8 and ret == 3.0
    assert frames.std() > 5  # a scene, not a blank image
    # the renderer draws the physics state: slider and hinge moved -> a different picture
    qpos = np.array([[0.0, 0.0], [0.5, 0.6]])
    moved = r({"qpos": qpos, "qvel": np.zeros_like(qpos)}, 64, 48)
    assert (moved[0] != moved[1]).mean() > 0.01
