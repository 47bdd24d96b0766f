"""LocalHub: a local server speaking the Hugging Face Hub's HTTP API to the real ``huggingface_hub``
client (repos, LFS, commits, refs, ``/resolve`` with ranges), with fault injection and a request log,
for the tests and the offline demo. How to point a client at it, and how it behaves: docs/local-hub.md.
"""

from apto_release.testing.hub.cards import validate_card_metadata, validate_card_yaml
from apto_release.testing.hub.server import LFS_THRESHOLD, LocalHub, RequestRecord

__all__ = ["LFS_THRESHOLD", "LocalHub", "RequestRecord", "validate_card_metadata", "validate_card_yaml"]
