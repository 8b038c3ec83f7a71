"""Every event type the events package defines can be stored and read back."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import msgspec

import events
from events.registry import EVENT_TYPES, SCHEMA_VERSIONS, UnknownEventType, decode


def defined_event_types() -> set[str]:
    found = set()
    for info in pkgutil.iter_modules(events.__path__):
        module = importlib.import_module(f"events.{info.name}")
        for name, obj in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(obj, msgspec.Struct)
                and obj.__module__ == module.__name__
                and obj.__struct_config__.tag
            ):
                found.add(name)
    return found


def test_every_tagged_event_is_registered() -> None:
    assert defined_event_types() == set(EVENT_TYPES) == set(SCHEMA_VERSIONS)


def test_an_unknown_type_is_refused() -> None:
    try:
        decode("NoSuchEvent", 1, b"{}")
    except UnknownEventType:
        return
    raise AssertionError("decoded an unknown type")
