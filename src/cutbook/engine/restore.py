"""Continuing a crashed run: take the state its journal recorded, then decide whether to go on.

:mod:`cutbook.engine.resume` reads the journal into a :class:`Recovered`;
this module puts it into a live run.
"""

from __future__ import annotations

from collections.abc import Mapping

from cutbook import templating
from cutbook.engine.context import TemplateContext
from cutbook.engine.gates import Gates
from cutbook.engine.resume import DONE, Recovered, RecoveredItem
from cutbook.engine.state import ItemState, Question, RunState
from cutbook.errors import AdapterError
from cutbook.model import Step


def recovered_items(
    step: Step, known: Mapping[str, RecoveredItem], context: TemplateContext
) -> list[ItemState]:
    """A step's items with what the journal knows about each.

    Applied items keep their results (rollback templates need them); half-done
    ones are *uncertain* and get settled by verification before anything else.
    """
    try:
        items = context.items(step)
    except (AdapterError, templating.TemplateError):
        items = [ItemState(key=k, item=None, index=i) for i, k in enumerate(known)]
    for item in items:
        got = known.get(item.key)
        if got is None:
            continue
        item.rolled_back = got.rolled_back
        if got.result is not None:
            item.result = got.result
            item.status = "succeeded"
        elif got.uncertain:
            item.status = "uncertain"
    return items


class Restorer:
    def __init__(self, run: RunState, context: TemplateContext, gates: Gates) -> None:
        self.run = run
        self.context = context
        self.gates = gates

    def restore(self, rec: Recovered) -> None:
        """Finished steps stay finished, applied items keep their results, and a run
        that was rolling back goes on rolling back."""
        run = self.run
        run.recovered = rec
        self.context.invalidate()
        for sid, st in run.states.items():
            status = rec.statuses.get(sid)
            if status in DONE:
                st.status = status  # type: ignore[assignment]
                st.error = rec.errors.get(sid)
                st.started, st.finished = rec.times.get(sid, (None, None))
            elif sid in rec.approved_gates:
                st.status = "succeeded"
        run.completed = [sid for sid in rec.completed if sid in run.states]
        for step in run.rb.steps:
            known = rec.items.get(step.id)
            if known and step.target is not None:
                st = run.states[step.id]
                st.items = recovered_items(step, known, self.context)
                st.collect_output()
        if rec.rollback_started:
            run.failure = rec.failure or "the run was rolling back when it stopped"
            run.mode = "rollback"

    async def check_resume_point(self) -> None:
        """Resumed past the point of no return or the window: roll back unless told to go on."""
        run = self.run
        if run.recovered is None or run.mode != "normal":
            return
        now = run.clock.now()
        late = now >= run.window_end or (
            run.point_of_no_return is not None and now > run.point_of_no_return
        )
        left = [s for s in run.rb.steps if not s.always and run.states[s.id].status == "pending"]
        if not late or not left:
            return
        what = "the window has ended" if now >= run.window_end else "past the point of no return"
        answer = await self.gates.ask(
            Question(
                step_id="resume",
                title=f"Resumed {what}: go on?",
                instructions=f"Resumed at {now.astimezone(run.rb.zone):%H:%M %z} with "
                f"{len(left)} step(s) left. Approve to go on; reject to roll back.",
                kind="gate",
            )
        )
        if not answer.approved:
            run.fail(f"resumed {what}; {answer.by} chose to roll back", "rollback")
