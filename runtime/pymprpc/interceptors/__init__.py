"""Server interceptors: middleware around every call, and the ones pymprpc ships.

Pass them to `Server(interceptors=[...])`; the first is outermost. See `chain` for the
contract an interceptor follows.
"""

from .access import ANY_USER, AccessControl
from .accesslog import AccessLog, outcome_code
from .chain import CallNext, ServerInterceptor, compose, observe_call, observe_stream
from .ratelimit import RateLimit

__all__ = [
    "ANY_USER",
    "AccessControl",
    "AccessLog",
    "CallNext",
    "RateLimit",
    "ServerInterceptor",
    "compose",
    "observe_call",
    "observe_stream",
    "outcome_code",
]
