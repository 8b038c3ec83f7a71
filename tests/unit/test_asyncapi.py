"""docs/asyncapi.yaml is what infra.asyncapi builds from the code, and covers every event."""

from __future__ import annotations

from pathlib import Path

import yaml

from events.registry import EVENT_TYPES
from infra.asyncapi import CATEGORIES, document

DOC = Path(__file__).parents[2] / "docs" / "asyncapi.yaml"


def test_every_event_type_has_its_category_once() -> None:
    listed = [name for names in CATEGORIES.values() for name in names]
    assert sorted(listed) == sorted(EVENT_TYPES)


def test_the_committed_document_is_up_to_date() -> None:
    committed = yaml.safe_load(DOC.read_text())
    assert committed == document(), "run: python -m infra.asyncapi > docs/asyncapi.yaml"


def test_the_document_names_the_subjects_and_headers() -> None:
    doc = document()
    assert doc["asyncapi"] == "2.6.0"
    assert {"events.{category}.{type}", "gateway.presence", "gateway.typing"} <= set(
        doc["channels"]
    )
    headers = doc["components"]["schemas"]["EventHeaders"]
    assert set(headers["required"]) == {"Nats-Msg-Id", "Hubbub-Position", "Hubbub-Prev"}
    assert "traceparent" in headers["properties"]
    messages = doc["channels"]["events.{category}.{type}"]["subscribe"]["message"]["oneOf"]
    assert len(messages) == len(EVENT_TYPES)
