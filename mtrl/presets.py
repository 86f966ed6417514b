"""Named experiment configs: every hyperparameter of a published setup in one place."""

from __future__ import annotations

from collections.abc import Callable

from mtrl.config import (
    A2CConfig,
    AgentConfig,
    CheckpointConfig,
    ConfigError,
    DistillConfig,
    EnvConfig,
    EvalConfig,
    IMPALAConfig,
    LogConfig,
    PPOConfig,
    ReplayConfig,
    SACConfig,
    TrainConfig,
)


def _toy_mtsac() -> TrainConfig:
    """MT-SAC on the 4-task continuous point-reach toy. Small networks and batches so that it
    learns to >= 0.9 success in a few minutes on a 2-core CPU."""
    return TrainConfig(
        preset="toy-mtsac",
        total_steps=24_000,
        warmup_steps=2_000,
        env=EnvConfig(name="toy-reach", num_tasks=4, envs_per_task=2, max_episode_steps=50),
        agent=AgentConfig(
            actor_hidden=[64, 64],
            critic_hidden=[64, 64],
            batch_size=256,
            sac=SACConfig(actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3, init_alpha=0.1),
        ),
        replay=ReplayConfig(capacity=100_000),
        eval=EvalConfig(every=8_000, episodes_per_task=10),
        log=LogConfig(every=1_000),
        checkpoint=CheckpointConfig(every=8_000, keep_last=3),
    )


def _metaworld_mtsac(name: str) -> TrainConfig:
    """MT-SAC as the Meta-World+ baseline (McLean et al. 2025, "Meta-World+: An Improved,
    Standardized, RL Benchmark"; metaworld-algorithms MTSACConfig/OffPolicyTrainingConfig):
    400-400 ReLU MLPs, Adam lr 3e-4, gamma 0.99, tau 0.005, initial temperature 1.0 per task,
    target entropy -|A|, replay 1e6, 4000 vector steps of random warm-up, one update per vector
    step, Q values clipped to ±5000, 2M env steps per task, reward v2, 500-step episodes."""
    num_tasks = {"mt10": 10, "mt25": 25, "mt50": 50}[name]
    # Batch 1280 = 128 per task on MT10. 1280 is not a multiple of 25/50; the Meta-World+
    # sampler draws batch // num_tasks per task, i.e. 1275 (MT25) / 1250 (MT50): we use that.
    batch = 1280 // num_tasks * num_tasks
    vec = num_tasks  # env steps per vector step
    return TrainConfig(
        preset=f"{name}-mtsac",
        total_steps=2_000_000 * num_tasks,
        warmup_steps=4_000 * vec,
        env=EnvConfig(name=name),
        agent=AgentConfig(batch_size=batch, sac=SACConfig(max_q_value=5000.0)),
        replay=ReplayConfig(capacity=1_000_000),
        eval=EvalConfig(every=20_000 * vec, episodes_per_task=50),
        log=LogConfig(every=500 * vec),
        checkpoint=CheckpointConfig(every=20_000 * vec, keep_last=3),
    )


def _with_combiners(base: TrainConfig, name: str, actor: str, critic: str) -> TrainConfig:
    base.preset = name
    base.agent.actor_combiner = actor
    base.agent.critic_combiner = critic
    return base


def _pcgrad(benchmark: str) -> TrainConfig:
    """MT-SAC with PCGrad on the actor and the critic losses, as Yu et al. 2020 ("Gradient
    Surgery for Multi-Task Learning", Sec. 5.2) combine PCGrad with multi-task SAC on MT10/MT50.
    Everything else is the Meta-World+ MT-SAC baseline of the same benchmark, so that the two
    presets differ only in the combiner. mtrl keeps one temperature per task, as the PCGrad
    authors' README describes for their Meta-World runs ("per-task temperature and per-task
    replay buffers"); facebookresearch/mtrl's PCGrad config shares one temperature instead.
    Compare against ``{benchmark}-mtsac`` to isolate the surgery."""
    return _with_combiners(_metaworld_mtsac(benchmark), f"{benchmark}-pcgrad-sac", "pcgrad",
                           "pcgrad")


def _gradnorm(benchmark: str) -> TrainConfig:
    """MT-SAC whose per-task critic losses are balanced by GradNorm (Chen et al. 2018, α = 1.5
    as in their NYUv2 experiments); the actor keeps the mean (its loss can be negative, which
    loss-ratio balancing cannot handle). Otherwise the Meta-World+ MT-SAC baseline."""
    return _with_combiners(_metaworld_mtsac(benchmark), f"{benchmark}-gradnorm-sac", "mean",
                           "gradnorm")


def _popart(benchmark: str) -> TrainConfig:
    """MT-SAC with PopArt-normalized critics (van Hasselt et al. 2016; Hessel et al. 2019):
    per-task value heads, per-task statistics with β = 3e-4 (Hessel et al.), critic losses on
    normalized targets, each task's actor loss divided by its σ. Otherwise the Meta-World+
    MT-SAC baseline. Hessel et al. pair PopArt with IMPALA on Atari; SAC on Meta-World is
    mtrl's transfer of the method, not a published configuration."""
    cfg = _metaworld_mtsac(benchmark)
    cfg.preset = f"{benchmark}-popart-sac"
    cfg.agent.popart = True
    return cfg


def _toy_popart() -> TrainConfig:
    """``toy-mtsac`` with PopArt critics and rewards rescaled per task by 1, 10, 100, 1000 —
    the situation PopArt exists for. β is larger than Hessel et al.'s 3e-4 because the run is
    ~20k updates long."""
    cfg = _toy_mtsac()
    cfg.preset = "toy-popart-sac"
    cfg.env.reward_scales = [1.0, 10.0, 100.0, 1000.0]
    cfg.agent.popart = True
    cfg.agent.popart_beta = 1e-2
    return cfg


def _arch(benchmark: str, name: str, arch: str, **sizes: object) -> TrainConfig:
    cfg = _metaworld_mtsac(benchmark)
    cfg.preset = name
    cfg.agent.actor_arch = cfg.agent.critic_arch = arch
    for key, value in sizes.items():
        setattr(cfg.agent.arch, key, value)
    return cfg


def _mhsac() -> TrainConfig:
    """MH-SAC on MT10: 400-400 shared trunk on [obs, one_hot] and one output head per task for
    the actor and each critic (Yu et al. 2019, Sec. 5 multi-head baseline; Meta-World+
    MTMHSAC). Everything else as mt10-mtsac."""
    return _arch("mt10", "mt10-mhsac", "multihead")


def _soft_modular(benchmark: str) -> TrainConfig:
    """Soft Modularization (Yang et al. 2020) for actor and critics: the paper's "shallow"
    network on MT10 (L = 2 layers × m = 2 modules) and "deep" on MT50 (L = 4 × m = 4), module
    width d = 256, embedding D = 400 (Meta-World+'s SoftModulesConfig; the authors' official
    MT50 "deep" config uses 128-unit modules: ``--agent.arch.module-dim 128``, see
    docs/REPRODUCING.md). Deviations: the paper also reweights task losses by their temperatures
    (not done here) and uses SAC batch settings of its own; mtrl keeps the Meta-World+ MT-SAC
    training setup so that presets differ only in the network."""
    deep = benchmark == "mt50"
    return _arch(benchmark, f"{benchmark}-soft-modular", "soft-modular",
                 num_layers=4 if deep else 2, num_modules=4 if deep else 2, module_dim=256,
                 embedding_dim=400, routing_dim=256)


def _routing() -> TrainConfig:
    """Routing networks (Rosenbaum et al. 2018) for actor and critics on MT10: 3 routed depths
    of 4 modules × 256 units plus PASS, task-conditioned routers trained by REINFORCE on the
    negative per-sample loss. Rosenbaum et al. evaluate on supervised multi-task
    classification; there is no published MT10 configuration, so these sizes are mtrl's
    choice (about the parameter count of a 400-400 MLP)."""
    return _arch("mt10", "mt10-routing", "routing", router_depth=3, router_modules=4,
                 module_dim=256, router_mode="reinforce")


def _moe() -> TrainConfig:
    """CARE-style mixture of experts (Sodhani et al. 2021) for actor and critics on MT10: 4
    expert encoders (400-400-… as the MT-SAC trunk, last layer 400 units) mixed by attention
    from a learned 64-dim task embedding, then a 400-400 head. CARE's context comes from
    language metadata of the tasks, which mtrl does not ship: this is CARE's mechanism with a
    learned context, not its published configuration."""
    return _arch("mt10", "mt10-moe", "moe", num_experts=4, expert_hidden=[400], gating="care",
                 task_encoder="embedding", task_embedding_dim=64)


def _moore(benchmark: str) -> TrainConfig:
    """MOORE (Hendawy, Peters & D'Eramo 2024, "Multi-Task Reinforcement Learning with Mixture of
    Orthogonal Experts") for the actor and both critics, with the sizes and SAC settings of the
    authors' Meta-World runs (their run_metaworld_*_mhsac_mt_moore.sh and README): experts of
    three 400-unit layers (agent.actor_hidden = agent.critic_hidden = [400, 400, 400]), 4
    experts on MT10 and 6 on MT50, Gram-Schmidt-orthonormalized and mixed by a per-task weight
    vector, tanh, then one linear output layer per task; 128 transitions per task in each
    batch; a replay buffer of 1e6 transitions per task on MT10 and 1e5 per task on MT50;
    Adam lr 3e-4 (actor and critics) and 1e-4 (temperatures, one per task, starting at 1);
    log σ in [-10, 2]; γ 0.99, τ 0.005, target entropy −|A|; one update per vector step;
    2M env steps per task; 1500 warm-up steps per task.

    Where mtrl differs: Meta-World episodes are 500 steps here (the authors cut them at 150);
    the warm-up acts uniformly at random (theirs fills 1500 steps per task with the untrained
    policy and also holds back actor updates until 3000 per task); evaluation follows mtrl's
    Meta-World protocol (50 episodes per task every 20k vector steps; theirs: 10 per task every
    100k); Q values are clipped to ±5000 as in mtrl's Meta-World+ base (never reached with
    γ = 0.99 and Meta-World's rewards of at most 10); layers keep PyTorch's default
    initialization (theirs: Xavier-uniform)."""
    num_tasks = {"mt10": 10, "mt50": 50}[benchmark]
    cfg = _arch(benchmark, f"{benchmark}-moore", "moore",
                num_experts=4 if benchmark == "mt10" else 6, moore_multihead=True)
    cfg.agent.actor_hidden, cfg.agent.critic_hidden = [400, 400, 400], [400, 400, 400]
    cfg.agent.batch_size = 128 * num_tasks
    cfg.agent.sac.alpha_lr = 1e-4
    cfg.agent.sac.log_std_min, cfg.agent.sac.log_std_max = -10.0, 2.0
    per_task = 1_000_000 if benchmark == "mt10" else 100_000
    cfg.replay.capacity = per_task * num_tasks
    cfg.warmup_steps = 1_500 * num_tasks
    return cfg


def _paco(benchmark: str) -> TrainConfig:
    """PaCo (Sun, Zhang, Xu & Tomizuka 2022, "PaCo: Parameter-Compositional Multi-Task
    Reinforcement Learning") for the actor and both critics, with the settings of the authors'
    released MT10 config (TToTMooN/paco-mtrl, metaworld_mt10_paco_conf.py): every layer of
    3 × 400-unit ReLU MLPs compositional, θ_τ = Φ w_τ with K = 5 parameter copies that start
    identical and free task vectors w_τ ~ N(0, I); loss maskout at ε = 3000 with w-reset by a
    random convex combination of the other tasks' w (combiner paco-maskout on actor and
    critic); Adam lr 3e-4 for actor, critics and w, 1e-4 for the temperatures (one per task,
    starting at 1); log σ in [-10, 2]; batch 1280, replay 1e6, τ 0.005, γ 0.99; 1500 warm-up
    steps per task. On MT50, K = 20: the authors' released code holds only the MT10 config, and
    20 is what the PaCo baseline of McLean et al. 2025 ("Multi-Task Reinforcement Learning
    Enables Parameter Scaling"; rainx0r/mtrl experiments/baselines/mt50_paco.py) uses
    (``--agent.arch.paco-num-params`` sets it).

    Where mtrl differs: the authors share one W between the actor and the critics and test one
    summed actor + critic + temperature loss per task against ε; here every network has its own
    W and each combiner tests the loss it combines (the critic's squared TD error is what
    explodes). Their warm-up transitions come from the untrained policy, mtrl's from uniform
    random actions. Their temperatures are capped at α ≤ 1 (log α in [-10, 0]); mtrl's are not.
    Their output layers start smaller (gain 0.3 policy heads, ±0.003 critic output); mtrl
    initializes every layer uniformly in ±1/√in with zero biases. Budget, episode length,
    evaluation, Q clipping (±5000) and batch on MT50 (1250) follow mtrl's Meta-World+ MT-SAC
    base (the authors' config trains 5M steps per task), so that presets differ in the method
    only. Gradient diagnostics are off on MT50: PaCo's Φ is not made of ``nn.Linear`` layers,
    so per-task gradients take the vmapped path, 50 tasks × K = 20 copies of every weight (GBs
    every diagnostic update); ``--agent.combiner.diagnostics-every N`` turns them on."""
    num_tasks = {"mt10": 10, "mt50": 50}[benchmark]
    cfg = _arch(benchmark, f"{benchmark}-paco", "paco",
                paco_num_params=5 if benchmark == "mt10" else 20, paco_identical_init=True)
    cfg.agent.actor_hidden, cfg.agent.critic_hidden = [400, 400, 400], [400, 400, 400]
    cfg.agent.actor_combiner = cfg.agent.critic_combiner = "paco-maskout"
    cfg.agent.combiner.paco_loss_threshold = 3000.0
    cfg.agent.combiner.paco_reset = "interpolate"
    cfg.agent.sac.alpha_lr = 1e-4
    cfg.agent.sac.log_std_min, cfg.agent.sac.log_std_max = -10.0, 2.0
    cfg.warmup_steps = 1_500 * num_tasks
    if num_tasks > 10:
        cfg.agent.combiner.diagnostics_every = 0
    return cfg


def _mtsac_large(benchmark: str) -> TrainConfig:
    """MT-SAC with networks scaled to PaCo's parameter count, the largest of the architectures
    McLean et al. 2025 ("Multi-Task Reinforcement Learning Enables Parameter Scaling", Fig. 1)
    match: their "simple feed-forward" baseline, a ReLU MLP of three hidden layers on
    [obs, one_hot(task)] with one output head per task (MTMHSAC), widened to 885 units on MT10
    and 1805 on MT50 (the authors' parameter-matching runs, rainx0r/mtrl
    experiments/parameter_matching: mt10_mtmhsac_paco_v2_params_3_layers,
    mt50_mtmhsac_paco_params). That is ~1.68M actor and 2 × 1.62M critic parameters on MT10
    (PaCo's actor: ~1.70M), ~7.40M and 2 × 6.78M on MT50; ``mt10-mtsac``'s 400-400 MLPs have
    0.18M each. Their runs clip each network's gradient norm to 1, kept here. Everything else is
    ``{benchmark}-mtsac`` (the authors' MT50 run, mt50_mtmhsac_paco_params.py, uses 128 samples
    per task per batch and a 5M-transition buffer; mtrl keeps the base preset's batch and
    buffer, so that the two presets differ only in the networks and the clipping)."""
    cfg = _arch(benchmark, f"{benchmark}-mtsac-large", "multihead")
    width = {"mt10": 885, "mt50": 1805}[benchmark]
    cfg.agent.actor_hidden = [width] * 3
    cfg.agent.critic_hidden = [width] * 3
    cfg.agent.grad_clip = 1.0
    return cfg


def _toy_pcgrad() -> TrainConfig:
    """``toy-mtsac`` with PCGrad on actor and critic: a fast demo of the combiner and of the
    gradient-conflict diagnostics (logged every 100 updates)."""
    cfg = _with_combiners(_toy_mtsac(), "toy-pcgrad-sac", "pcgrad", "pcgrad")
    cfg.agent.combiner.diagnostics_every = 100
    return cfg


def _toy_a2c() -> TrainConfig:
    """MT-A2C with PopArt on the 4-goal *discrete* point-reach toy (5 actions): 16 envs
    (4 per task), 5-step rollouts, 64-64 policy and value MLPs on [obs, one_hot], RMSprop.
    Learns to >= 0.9 success in about a minute on a 2-core CPU (tests/test_a2c.py)."""
    return TrainConfig(
        preset="toy-a2c",
        total_steps=120_000,
        warmup_steps=0,
        env=EnvConfig(name="toy-reach-discrete", num_tasks=4, envs_per_task=4,
                      max_episode_steps=50),
        agent=AgentConfig(
            name="mta2c",
            actor_hidden=[64, 64],
            critic_hidden=[64, 64],
            gamma=0.99,
            grad_clip=0.5,
            popart=True,
            popart_beta=1e-2,
            a2c=A2CConfig(n_steps=5, gae_lambda=1.0, lr=2e-3, ent_coef=0.01, vf_coef=0.5),
        ),
        eval=EvalConfig(every=40_000, episodes_per_task=10),
        log=LogConfig(every=4_000),
        checkpoint=CheckpointConfig(every=40_000, keep_last=2),
    )


def _mt10_a2c() -> TrainConfig:
    """MT-A2C with PopArt on Meta-World MT10 (Gaussian policy with a per-task state-independent
    log-std, actions clipped to [-1, 1]): 400-400 policy and value MLPs on [obs, one_hot],
    n_steps 5 (50 env steps per update), GAE λ 0.95, Adam lr 3e-4, gradient clip 0.5, entropy
    coefficient 0. An on-policy baseline for MT10; expect it to need far more env steps than
    MT-SAC."""
    return TrainConfig(
        preset="mt10-a2c",
        total_steps=20_000_000,
        warmup_steps=0,
        env=EnvConfig(name="mt10"),
        agent=AgentConfig(
            name="mta2c",
            actor_hidden=[400, 400],
            critic_hidden=[400, 400],
            gamma=0.99,
            grad_clip=0.5,
            popart=True,
            popart_beta=3e-4,
            a2c=A2CConfig(n_steps=5, gae_lambda=0.95, optimizer="adam", lr=3e-4, ent_coef=0.0,
                          vf_coef=0.5),
        ),
        eval=EvalConfig(every=200_000, episodes_per_task=50),
        log=LogConfig(every=5_000),
        checkpoint=CheckpointConfig(every=200_000, keep_last=3),
    )


def _atari_a2c(name: str, games: list[str], *, popart: bool) -> TrainConfig:
    """MT-A2C on several Atari games at once, in the spirit of Hessel et al. 2019 ("Multi-task
    Deep Reinforcement Learning with PopArt"), with A2C in place of IMPALA.

    Env: ALE v5 settings (sticky actions 0.25, frame skip 4 with max-pooling, 84×84 grayscale,
    4-frame stacks, up to 30 no-op starts, full 18-action space shared by all games, episodes
    capped at 108k frames), 8 envs per game. Agent: the Nature CNN torso shared by a linear
    policy head on ``[features, one_hot(game)]`` and, with PopArt, one normalized value output
    per game (Hessel et al.'s per-task value heads; β = 3e-4 as in the paper); A2C
    hyperparameters of Mnih et al. 2016 / stable-baselines3: n_steps 5, γ 0.99, n-step returns
    (λ = 1), RMSprop lr 7e-4 α 0.99 ε 1e-5 with TensorFlow's initialization of the mean square
    (1, as the original implementations and SB3's ``RMSpropTFLike``), entropy 0.01, value 0.5,
    gradient clip 0.5.

    ``popart=True``: unclipped rewards (the point of PopArt). ``popart=False``: rewards clipped
    to their sign, as DQN/A2C do on Atari; episode returns are logged unclipped either way.
    Evaluation samples from the policy (``eval.deterministic=false``): a greedy Atari policy can
    stall forever (e.g. never pressing FIRE)."""
    n = len(games)
    return TrainConfig(
        preset=name,
        total_steps=10_000_000 * n,  # 10M agent steps = 40M frames per game
        warmup_steps=0,
        env=EnvConfig(name="atari", tasks=list(games), envs_per_task=8,
                      clip_rewards=not popart),
        agent=AgentConfig(
            name="mta2c",
            actor_hidden=[],
            critic_hidden=[],
            gamma=0.99,
            grad_clip=0.5,
            popart=popart,
            popart_beta=3e-4,
            a2c=A2CConfig(n_steps=5, gae_lambda=1.0, optimizer="rmsprop-tf", lr=7e-4,
                          rmsprop_alpha=0.99, optim_eps=1e-5, ent_coef=0.01, vf_coef=0.5),
        ),
        eval=EvalConfig(every=1_000_000 * n, episodes_per_task=3, deterministic=False),
        log=LogConfig(every=2_000 * n),
        checkpoint=CheckpointConfig(every=500_000 * n, keep_last=3),
    )


def _atari6(popart: bool) -> TrainConfig:
    from mtrl.envs.atari import ATARI6

    return _atari_a2c("atari6-a2c-popart" if popart else "atari6-a2c", list(ATARI6),
                      popart=popart)


def _atari57() -> TrainConfig:
    from mtrl.envs.atari import ATARI57

    cfg = _atari_a2c("atari57-a2c-popart", list(ATARI57), popart=True)
    cfg.env.envs_per_task = 2  # 114 envs
    return cfg


def _toy_ppo() -> TrainConfig:
    """MT-PPO with PopArt on the 4-goal *discrete* point-reach toy (5 actions): 16 envs (4 per
    task), 32-step rollouts (512 env steps), 4 epochs of 4 task-stratified minibatches, clip
    0.2, GAE λ 0.95, entropy 0.01, Adam lr 1e-3, gradient clip 0.5, 64-64 policy and value
    MLPs on [obs, one_hot]. Learns to >= 0.9 success in about 70 s on a 2-core CPU (measured:
    1.00 / 1.00 / 0.95 on seeds 0 / 1 / 2)."""
    return TrainConfig(
        preset="toy-ppo",
        total_steps=160_000,
        warmup_steps=0,
        env=EnvConfig(name="toy-reach-discrete", num_tasks=4, envs_per_task=4,
                      max_episode_steps=50),
        agent=AgentConfig(
            name="mtppo",
            actor_hidden=[64, 64],
            critic_hidden=[64, 64],
            gamma=0.99,
            grad_clip=0.5,
            popart=True,
            popart_beta=1e-2,
            ppo=PPOConfig(n_steps=32, epochs=4, minibatches=4, clip_range=0.2, gae_lambda=0.95,
                          ent_coef=0.01, vf_coef=0.5, lr=1e-3),
        ),
        eval=EvalConfig(every=40_000, episodes_per_task=10),
        log=LogConfig(every=4_096),
        checkpoint=CheckpointConfig(every=40_000, keep_last=2),
    )


def _mt10_ppo() -> TrainConfig:
    """MT-PPO on Meta-World MT10 with the hyperparameters of Meta-World+'s MTPPO baseline
    (McLean et al. 2025; metaworld-algorithms ``MTPPOConfig`` and ``OnPolicyTrainingConfig``):
    400-400-400 ReLU policy and value MLPs on [obs, one_hot], rollouts of 10,000 env steps
    (1,000 per task's env), 16 epochs of 32 minibatches, clip ε 0.2 for the ratio and the
    value, GAE λ 0.97, γ 0.99, entropy coefficient 5e-3, advantages standardized, Adam lr 3e-4
    (ε 1e-5), 20M env steps, reward v2, 500-step episodes.

    Differences: Meta-World+ uses a tanh-squashed Gaussian with a state-dependent log-std and
    separate optimizers for policy and value (value-loss weight 0.001); mtrl's actor-critic
    has a per-task state-independent log-std, actions clipped to [-1, 1], one Adam optimizer on
    the joint loss with value weight 0.5, and standardizes advantages per task within each
    minibatch (Meta-World+ over the whole minibatch). PopArt is off, as in Meta-World+."""
    return TrainConfig(
        preset="mt10-ppo",
        total_steps=20_000_000,
        warmup_steps=0,
        env=EnvConfig(name="mt10"),
        agent=AgentConfig(
            name="mtppo",
            actor_hidden=[400, 400, 400],
            critic_hidden=[400, 400, 400],
            gamma=0.99,
            popart=False,
            ppo=PPOConfig(n_steps=1_000, epochs=16, minibatches=32, clip_range=0.2,
                          clip_value=0.2, gae_lambda=0.97, ent_coef=5e-3, vf_coef=0.5,
                          lr=3e-4, optim_eps=1e-5, normalize_advantage=True),
        ),
        eval=EvalConfig(every=200_000, episodes_per_task=50),
        log=LogConfig(every=10_000),
        checkpoint=CheckpointConfig(every=200_000, keep_last=3),
    )


def _atari6_ppo_popart() -> TrainConfig:
    """MT-PPO with PopArt on six Atari games: the Atari settings of Schulman et al. 2017
    (Table 5: horizon 128, 8 actors per game, 3 epochs, minibatches of 32×8 steps — here 4
    task-stratified minibatches per epoch of 6 × 8 × 128 rows, clip ε 0.1, Adam lr 2.5e-4,
    GAE λ 0.95, γ 0.99, entropy 0.01, value weight 1) with the Nature CNN torso shared by the
    policy and a per-game PopArt value head (Hessel et al. 2019, β 3e-4) and unclipped rewards,
    the env and evaluation of ``atari6-a2c-popart``. Differences: no annealing of the learning
    rate and of ε (the paper anneals both linearly to 0), gradient clip 0.5 (OpenAI
    baselines); PPO with PopArt is mtrl's combination (Hessel et al. pair PopArt with IMPALA)."""
    from mtrl.envs.atari import ATARI6

    n = len(ATARI6)
    return TrainConfig(
        preset="atari6-ppo-popart",
        total_steps=10_000_000 * n,
        warmup_steps=0,
        env=EnvConfig(name="atari", tasks=list(ATARI6), envs_per_task=8, clip_rewards=False),
        agent=AgentConfig(
            name="mtppo",
            actor_hidden=[],
            critic_hidden=[],
            gamma=0.99,
            grad_clip=0.5,
            popart=True,
            popart_beta=3e-4,
            ppo=PPOConfig(n_steps=128, epochs=3, minibatches=4, clip_range=0.1,
                          gae_lambda=0.95, ent_coef=0.01, vf_coef=1.0, lr=2.5e-4),
        ),
        eval=EvalConfig(every=1_000_000 * n, episodes_per_task=3, deterministic=False),
        log=LogConfig(every=2_000 * n),
        checkpoint=CheckpointConfig(every=500_000 * n, keep_last=3),
    )


def _toy_impala() -> TrainConfig:
    """MT-IMPALA (the V-trace learner, in-process: ρ = c = 1) with PopArt on the 4-goal
    *discrete* point-reach toy (5 actions): 16 envs (4 per task), 5-step unrolls, 64-64 policy
    and value MLPs on [obs, one_hot], RMSprop lr 2e-3, entropy 0.01, value weight 1 on
    ½(v_s − V)² (the value gradient of ``toy-a2c``), gradient clip 0.5, PopArt β 1e-2 — the
    settings of ``toy-a2c``, whose n-step returns V-trace reproduces on-policy. Learns to
    >= 0.9 success on seed 0 (tests/test_impala.py). On Ray runners, run it with
    ``--collector.prefetch false``: its updates are large for its 80-sample unrolls, and the
    extra update of policy lag that prefetch puts on every unroll left goals unlearned (2
    runners, seeds 0-2: 0.50 / 0.70 / 1.00 success with prefetch, 1.00 / 1.00 / 1.00 without;
    tests/test_ray_collector.py)."""
    return TrainConfig(
        preset="toy-impala",
        total_steps=120_000,
        warmup_steps=0,
        env=EnvConfig(name="toy-reach-discrete", num_tasks=4, envs_per_task=4,
                      max_episode_steps=50),
        agent=AgentConfig(
            name="mtimpala",
            actor_hidden=[64, 64],
            critic_hidden=[64, 64],
            gamma=0.99,
            grad_clip=0.5,
            popart=True,
            popart_beta=1e-2,
            impala=IMPALAConfig(n_steps=5, rho_bar=1.0, c_bar=1.0, vtrace_lambda=1.0,
                                ent_coef=0.01, vf_coef=1.0, lr=2e-3, optimizer="rmsprop",
                                optim_eps=1e-5, rmsprop_alpha=0.99),
        ),
        eval=EvalConfig(every=40_000, episodes_per_task=10),
        log=LogConfig(every=4_000),
        checkpoint=CheckpointConfig(every=40_000, keep_last=2),
    )


def _atari_impala(name: str, games: list[str], envs_per_task: int) -> TrainConfig:
    """MT-IMPALA with PopArt on several Atari games: PopArt-IMPALA (Hessel et al. 2019) with
    the learner settings of IMPALA's Atari experiments (Espeholt et al. 2018, Table G.1):
    unroll length 20, γ 0.99, baseline loss scaling 0.5, entropy 0.01, RMSProp lr 6e-4,
    momentum 0, ε 0.01, global gradient-norm clip 40; RMSProp decay 0.99 (not in Table G.1:
    the default of the reference code, deepmind/scalable_agent experiment.py); ρ̄ = c̄ = 1
    (λ = 1) as in the paper's Sec. 5.2.2; the full 18-action set shared by all games, as the
    paper's multi-task Atari agent (Appendix G); PopArt β 3e-4 per game, rewards unclipped.
    Env and evaluation as ``atari6-a2c-popart`` (ALE v5: sticky actions 0.25, up to 30 no-ops,
    frame skip 4 with max-pooling, 84×84 grayscale, 4-frame stacks, 108k-frame episodes).

    The paper sums its loss over batch (32) and time (20); mtrl averages per task, so its
    gradients are 1/640 of the paper's. RMSProp is invariant to that scale except for ε, which
    TensorFlow adds *inside* the square root: the paper's floor √0.01 on the summed gradient is
    √0.01/640 = 1.5625e-4 on the mean gradient with PyTorch's ε outside the root; likewise the
    clip threshold 40 becomes 40/640 = 0.0625.

    Where mtrl differs: one synchronous learner: in process the behaviour policy is the current
    policy (ρ = c = 1); with ``--collector ray`` the env runners act with the weights of the last
    publish (``collector.publish_every`` updates of lag at most) and hand their unrolls over
    synchronously, instead of IMPALA's asynchronous actors and queue; the Nature CNN torso
    shared by a linear policy head on [features, one_hot(game)] and a per-game PopArt value
    head, instead of the deep ResNet + LSTM torso (and the policy sees the game id, which
    PopArt-IMPALA's does not); no linear annealing of the learning rate and no population
    based training of lr, entropy, ε and clip; ALE v5 protocol (sticky actions, no
    end-of-episode at a life loss; IMPALA: no sticky actions, life loss ends an episode); a
    budget of 10M agent steps (40M frames) per game, as ``atari6-a2c-popart`` (the papers
    train 200M frames per game)."""
    n = len(games)
    return TrainConfig(
        preset=name,
        total_steps=10_000_000 * n,
        warmup_steps=0,
        env=EnvConfig(name="atari", tasks=list(games), envs_per_task=envs_per_task,
                      clip_rewards=False),
        agent=AgentConfig(
            name="mtimpala",
            actor_hidden=[],
            critic_hidden=[],
            gamma=0.99,
            grad_clip=40.0 / (32 * 20),
            popart=True,
            popart_beta=3e-4,
            impala=IMPALAConfig(n_steps=20, rho_bar=1.0, c_bar=1.0, vtrace_lambda=1.0,
                                ent_coef=0.01, vf_coef=0.5, lr=6e-4, optimizer="rmsprop-tf",
                                optim_eps=0.01 ** 0.5 / (32 * 20), rmsprop_alpha=0.99),
        ),
        eval=EvalConfig(every=1_000_000 * n, episodes_per_task=3, deterministic=False),
        log=LogConfig(every=2_000 * n),
        checkpoint=CheckpointConfig(every=500_000 * n, keep_last=3),
    )


def _atari6_impala() -> TrainConfig:
    from mtrl.envs.atari import ATARI6

    return _atari_impala("atari6-impala-popart", list(ATARI6), envs_per_task=8)


def _atari57_impala() -> TrainConfig:
    from mtrl.envs.atari import ATARI57

    return _atari_impala("atari57-impala-popart", list(ATARI57), envs_per_task=2)


def _toy_distral() -> TrainConfig:
    """Distral (Teh et al. 2017) on A2C on the 4-goal *discrete* point-reach toy, one column:
    task policies and values are separate 64-64 MLPs per task (``separate``), π0 is a shared
    64-64 policy of the observation only (it cannot tell the goals apart, so it learns their
    common part), α = 0.5, β = 20, PopArt on the task values; the rest as ``toy-a2c`` without
    the A2C entropy bonus (Distral's reward carries the entropy and KL terms).

    Task-policy success over seeds 0/1/2 here: 0.975 / 0.975 / 1.0. The two-column variant
    (``--agent.distral.columns 2``) reached 0.70 / 0.85 / 0.95: on this toy the goals are each
    other's traps, so the shared logits h that two columns add to every task policy pull the
    tasks against each other."""
    cfg = _toy_a2c()
    cfg.preset = "toy-distral"
    a = cfg.agent
    a.name = "distral-a2c"
    a.actor_arch = "separate"
    a.critic_arch = "separate"
    a.popart = True
    a.a2c.ent_coef = 0.0
    a.distral.alpha = 0.5
    a.distral.beta = 20.0
    a.distral.columns = 1
    return cfg


def _toy_distral_sac() -> TrainConfig:
    """Distral on SAC (one column) on the 4-goal continuous point-reach toy: separate task
    actors and critics (``separate``), a shared π0 of the observation only, c_KL = α/β with
    α = 0.5, β = 20, and each task's entropy weight tuned by SAC (``agent.distral.tune_entropy``);
    otherwise ``toy-mtsac``."""
    cfg = _toy_mtsac()
    cfg.preset = "toy-distral-sac"
    a = cfg.agent
    a.name = "distral-sac"
    a.actor_arch = "separate"
    a.critic_arch = "separate"
    a.distral.alpha = 0.5
    a.distral.beta = 20.0
    return cfg


def _mt10_distral() -> TrainConfig:
    """Distral on SAC on Meta-World MT10, as the SAC-based Distral of facebookresearch/mtrl:
    one 400-400 actor and twin critic per task (``separate``), a shared 400-400 distilled policy
    π0 of the observation only, KL weight c_KL = α/β = 0.005 (α = 0.5, β = 100), each task's
    entropy weight tuned by SAC (target entropy −|A|); the Meta-World+ MT-SAC settings
    otherwise (batch 1280, Adam 3e-4, γ 0.99, τ 0.005, Q clip 5000, 20M env steps). Evaluation
    reports the task policies (eval/...) and π0 (eval/pi0/...)."""
    cfg = _metaworld_mtsac("mt10")
    cfg.preset = "mt10-distral"
    a = cfg.agent
    a.name = "distral-sac"
    a.actor_arch = "separate"
    a.critic_arch = "separate"
    a.distral.alpha = 0.5
    a.distral.beta = 100.0
    return cfg


def _atari6_distral() -> TrainConfig:
    """Distral (two columns) on A2C on the six Atari games of ``atari6-a2c``: π0 (its own Nature
    CNN and a linear head, no game input) gives the logits h; the task columns f_i are one
    linear head per game (``separate``) on the task network's Nature CNN, which the six games
    share (one CNN per game would multiply the CNN cost by six); task logits α h + β f_i with
    α = 0.5, β = 100; rewards clipped to their sign (the regularizer is in reward units, so
    the games need a common reward scale), no PopArt, no A2C entropy bonus; A2C settings of
    ``atari6-a2c`` otherwise."""
    cfg = _atari6(False)
    cfg.preset = "atari6-distral"
    a = cfg.agent
    a.name = "distral-a2c"
    a.actor_arch = "separate"
    a.critic_arch = "separate"
    a.a2c.ent_coef = 0.0
    a.distral.alpha = 0.5
    a.distral.beta = 100.0
    a.distral.columns = 2
    a.distral.pi0_hidden = []
    return cfg


def _toy_distill() -> TrainConfig:
    """Policy distillation (Rusu et al. 2016) of one single-task teacher per goal into one
    multi-task student on the 4-goal *discrete* point-reach toy: KL(teacher ‖ student) at
    temperature 1 (policy teachers; 0.01 for DQN teachers), states collected by teacher or
    student with probability ½ each per env step (DAgger-style mix), a 64-64 MLP student on
    [obs, one_hot(task)], Adam 1e-3, batch 256, 20k env steps. Teachers: ``runs/toy-teachers/
    goal-<k>.zip`` by default, as ``python experiments/train_sb3_teachers.py --discrete
    --num-tasks 4 --out runs/toy-teachers`` writes them (or ``--teachers DIR``)."""
    return TrainConfig(
        preset="toy-distill",
        total_steps=20_000,
        warmup_steps=1_000,
        env=EnvConfig(name="toy-reach-discrete", num_tasks=4, envs_per_task=2,
                      max_episode_steps=50),
        agent=AgentConfig(
            name="distill",
            actor_hidden=[64, 64],
            critic_hidden=[64, 64],
            batch_size=256,
            distill=DistillConfig(teachers=["runs/toy-teachers"], loss="kl", data="mix",
                                  teacher_prob=0.5, lr=1e-3),
        ),
        replay=ReplayConfig(capacity=50_000),
        eval=EvalConfig(every=10_000, episodes_per_task=20),
        log=LogConfig(every=1_000),
        checkpoint=CheckpointConfig(every=10_000, keep_last=2),
    )


PRESETS: dict[str, Callable[[], TrainConfig]] = {
    "toy-mtsac": _toy_mtsac,
    "mt10-mtsac": lambda: _metaworld_mtsac("mt10"),
    "mt25-mtsac": lambda: _metaworld_mtsac("mt25"),
    "mt50-mtsac": lambda: _metaworld_mtsac("mt50"),
    "mt10-mtsac-large": lambda: _mtsac_large("mt10"),
    "mt50-mtsac-large": lambda: _mtsac_large("mt50"),
    "toy-pcgrad-sac": _toy_pcgrad,
    "mt10-pcgrad-sac": lambda: _pcgrad("mt10"),
    "mt50-pcgrad-sac": lambda: _pcgrad("mt50"),
    "mt10-gradnorm-sac": lambda: _gradnorm("mt10"),
    "mt10-popart-sac": lambda: _popart("mt10"),
    "toy-popart-sac": _toy_popart,
    "mt10-mhsac": _mhsac,
    "mt10-soft-modular": lambda: _soft_modular("mt10"),
    "mt50-soft-modular": lambda: _soft_modular("mt50"),
    "mt10-routing": _routing,
    "mt10-moe": _moe,
    "mt10-moore": lambda: _moore("mt10"),
    "mt50-moore": lambda: _moore("mt50"),
    "mt10-paco": lambda: _paco("mt10"),
    "mt50-paco": lambda: _paco("mt50"),
    "toy-a2c": _toy_a2c,
    "mt10-a2c": _mt10_a2c,
    "atari6-a2c-popart": lambda: _atari6(True),
    "atari6-a2c": lambda: _atari6(False),
    "atari57-a2c-popart": _atari57,
    "toy-distral": _toy_distral,
    "toy-distral-sac": _toy_distral_sac,
    "toy-ppo": _toy_ppo,
    "mt10-ppo": _mt10_ppo,
    "atari6-ppo-popart": _atari6_ppo_popart,
    "toy-impala": _toy_impala,
    "atari6-impala-popart": _atari6_impala,
    "atari57-impala-popart": _atari57_impala,
    "mt10-distral": _mt10_distral,
    "atari6-distral": _atari6_distral,
    "toy-distill": _toy_distill,
}

DESCRIPTIONS: dict[str, str] = {
    "toy-mtsac": "MT-SAC on the 4-goal point-reach toy (no simulator); ~3 min on 2 CPU cores",
    "mt10-mtsac": "MT-SAC on Meta-World MT10, Meta-World+ baseline hyperparameters (20M steps)",
    "mt25-mtsac": "MT-SAC on Meta-World MT25, Meta-World+ baseline hyperparameters (50M steps)",
    "mt50-mtsac": "MT-SAC on Meta-World MT50, Meta-World+ baseline hyperparameters (100M steps)",
    "mt10-mtsac-large": "MT-SAC scaled to PaCo's size (McLean et al. 2025): 3x885 multihead, MT10",
    "mt50-mtsac-large": "MT-SAC scaled to PaCo's size (McLean et al. 2025): 3x1805 multihead, MT50",
    "toy-pcgrad-sac": "MT-SAC + PCGrad (actor and critic) on the 4-goal point-reach toy",
    "mt10-pcgrad-sac": "MT-SAC + PCGrad (Yu et al. 2020) on actor and critic, Meta-World MT10",
    "mt50-pcgrad-sac": "MT-SAC + PCGrad (Yu et al. 2020) on actor and critic, Meta-World MT50",
    "mt10-gradnorm-sac": "MT-SAC with GradNorm-balanced critic losses (Chen et al. 2018), MT10",
    "mt10-popart-sac": "MT-SAC with PopArt-normalized critics (Hessel et al. 2019), MT10",
    "toy-popart-sac": "MT-SAC + PopArt on the toy with task rewards scaled by 1/10/100/1000",
    "mt10-mhsac": "MT-SAC with a shared trunk and one output head per task (MH-SAC), MT10",
    "mt10-soft-modular": "Soft Modularization (Yang et al. 2020), shallow 2x2 network, MT10",
    "mt50-soft-modular": "Soft Modularization (Yang et al. 2020), deep 4x4 network, MT50",
    "mt10-routing": "Routing networks (Rosenbaum et al. 2018), REINFORCE-trained routers, MT10",
    "mt10-moe": "CARE-style mixture of 4 experts with task attention (Sodhani et al. 2021), MT10",
    "mt10-moore": "MOORE (Hendawy et al. 2024), 4 orthogonal experts + task heads, MT10",
    "mt50-moore": "MOORE (Hendawy et al. 2024), 6 orthogonal experts + task heads, MT50",
    "mt10-paco": "PaCo (Sun et al. 2022): θ_τ = Φ w_τ, K = 5, loss maskout + w-reset, MT10",
    "mt50-paco": "PaCo (Sun et al. 2022): θ_τ = Φ w_τ, K = 20, loss maskout + w-reset, MT50",
    "toy-a2c": "MT-A2C + PopArt on the 4-goal discrete point-reach toy; ~1 min on 2 CPU cores",
    "mt10-a2c": "MT-A2C + PopArt with a Gaussian policy on Meta-World MT10 (on-policy baseline)",
    "atari6-a2c-popart": "MT-A2C + PopArt (Hessel et al. 2019), unclipped rewards, 6 Atari games",
    "atari6-a2c": "MT-A2C without PopArt, sign-clipped rewards, the same 6 Atari games",
    "atari57-a2c-popart": "MT-A2C + PopArt on all 57 Atari-57 games, 2 envs per game",
    "toy-distral": "Distral (Teh et al. 2017) on A2C, 4-goal discrete point-reach toy; ~11 s",
    "toy-distral-sac": "Distral on SAC (separate task actors/critics + shared π0), toy",
    "toy-ppo": "MT-PPO + PopArt on the 4-goal discrete point-reach toy; ~1 min on 2 CPU cores",
    "mt10-ppo": "MT-PPO on Meta-World MT10, Meta-World+ MTPPO hyperparameters (20M steps)",
    "atari6-ppo-popart": "MT-PPO + PopArt (Schulman et al. 2017 Atari settings), 6 Atari games",
    "toy-impala": "MT-IMPALA (V-trace) + PopArt, 4-goal discrete point-reach toy (Ray runners: "
                  "--collector ray)",
    "atari6-impala-popart": "PopArt-IMPALA (Hessel et al. 2019), 6 Atari games, unclipped "
                            "rewards; --collector ray: remote actors",
    "atari57-impala-popart": "PopArt-IMPALA, all 57 Atari-57 games, 2 envs per game; "
                             "--collector ray: remote actors",
    "mt10-distral": "Distral on SAC: per-task SAC policies regularized toward a shared π0, MT10",
    "atari6-distral": "Distral 2-column on A2C, 6 Atari games, sign-clipped rewards",
    "toy-distill": "Policy distillation of per-goal teachers (e.g. SB3) into one student, toy",
}


def get_preset(name: str) -> TrainConfig:
    """A fresh config for preset ``name``; unknown names list the valid ones."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return PRESETS[name]()
