"""The WebSocket gateway: live frames from the feed, presence and typing (hubbub gateway)."""
