"""The embedded assistant world: prompts, simulated responses, the gold judge and the data stage.

A small, seeded, English-like world (33 benign topics, 9 harmful request categories, about a
thousand distinct words) in which a tiny GPT-2 learns to answer on a CPU in minutes, and in which a
gold judge (`rlhf.world.judge`) says how helpful and how safe any answer is, in the spirit of the
gold-reward-model setup of Gao et al. (2022). See docs/world.md.

Only the data stage (to label preferences) and evaluation call the judge; training code never does.
"""
