"""Schemathesis hooks for dynakv (loaded through SCHEMATHESIS_HOOKS by scripts/schemathesis).

A causal context token is opaque: the description gives its syntax (`format:
dynakv-context`, base64url) but only tokens a node issued decode. Valid requests carry
tokens the cluster under test handed out (DYNAKV_CONTEXT_TOKENS, comma-separated);
invalid ones are still generated from the pattern and must be refused.
"""

import os

import schemathesis
from hypothesis import strategies as st

TOKENS = [t for t in os.environ.get("DYNAKV_CONTEXT_TOKENS", "").split(",") if t]
if not TOKENS:
    raise RuntimeError("DYNAKV_CONTEXT_TOKENS is empty: scripts/schemathesis collects them")

schemathesis.openapi.format("dynakv-context", st.sampled_from(TOKENS))
