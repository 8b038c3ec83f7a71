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


def test_a_version_1_auction_opened_is_upcast() -> None:
    from events.auction import AuctionOpened

    v1 = (b'{"type":"AuctionOpened","auction_id":"a","seller_id":"s","title":"t",'
          b'"currency":"JPY","starting_price":1500,"min_increment":100,'
          b'"ends_at":"2030-01-01T00:00:00Z","opened_at":"2029-12-31T00:00:00Z"}')  # fmt: skip
    event = decode("AuctionOpened", 1, v1)
    assert isinstance(event, AuctionOpened)
    assert (event.currency, event.currency_digits, event.starting_price) == ("JPY", 0, 1500)
    eur = decode("AuctionOpened", 1, v1.replace(b"JPY", b"EUR"))
    assert isinstance(eur, AuctionOpened) and eur.currency_digits == 2


def test_a_version_2_auction_opened_round_trips() -> None:
    from events.auction import AuctionOpened
    from events.registry import encode

    opened = decode("AuctionOpened", 1, b'{"auction_id":"a","seller_id":"s","title":"t",'
                    b'"currency":"BHD","starting_price":1,"min_increment":1,'
                    b'"ends_at":"2030-01-01T00:00:00Z","opened_at":"2029-12-31T00:00:00Z"}')  # fmt: skip
    name, version, data = encode(opened)
    assert (name, version) == ("AuctionOpened", 2)
    again = decode(name, version, data)
    assert isinstance(again, AuctionOpened) and again == opened and again.currency_digits == 3


def test_every_older_version_has_its_upcaster_and_no_future_version_decodes() -> None:
    from events.registry import UPCASTERS

    for name, current in SCHEMA_VERSIONS.items():
        for version in range(1, current):
            assert (name, version) in UPCASTERS, (name, version)
    for bad in (0, SCHEMA_VERSIONS["AuctionOpened"] + 1):
        try:
            decode("AuctionOpened", bad, b"{}")
        except UnknownEventType:
            continue
        raise AssertionError(f"decoded version {bad}")
