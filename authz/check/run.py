"""The Check in three steps — gather, decide, answer — for any server, asyncio or thread pool.

`begin` runs everything that does not block; when the store must be read, it hands back the
`Pending` facts, and `finish` completes the Check where blocking is allowed (a worker thread under
asyncio; directly in a thread-pool server). `check_blocking` does both, for callers that may block.
"""

from __future__ import annotations

from authz.check.answer import Answer, answer
from authz.check.decide import decide
from authz.check.facts import Facts
from authz.check.gather import Pending, gather
from authz.check.request import RequestContext
from authz.runtime.state import Runtime


def conclude(rt: Runtime, facts: Facts, now: float) -> Answer:
    """Decide on gathered facts and build the answer."""
    return answer(rt, facts, decide(facts), now)


def begin(rt: Runtime, req: RequestContext, now: float) -> Answer | Pending:
    """The answer, or `Pending` when finishing needs a blocking store read."""
    facts = gather(rt, req, now)
    if isinstance(facts, Pending):
        return facts
    return answer(rt, facts, decide(facts), now)


def finish(pending: Pending) -> Answer:
    """Complete a pending Check (blocks on the store read)."""
    return conclude(pending.rt, pending.resolve(), pending.now)


def check_blocking(rt: Runtime, req: RequestContext, now: float) -> Answer:
    """Begin and, if needed, finish in the calling thread."""
    result = begin(rt, req, now)
    return finish(result) if isinstance(result, Pending) else result
