"""coreward_plugins: the Co-rewarding method, independent of any training engine.

Engines (the local engine, OpenRLHF) hand a step's rollouts to a method as plain data
(`RolloutBatch`) and get back one reward per response. Nothing here imports
`coreward_cli`, torch tensors of an engine, or Ray actors.
"""
