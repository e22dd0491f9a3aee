"""The training loop and what it is made of: recipes (config), data, the stratified
sampler, rollout engines, rewards, the reference policy and KL, the update, checkpoints,
the run folder, the memory plan, and the :class:`~maple_rl.training.trainer.Trainer`."""
