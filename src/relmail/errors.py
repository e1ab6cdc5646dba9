"""One exception hierarchy for everything a user can cause.

The CLI turns any :class:`RelmailError` into a single line on stderr and the
class's ``exit_code``; the codes are documented (docs/reference/exit-codes.md)
and stable. Errors of the database driver become a :class:`DatabaseError`
(exit 5: cannot reach it, connection lost or refused) or a
:class:`DatabaseUnavailable` (exit 13: timeouts, locks, read-only; retry
later) in :mod:`relmail.store.faults`, with the SQL detail only under
``relmail --verbose``.
Each error also subclasses the standard exception it most resembles, so
library callers can catch either. An error or warning about a misspelt name
(a campaign or segment key, a setting, a consent topic) ends the one way
:func:`did_you_mean` says it, with the name :func:`likely` finds.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


class RelmailError(Exception):
    """Base class of every error relmail raises on purpose."""

    exit_code = 1


class ConfigError(RelmailError, ValueError):
    """The project folder, ``relmail.toml`` or a setting is missing or invalid."""

    exit_code = 3


class ValidationError(RelmailError, ValueError):
    """Input data (an import file, a campaign, a segment) is invalid.

    ``problems`` holds one :class:`Problem` per bad field, each naming the
    file, line and field; ``str()`` gives the first few.
    """

    exit_code = 4
    #: Problems ``str()`` names; the CLI lists the others on lines of their own.
    shown_in_line = 3

    def __init__(self, message: str, problems: list[Problem] | None = None):
        self.problems = list(problems or [])
        super().__init__(message)

    def __str__(self) -> str:
        head = super().__str__()
        if not self.problems:
            return head
        shown = "; ".join(str(p) for p in self.problems[:self.shown_in_line])
        more = len(self.problems) - self.shown_in_line
        tail = f" (and {more} more)" if more > 0 else ""
        return f"{head}: {shown}{tail}"


class Problem:
    """One bad value: where it is and what was expected."""

    __slots__ = ("file", "line", "field", "message")

    def __init__(self, file: str, line: int | None, field: str | None, message: str):
        self.file = file
        self.line = line
        self.field = field
        self.message = message

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
        if self.field:
            where += f": field '{self.field}'"
        return f"{where}: {self.message}"

    def as_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "field": self.field, "message": self.message}

    def __repr__(self) -> str:
        return f"Problem({self.file!r}, {self.line!r}, {self.field!r}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Problem) and self.as_dict() == other.as_dict()


class DatabaseError(RelmailError, RuntimeError):
    """The database cannot be reached, closed the connection or refused one, or its schema is missing or outdated.

    The message names the problem in one line; ``detail`` holds the
    driver's own text and the SQL statement (``relmail --verbose`` prints
    it). :mod:`relmail.store.faults` makes these from the driver's errors.
    """

    exit_code = 5

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.detail = detail

    def __reduce__(self):
        # Crosses process boundaries (a worker's error reaches the command) with its detail.
        return (type(self), (str(self), self.detail))


class DatabaseUnavailable(DatabaseError):
    """The database is up but would not do the work now; the transaction was rolled back.

    A statement or lock timeout, a deadlock, a lock held by another writer
    (SQLite's "database is locked"), or a read-only database (a standby,
    writes switched off, a read-only SQLite file). Retrying the same
    command later may succeed: a scheduler can treat exit 13 as "try again".
    """

    exit_code = 13


class ClusterError(RelmailError, RuntimeError):
    """The Dask cluster could not finish the work: its scheduler went away, or the workers running a task kept dying.

    What the tasks did is rolled back (a plan writes nothing) or in the
    ledger (a send's e-mails are sent once): the same command can be run
    again once the cluster is back.
    """

    exit_code = 18


class TemplateError(RelmailError, ValueError):
    """A template has a syntax error or failed to render; ``file`` and ``line`` say where, when known."""

    exit_code = 6

    def __init__(self, message: str, file: str | None = None, line: int | None = None):
        super().__init__(message)
        self.file, self.line = file, line


class RenderErrorsExceeded(TemplateError):
    """A send's e-mails failed to render for more customers than ``--max-render-errors`` allows.

    The send did everything else: those decisions are ``RENDER_ERROR`` and
    never sent, every other e-mail went, and the ledger is consistent. The
    exit code tells a scheduler that customers got nothing this run, which
    a person should look at (a template meeting data it did not expect).
    """

    exit_code = 19


class DeliveryError(RelmailError, RuntimeError):
    """An adapter could not deliver, or is misconfigured for delivery."""

    exit_code = 7


class UnsupportedFeature(DeliveryError):
    """An adapter was asked for something its provider cannot do."""


class DeferredShareExceeded(DeliveryError):
    """A send deferred more than ``--max-deferred-share`` of the e-mails it attempted.

    Everything it did is in the ledger and the deferred e-mails are retried
    by the next run of the same command; the exit code tells a scheduler
    that this run mostly did not deliver (a provider throttling or down, a
    connection limit), which a human should look at.
    """

    exit_code = 14


class Interrupted(RelmailError):
    """A command stopped by Ctrl-C or SIGTERM; the exit code is the shell's for an interrupted command."""

    exit_code = 130


class SendStopped(Interrupted):
    """A send stopped on request (Ctrl-C, SIGTERM) after recording the e-mails in hand.

    Nothing is uncertain: what was handed over is recorded with the
    provider's answers, the rest is due again, and the next run of the same
    command resumes. The exit code is the shell's for an interrupted command.
    """

    exit_code = 130


class NotFound(RelmailError, LookupError):
    """A named customer, run, campaign, message or template does not exist."""

    exit_code = 8


class Conflict(RelmailError, RuntimeError):
    """The request clashes with existing state: the window is planned already, a run was imported before.

    Retrying the same command does not help; a scheduler may read exit 9
    of a plan as "done already".
    """

    exit_code = 9


class LockHeld(Conflict):
    """Another process works on the run now: it holds the run's lock, took it over, or a sender of it may still run.

    A subclass of :class:`Conflict` so that callers catching that keep
    working; its own exit code tells a scheduler "someone else is on it,
    a later start does the rest" apart from "this was done already".
    """

    exit_code = 17


class GateFailed(RelmailError):
    """A CI policy gate failed (suppression rate, minimum sends, render errors)."""

    exit_code = 10


class SignatureError(RelmailError, ValueError):
    """A token or webhook signature is missing, forged or expired."""

    exit_code = 11


class ModelError(RelmailError, ValueError):
    """A model file is missing, untrusted or incompatible."""

    exit_code = 12


class NothingToDo(RelmailError, LookupError):
    """The command found nothing to work on (``model train`` with no closed decisions to learn from).

    Not a failure of the data or the files: a scheduled job may treat it as
    "try again later".
    """

    exit_code = 15


class FeatureStoreCorrected(RelmailError, RuntimeError):
    """``db rebuild-features`` found per-customer aggregates that differed from the raw events, and corrected them.

    The store is right again when this is raised; the difference means
    something wrote events without keeping the aggregates (a script writing
    SQL by hand, a restore of the events alone), which is worth a look.
    """

    exit_code = 16


class SuppressionRateExceeded(GateFailed):
    """Gate ``--max-suppression-rate``: the plan suppresses a larger share than allowed."""

    exit_code = 20


class TooFewSends(GateFailed):
    """Gate ``--min-sends``: the plan sends fewer e-mails than required."""

    exit_code = 21


class RenderGateFailed(GateFailed):
    """Gate on rendering: a template failed to render for a sampled customer."""

    exit_code = 22


#: How alike (difflib's ratio) a name must be to a known one to be suggested: difflib's own default. A key or
#: condition name that is unknown is refused whatever the suggestion, so a loose match only costs a wrong guess.
#: Consent topics use a stricter cutoff of their own (relmail.store.topics.CLOSE): there the match decides.
CUTOFF = 0.6


def likely(name: Any, known: Iterable[str], cutoff: float = CUTOFF) -> str | None:
    """The one of ``known`` that ``name`` most likely misspells, or None when none is close enough."""
    close = difflib.get_close_matches(str(name), sorted(known), n=1, cutoff=cutoff)
    return close[0] if close else None


def did_you_mean(meant: str | None) -> str:
    """``; did you mean 'meant'?`` to end a message with, or nothing when nothing is meant."""
    return f"; did you mean '{meant}'?" if meant is not None else ""
