"""The values that pass between the Check's steps: the facts gathered, and the outcome decided.

Only data here, and type-only imports: the decide step sees these and the policy, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from authz.check.clientcert import CertificateVerdict
    from authz.check.credentials import Credentials
    from authz.check.request import RequestContext
    from authz.config.model import Route
    from authz.jit.model import Grant
    from authz.policy.ast import Verdict
    from authz.sessions.session import Session


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything the decision needs, gathered (with all the I/O) before it is made."""

    request: RequestContext
    route: Route | None  # None: Envoy sent a route id this config does not have
    credentials: Credentials
    session: Session | None  # the first credential that opened to a live session
    now: datetime  # the clock, read once by the gather step
    conflict: bool = False  # credentials of two different users opened: none counts (a planted cookie)
    refusal: str = ""  # why the route refuses this request's path with 400 ('' when it does not)
    grants: tuple[Grant, ...] = ()  # the user's grants recorded active on a `jit` route (expiry not yet compared)
    certificate: CertificateVerdict | None = None  # authz's verdict on the client certificate (downstream_mtls)
    certificate_refused: bool = False  # not valid, and downstream_mtls refuses such requests before any policy


class Action(StrEnum):
    ALLOW = "allow"
    LOGIN = "login"  # the answer step makes this a 302 for browsers, a 401 for programs
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to do, and why; the answer step turns it into a CheckResponse."""

    action: Action
    status: int
    reasons: tuple[str, ...]
    verdict: Verdict | None = None  # the policy's evaluation, for `show_error_details`
    grant: Grant | None = None  # the grant that alone let the user in (the assertion ends with it)
