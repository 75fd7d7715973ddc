"""Version of fnserve and of the wire protocol it speaks."""

__version__ = "0.1.0"

# Bumped whenever a wire message (fnserve.messages) changes incompatibly.
PROTOCOL_VERSION = 1
