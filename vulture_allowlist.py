"""What `vulture coreward_cli plugins vulture_allowlist.py` must not call dead (run by .ci/run).

Each name is used, but not where vulture can see it: called by name by a framework, read by
tests and benchmarks only, or set on a library object for its own use.
"""
# ruff: noqa: B018, F821

# click verbs, loaded by name from coreward_cli.main.VERBS; click.Group hooks
doctor, eval_cmd, export, validate, show, new, list_, rephrase
_.list_commands, _.get_command, _.format_commands
# attributes set on rich, tokenizers, transformers and ANTLR objects, which read them
_.no_wrap, _.overflow, _.min_width, _.padding_side, _.pre_tokenizer, _.decoder, _.predictionMode
# methods registered by name (coreward_plugins.methods.BUILTIN_METHODS, entry points)
CoRewardingI, CoRewardingII, CoRewardingIII, Entropy, GroundTruth, MajorityVote
RandomReward, SelfCertainty
# Ray actor methods OpenRLHF and our controller call by name; OpenRLHF's hook signatures
_.set_teacher_decay, _.broadcast_teacher_to_vllm, _.teacher_in, _.teacher_out, _.empty_cache
_.generate_samples, reward_func, unused
# counters and helpers that benchmarks and tests read (MatchStats, PoolStats, the verify pool)
equal_calls, decided_by_key, guarded, cache_hits, verify_calls, timeouts, busy, restarts
_.equal_calls, _.decided_by_key, _.guarded, _.cache_hits, _.verify_calls, _.timeouts, _.busy
_.restarts, _.wait_warm, _.worker_pids, restart_shared_pool
second_stage, ll_cpu_s, two_stage_cpu_s, read_both_ways
# OpenRLHF's PPO trainer logs through the attribute we set; the swap test reads the backup size
_.wandb_logger, _.backup_bytes
# rephrase.Check fields, written to rephrasings.jsonl through asdict and read back by key
_.original_label, _.rephrased_label
# report_figures.Figure.svg: where the SVG of a panel was written (kept beside .png for callers)
_.svg
