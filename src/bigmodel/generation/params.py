"""What a caller may ask of one generation, validated once at the boundary (CLI, HTTP, Python)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bigmodel.errors import BigModelError

MAX_STOPS = 16  # OpenAI takes 4; a few more for byte-level models, never thousands scanned per token
MAX_STOP_CHARS = 256
DEFAULT_MAX_TOKENS = 128


class GenerationParams(BaseModel):
    """Sampling settings. ``max_tokens`` None: up to ``DEFAULT_MAX_TOKENS`` or the context's end.
    ``temperature`` 0 is greedy decoding; ``top_k`` 0 and ``top_p`` 1 switch those filters off."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # "5" or true is no count

    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)] = 1.0
    top_p: Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)] = 1.0
    top_k: Annotated[int, Field(ge=0)] = 0
    stop: tuple[str, ...] = ()
    seed: Annotated[int, Field(ge=0, lt=2**63)] | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _stops(cls, v: Any) -> Any:
        if v is None:
            return ()
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list | tuple):
            raise ValueError("must be a string or a list of strings")
        if len(v) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop strings (got {len(v)})")
        for s in v:
            if not isinstance(s, str) or not s:
                raise ValueError("each stop must be a non-empty string")
            if len(s) > MAX_STOP_CHARS:
                raise ValueError(f"a stop string is longer than {MAX_STOP_CHARS} characters")
        return tuple(v)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @classmethod
    def parse(cls, values: dict[str, Any], where: str = "parameters") -> GenerationParams:
        """Validated params from a JSON-ish dict; ``BigModelError`` naming the key otherwise."""
        try:
            return cls.model_validate(values)
        except ValidationError as err:
            e = err.errors()[0]
            key = ".".join(str(p) for p in e["loc"]) or where
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = f"unknown parameter (known: {', '.join(cls.model_fields)})"
            raise BigModelError(f"{where}.{key}: {msg}") from None

    def budget(self, prompt_tokens: int, context: int) -> int:
        """How many tokens this request may generate, or ``BigModelError`` when the prompt (plus an
        explicit ``max_tokens``) does not fit the model's context."""
        if prompt_tokens >= context:
            raise BigModelError(
                f"prompt of {prompt_tokens} bytes does not fit the model's context of {context} "
                "(it needs room for at least one new byte)"
            )
        room = context - prompt_tokens
        if self.max_tokens is None:
            return min(DEFAULT_MAX_TOKENS, room)
        if self.max_tokens > room:
            raise BigModelError(
                f"max_tokens {self.max_tokens} + prompt of {prompt_tokens} bytes exceeds the model's "
                f"context of {context} (at most {room} new tokens for this prompt)"
            )
        return self.max_tokens
