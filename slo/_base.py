"""The base of every model in the library."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, Strict
from pydantic.alias_generators import to_camel

Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]
"""A number that is not coerced from text or a boolean (``target: '0.99'`` is a mistake, and
the published JSON Schema says "number")."""


class Model(BaseModel):
    """Unknown fields rejected, immutable, camelCase in files (snake_case in Python)."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
    )
