"""Backends for `coreward eval` and `coreward rephrase`: vLLM where it is installed (GPU),
transformers (`coreward_cli.sampling.sample`, the engine's own sampler) otherwise.

Both take `Prompt`s and return, per prompt, n `Completion`s (decoded text without special
tokens, and the number of generated tokens), so results do not depend on which backend made
them. Temperature 0 means greedy.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Protocol

from coreward_cli.errors import UserError, one_line
from coreward_cli.host_memory import keep_freed_memory
from coreward_cli.models import ModelSource, load_causal_lm, load_tokenizer, pick_device
from coreward_cli.prompts import Prompt


@dataclass(frozen=True)
class Completion:
    text: str
    n_tokens: int


@dataclass(frozen=True)
class SamplingConfig:
    n: int = 1
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 3072
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


class Backend(Protocol):
    name: str
    tokenizer: Any

    def generate(
        self, prompts: list[Prompt], sampling: SamplingConfig, seed: int
    ) -> list[list[Completion]]:
        """n completions per prompt, drawn from `seed`."""
        ...


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def open_backend(
    source: ModelSource, kind: str = "auto", device: str = "auto", dtype: str = "auto"
) -> Backend:
    """vLLM when asked for or (auto) when importable with a GPU; transformers otherwise."""
    if kind == "auto":
        kind = (
            "vllm"
            if vllm_available() and pick_device(device).startswith("cuda") and not source.gguf_file
            else "hf"
        )
    if kind == "vllm":
        if not vllm_available():
            raise UserError(
                "--backend vllm needs vLLM installed (pip install vllm on a GPU machine); or use --backend hf"
            )
        return VllmBackend(source, dtype)
    if kind == "hf":
        return HfBackend(source, device, dtype)
    raise UserError(f"backend '{kind}' is not one of auto, vllm, hf")


class HfBackend:
    """transformers: batched prompts with left padding, seeded sampling, CPU or GPU."""

    name = "hf"

    def __init__(self, source: ModelSource, device: str = "auto", dtype: str = "auto") -> None:
        keep_freed_memory()  # decoding steps reuse their pages (host_memory says why)
        self.device = pick_device(device)
        self.tokenizer = load_tokenizer(source)
        self.model = load_causal_lm(source, self.device, dtype)

    def generate(
        self, prompts: list[Prompt], sampling: SamplingConfig, seed: int
    ) -> list[list[Completion]]:
        import torch

        from coreward_cli.sampling import sample

        n = 1 if sampling.greedy else sampling.n  # greedy: the n samples are the same response
        torch.manual_seed(seed)
        seqs = sample(
            self.model,
            self.tokenizer,
            prompts,
            n=n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_new_tokens=sampling.max_new_tokens,
            chunk=max(1, len(prompts)) * n,
        )
        lengths = seqs.response_mask.sum(-1).tolist()
        completions = [Completion(t, int(k)) for t, k in zip(seqs.texts, lengths)]
        groups = [completions[p * n : (p + 1) * n] for p in range(len(prompts))]
        return [g * sampling.n for g in groups] if n == 1 else groups


class VllmBackend:
    """vLLM offline inference; one `LLM` for the whole evaluation."""

    name = "vllm"

    def __init__(self, source: ModelSource, dtype: str = "auto") -> None:
        from vllm import LLM

        self.tokenizer = load_tokenizer(source)
        vllm_dtype = {"auto": "auto", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(
            dtype, dtype
        )
        try:
            self.llm = LLM(model=source.path, dtype=vllm_dtype, trust_remote_code=False)
        except Exception as exc:
            raise UserError(
                f"vLLM could not load {source.path} ({one_line(exc)}); try --backend hf"
            ) from exc

    def generate(
        self, prompts: list[Prompt], sampling: SamplingConfig, seed: int
    ) -> list[list[Completion]]:
        from vllm import SamplingParams

        params = SamplingParams(
            n=1 if sampling.greedy else sampling.n,
            temperature=max(sampling.temperature, 0.0),
            top_p=1.0 if sampling.greedy else sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            seed=seed,
        )
        # Tokenized here so both backends see the same ids (vLLM would add special tokens itself).
        token_prompts = [
            {
                "prompt_token_ids": self.tokenizer(
                    p.text, add_special_tokens=p.add_special_tokens
                ).input_ids
            }
            for p in prompts
        ]
        outputs = self.llm.generate(token_prompts, params, use_tqdm=False)
        results = []
        for out in outputs:
            group = [Completion(o.text, len(o.token_ids)) for o in out.outputs]
            results.append(group * sampling.n if sampling.greedy else group)
        return results
