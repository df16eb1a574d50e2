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

# The node's default quorums (scripts/schemathesis starts `dynakv dev`, whose defaults
# these are). `pr` may not exceed the read's `r`, nor `pw` the write's `w` (given or
# default): a bound between two parameters that OpenAPI cannot state. The served
# description bounds `pr` by the default `r` (and `pw` by the default `w`), which is
# exact when `r` is not given; the parameters' descriptions say the rest. Two kinds of
# request the description gets wrong are not generated: a `pr` above a smaller `r` given
# with it (allowed by the description, refused 400), and a `pr` above the default `r`
# with an `r` at least as large (outside the description, accepted).
DEFAULT_QUORUM = {"r": 2, "w": 2}


def _int(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


@schemathesis.hook
def filter_query(ctx, query):
    if not query:
        return True
    for primary, whole in (("pr", "r"), ("pw", "w")):
        p = _int(query.get(primary))
        given = _int(query.get(whole))
        q = given if given is not None else DEFAULT_QUORUM[whole]
        if p is None:
            continue
        if given is not None and p > q:
            return False
        if given is not None and p > DEFAULT_QUORUM[whole] and q >= p:
            return False
    return True
