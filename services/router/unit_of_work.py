"""One transaction's work: the store and directory it runs on, the clock reading, and what its
handlers queue to write.

History entries, status changes, outcomes of handled messages and outbox messages are queued
here (nothing in the transaction reads them back) and written by ``flush`` in one statement
before the commit; ``outbox`` then holds the rows to publish after it.
"""

import datetime
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from contracts.common import Message
from contracts.referrals import ReferralStatus
from contracts.subjects import status_subject
from services.infra.db import Connection
from services.router import messages
from services.router.deadlines import Deadline
from services.router.model import Handled, OutboxRow, Transition
from services.router.ports import Directory, DirectoryRows, Store, StoreRows

#: A handler bound to its message, waiting for its unit of work.
Work = Callable[["UnitOfWork"], Awaitable[Handled]]
#: The batch path's set-based reads and writes on a connection (``services.router.batch``).
BatchRows = Callable[[Connection], tuple[StoreRows, DirectoryRows]]


@dataclass
class UnitOfWork:
    store: Store
    directory: Directory
    now: datetime.datetime
    #: When an offer made at a moment expires (``deadlines.deadline_policy``).
    deadline: Deadline
    #: Candidates fetched per matching round.
    candidates: int = 5
    outbox: list[OutboxRow] = field(default_factory=list)
    history: list[tuple[uuid.UUID, Transition, datetime.datetime]] = field(default_factory=list)
    #: Each referral's latest (status, attempt).
    statuses: dict[uuid.UUID, tuple[ReferralStatus, int]] = field(default_factory=dict)
    #: Each handled message's (outcome, reason).
    finished: dict[uuid.UUID, tuple[str, str | None]] = field(default_factory=dict)
    pending: list[tuple[str, Message]] = field(default_factory=list)

    def finish(self, message_id: uuid.UUID, outcome: str, reason: str | None) -> None:
        self.finished[message_id] = (outcome, reason)

    def emit(self, subject: str, message: Message) -> None:
        self.pending.append((subject, message))

    def record(self, referral_id: uuid.UUID, system: str | None, entry: Transition) -> None:
        """Store a transition and queue its status event for the referring ``system`` (a
        refusal is stored, not published)."""
        self.history.append((referral_id, entry, self.now))
        if entry.refused:
            return
        self.statuses[referral_id] = (entry.status, entry.attempt)
        if system is not None:  # only a referral stored before v1.1 can lack one
            self.emit(status_subject(system), messages.status_changed(referral_id, entry, self.now))

    async def flush(self) -> None:
        """Write what the handlers queued (call it inside the transaction, before commit)."""
        self.outbox += await self.store.write_behind(
            self.history,
            [(rid, status, attempt, self.now) for rid, (status, attempt) in self.statuses.items()],
            [(mid, outcome, reason) for mid, (outcome, reason) in self.finished.items()],
            self.pending,
        )
        self.history, self.statuses, self.finished, self.pending = [], {}, {}, []


@dataclass(frozen=True)
class Wiring:
    """How a transaction's store and directory are built: chosen by the composition root."""

    store: Callable[[Connection], Store]
    directory: Callable[[Connection], Directory]
    deadline: Deadline
    candidates: int = 5
    #: The batch path plans on these (None: every message on the database, a savepoint each).
    batch_rows: BatchRows | None = None

    async def run(
        self,
        conn: Connection,
        now: datetime.datetime,
        work: Callable[[UnitOfWork], Awaitable[Handled]],
    ) -> tuple[Handled, list[OutboxRow]]:
        """``work`` in one transaction on ``conn``; what it did and the outbox rows to publish."""
        uow = UnitOfWork(
            store=self.store(conn),
            directory=self.directory(conn),
            now=now,
            deadline=self.deadline,
            candidates=self.candidates,
        )
        async with conn.transaction():
            handled = await work(uow)
            await uow.flush()
        return handled, uow.outbox
