"""Which event fields hold personal data, and what a reader sees once it is erased.

Writers store these fields sealed with their subject's key (infra/vault.py: a sealed value
names its subject, so a field needs no separate owner). Readers that need the clear text,
projections and the login, open them; once the key is destroyed they read `ERASED`.
Everything else in the log (ids, times, amounts, channel names, auction listings) is not
one person's data and stays readable.
"""

from __future__ import annotations

from typing import Final

# What an erased field reads as. Usernames cannot contain brackets, so it never collides
# with one; read models store NULL in its place.
ERASED: Final = "[erased]"

# Event type -> its personal fields. Reference messages by other users (an `@name` in
# someone else's text) are that author's data and stay with it.
PERSONAL: Final[dict[str, tuple[str, ...]]] = {
    "UsernameClaimed": ("username",),
    "UserRegistered": ("username", "display_name", "password_hash"),
    "PasswordChanged": ("password_hash",),
    "MessageSent": ("text",),
    "MessageEdited": ("text",),
}


def erased(value: str | None) -> str | None:
    """A field's value for a read model: None when it was erased."""
    return None if value == ERASED else value
