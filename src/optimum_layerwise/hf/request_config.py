"""The transformers side of a request value: a config class whose arguments build the value and whose attributes
read (and, by replacing the value, write) its fields."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import inspect
from collections.abc import Sequence
from typing import Any


def reject_unknown_arguments(kwargs: dict[str, Any], config_class: type, method: str, known: Sequence[str]) -> None:
    """Refuse misspelled arguments of a config (`target_bit=2.0` would otherwise leave the default budget in place)
    and a `quant_method` other than `method`."""
    if kwargs.get("quant_method", method) != method:
        raise ValueError(f"`quant_method` of a {config_class.__name__} is {method!r}, got {kwargs['quant_method']!r}.")
    unknown = sorted(set(kwargs) - {"quant_method"})
    if unknown:
        name = unknown[0]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean `{close[0]}`?" if close else f" Known arguments: {', '.join(sorted(known))}."
        raise ValueError(
            f"{config_class.__name__} got unknown argument{'s' if len(unknown) > 1 else ''} {unknown}.{hint}"
        )


def signature_arguments(function: Any) -> tuple[str, ...]:
    """The keyword arguments of a config's `__init__`, and `quant_method`."""
    names = inspect.signature(function).parameters
    return (*(name for name in names if name not in ("self", "kwargs")), "quant_method")


class RequestConfigMixin:
    """Attributes of a config that wraps a frozen request value (`self.request`, of type `request_type`): reading a
    field of the request reads the value; setting one replaces the value by a checked copy. Subclasses set
    `request_type` and call [`set_request`] in `__init__`."""

    request_type: type

    @classmethod
    def request_fields(cls) -> frozenset[str]:
        return frozenset(item.name for item in dataclasses.fields(cls.request_type))

    def set_request(self, arguments: dict[str, Any]) -> None:
        """Build the request from `arguments` (the `__init__` arguments that are request fields)."""
        fields = self.request_fields()
        object.__setattr__(
            self, "request", self.request_type(**{name: value for name, value in arguments.items() if name in fields})
        )

    def __getattr__(self, name: str) -> Any:
        request = self.__dict__.get("request")
        if request is None or name not in self.request_fields():
            raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")
        return getattr(request, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if "request" in self.__dict__ and name in self.request_fields():
            object.__setattr__(self, "request", self.request.replace(**{name: value}))
        else:
            object.__setattr__(self, name, value)

    def with_plan(self, plan: Any) -> Any:
        """A copy of this config (same request, same tokenizer and calibration data) holding `plan`."""
        result = copy.copy(self)
        result.plan = plan
        result.post_init()
        return result
