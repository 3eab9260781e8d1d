"""Errors of the HIL suite: each names the host, command or capability that was wrong."""

from __future__ import annotations


class HilError(Exception):
    """Something the suite needed from a host or program did not happen."""


class HilTimeout(HilError, TimeoutError):
    """A bounded wait ran out: the message says what was awaited and for how long."""


class TopologyError(HilError):
    """The topology cannot be built or described (not root, a tool missing, bad config)."""


class CapabilityError(HilError):
    """The topology lacks what a case needs (a role, root on a host, an inspectable switch).

    Raised instead of skipping: a bench that cannot run a case fails it, saying why.
    """
