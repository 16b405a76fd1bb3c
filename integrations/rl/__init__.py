"""Online reinforcement learning for the generator: DDPO, (Flow-)GRPO and DiffusionNFT, with any reward.

The algorithmic core, independent of run plumbing: the stochastic samplers with log-probabilities
(``StochasticSampler``), advantages computed over every process (``group_advantages``,
``PromptStatTracker``), the losses (``clipped_policy_loss``, ``gaussian_kl``, ``nft_loss``), one
policy update per batch of rollouts (``PolicyOptimizer``) and a minimal single-process loop
(``train_policy``). See ``docs/online_rl.md``.
"""
