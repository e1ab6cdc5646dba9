"""Typed access to an adapter's ``[delivery.<name>]`` table with errors naming the key."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError

_SECRET_HINTS = ("password", "key", "token", "secret")


class Config:
    """Wraps the adapter's settings; every getter names ``relmail.toml [delivery.X]`` on error."""

    def __init__(self, adapter: str, data: dict[str, Any]):
        self.adapter = adapter
        self.data = data

    @property
    def where(self) -> str:
        return f"relmail.toml [delivery.{self.adapter}]" if self.adapter else "relmail.toml [delivery]"

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def _typed(self, key: str, kinds: tuple[type, ...], default: Any, label: str) -> Any:
        if key not in self.data:
            if default is ...:
                raise ConfigError(f"{self.where}: missing key '{key}'")
            return default
        value = self.data[key]
        if isinstance(value, bool) and bool not in kinds:
            raise ConfigError(f"{self.where}: key '{key}' must be {label}, got {value!r}")
        if not isinstance(value, kinds):
            raise ConfigError(f"{self.where}: key '{key}' must be {label}, got {type(value).__name__} {value!r}")
        return value

    def string(self, key: str, default: Any = ...) -> str:
        return self._typed(key, (str,), default, "a string")

    def boolean(self, key: str, default: Any = ...) -> bool:
        return self._typed(key, (bool,), default, "true or false")

    def integer(self, key: str, default: Any = ..., minimum: int | None = None) -> int:
        value = self._typed(key, (int,), default, "an integer")
        if value is not None and minimum is not None and value < minimum:
            raise ConfigError(f"{self.where}: key '{key}' must be at least {minimum}, got {value}")
        return value

    def number(self, key: str, default: Any = ..., minimum: float | None = 0) -> float:
        value = self._typed(key, (int, float), default, "a number")
        if value is not None and minimum is not None and value < minimum:
            raise ConfigError(f"{self.where}: key '{key}' must be at least {minimum}, got {value}")
        return value

    def choice(self, key: str, options: Sequence[str], default: Any = ...) -> str:
        value = self.string(key, default)
        if value not in options:
            raise ConfigError(f"{self.where}: key '{key}' must be one of {', '.join(options)}; got {value!r}")
        return value

    def public(self) -> dict[str, Any]:
        """Settings without anything that looks like a secret."""
        return {k: v for k, v in self.data.items() if not any(h in k.lower() for h in _SECRET_HINTS) or k == "key_file"}
