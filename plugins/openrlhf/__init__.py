"""What runs inside OpenRLHF 0.11.2 on a Ray GPU cluster.

- `cli_args`: OpenRLHF's own argument parser (taken from the installed module) plus `--coreward.*`.
- `rows`: the prompt-file row and label layout shared by the launcher and the controller.
- `reward_func`: the per-sample reward file for `--reward.remote_url` (reference score or 0).
- `relabel`: OpenRLHF samples <-> `RolloutBatch`; writes the method's rewards back.
- `reward_actors`: a pool of Ray actors that score a step's problems in parallel.
- `teacher`: the fp32 EMA shadow on ZeRO-2/3 parameters and the weight swap.
- `actor`, `samples`, `trainer`: subclasses of OpenRLHF's policy actor, sample generator and controller.
- `entry`: `python -m coreward_plugins.openrlhf.entry`, the Ray job's entry point.

Only `cli_args`, `rows`, `reward_func`, `relabel`, `reward_actors` and `teacher` import without vLLM;
the others need OpenRLHF's GPU stack (or, in tests only, the import stubs in tests/stubs).
"""
