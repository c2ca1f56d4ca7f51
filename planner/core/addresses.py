"""Resource addresses: ``model.<name>``, ``environment.<name>``, ``service.<name>``."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import MlopsError

KINDS = ("model", "environment", "service")


@dataclass(frozen=True)
class Address:
    """A stable, printable, sortable name for one resource (kinds sort in dependency order)."""

    kind: str
    name: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise MlopsError(f"unknown resource kind {self.kind!r} (expected one of {', '.join(KINDS)})")

    def __str__(self) -> str:
        return f"{self.kind}.{self.name}"

    def __lt__(self, other: Address) -> bool:
        return (KINDS.index(self.kind), self.name) < (KINDS.index(other.kind), other.name)

    @classmethod
    def parse(cls, text: str) -> Address:
        kind, sep, name = text.partition(".")
        if not sep or not name:
            raise MlopsError(f"invalid address {text!r} (expected KIND.NAME, e.g. service.diabetes-api)")
        return cls(kind, name)
