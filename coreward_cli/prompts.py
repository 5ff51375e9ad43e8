"""What a model is asked: one prompt type, built one way for training, evaluation and rephrasing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Prompt:
    """The text a model continues, and whether tokenizing it adds the tokenizer's special tokens.

    Chat-templated text already carries them (False); a plain prompt gets the BOS etc. (True).
    """

    text: str
    add_special_tokens: bool


@dataclass(frozen=True)
class PromptStyle:
    """A system prompt and whether to use the tokenizer's chat template (when it has one)."""

    system_prompt: str | None
    chat_template: bool = True
    thinking: bool | None = (
        None  # passed as `enable_thinking` (Qwen3) unless None; others ignore it
    )

    def render(self, tokenizer: Any, question: str) -> Prompt:
        if self.chat_template and getattr(tokenizer, "chat_template", None):
            messages = (
                [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
            )
            messages.append({"role": "user", "content": question})
            switch = {} if self.thinking is None else {"enable_thinking": self.thinking}
            text = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, **switch
            )
            return Prompt(text, add_special_tokens=False)
        plain = f"{self.system_prompt}\n\n{question}" if self.system_prompt else question
        return Prompt(plain, add_special_tokens=True)
