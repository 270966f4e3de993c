"""Docker's multiplexed stream (an exec's or an attach's stdout and stderr on one
socket), split into its frames' payloads.

Each frame: one byte naming the stream (1 stdout, 2 stderr), three zero bytes, the
payload's length (4 bytes, big-endian), the payload. A payload is handed on in the
pieces it arrives in, so a large frame never waits whole in memory.
"""

from __future__ import annotations

HEADER = 8
STDOUT, STDERR = 1, 2


class FrameSplitter:
    """Feed it what the socket gives; get (stream, payload piece) in order."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.stream = STDOUT
        self.left = 0  # bytes of the current frame's payload still to come

    @property
    def inside_frame(self) -> bool:
        """Whether the stream stopped in the middle of a frame (its header or payload)."""
        return self.left > 0 or bool(self.buffer)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buffer += data
        pieces: list[tuple[int, bytes]] = []
        while self.buffer:
            if self.left == 0:
                if len(self.buffer) < HEADER:
                    break
                self.stream, self.left = self.buffer[0], int.from_bytes(self.buffer[4:HEADER], "big")
                del self.buffer[:HEADER]
                continue
            size = min(self.left, len(self.buffer))
            pieces.append((self.stream, bytes(self.buffer[:size])))
            del self.buffer[:size]
            self.left -= size
        return pieces
