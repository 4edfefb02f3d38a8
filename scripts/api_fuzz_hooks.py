"""schemathesis hooks for scripts/api-fuzz.sh (loaded through SCHEMATHESIS_HOOKS).

GraphQL cannot say in its schema that an `ID` is a UUID or that `first` is 1..100, and
schemathesis counts every error that names a resolver (`path`) as a server failure unless its
`extensions.code` is one it knows from Apollo. Shoal's GraphQL errors all carry a code
(docs/guide.md): `INTERNAL` is the server's own failure; every other code (`BAD_USER_INPUT`,
`INVALID_INPUT`, `NOT_FOUND`, `CONFLICT`, the domain's rejections) is the caller's input or the
state of a job refused. So the GraphQL run replaces schemathesis' `not_a_server_error` with
`shoal_graphql_no_server_error` below, which fails on a 5xx, on `INTERNAL`, and on an error that
names a resolver without saying what kind it is. Requests the server refused with a code stay
checked by everything else (response shape, the `data`/`errors` contract).

IDs are generated as UUIDs (and the original system's `<job id>-task-<index>` task ids) as well
as arbitrary strings, so that lookups reach the resolvers instead of stopping at the id's parser.
"""

from __future__ import annotations

import json

import schemathesis
from hypothesis import strategies as st
from schemathesis.graphql import nodes

_uuids = st.uuids().map(str)
_legacy_task_ids = st.tuples(st.uuids(), st.integers(min_value=0, max_value=20)).map(
    lambda pair: f"{pair[0]}-task-{pair[1]}"
)
schemathesis.graphql.scalar(
    "ID",
    st.one_of(_uuids, _legacy_task_ids, st.text(max_size=40)).map(nodes.String),
)


def _is_graphql(case) -> bool:
    body = case.body
    return isinstance(body, dict) and "query" in body and case.path.rstrip("/").endswith("/graphql")


@schemathesis.check
def shoal_graphql_no_server_error(ctx, response, case):
    """A GraphQL answer is never a server failure: no 5xx, no `INTERNAL`, no uncoded resolver error."""
    if not _is_graphql(case):
        return None
    if response.status_code >= 500:
        raise AssertionError(f"server error: HTTP {response.status_code}")
    try:
        payload = json.loads(response.content)
    except ValueError as error:
        raise AssertionError(f"the answer is not JSON: {error}") from None
    for error in payload.get("errors") or []:
        code = (error.get("extensions") or {}).get("code")
        if code == "INTERNAL":
            raise AssertionError(f"internal error: {error.get('message')!r}")
        if code is None and "path" in error:
            raise AssertionError(f"a resolver failed without an error code: {error!r}")
    return None



@schemathesis.hook
def map_body(ctx, body):
    """A REST submission's `concurrency_key` must name one of its parameters (a rule between two
    fields that OpenAPI cannot state): when a generated body names a key, the key's parameter is
    added, so that a schema-valid submission is a valid one. Bodies that are invalid for another
    reason stay invalid."""
    if (
        isinstance(body, dict)
        and isinstance(body.get("concurrency_key"), str)
        and 1 <= len(body["concurrency_key"]) <= 200
        and isinstance(body.get("parameters") or {}, dict)
        and body["concurrency_key"] not in (body.get("parameters") or {})
    ):
        parameters = {**(body.get("parameters") or {}), body["concurrency_key"]: "fuzz"}
        body = {**body, "parameters": parameters}
    return body
