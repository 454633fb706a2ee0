"""The demo's stage timings: seconds per stage (``timings.json``) and a note on every stage whose
training an earlier run of the same command had already done (the demo resumes finished runs, so such
a stage's seconds are the time to load or finish it, not what it costs)."""

from __future__ import annotations

from ..training import TrainResult

__all__ = ["StageTimes", "record_stage", "reuse_note", "epochs_text"]


class StageTimes(dict):
    """``{stage: seconds}`` (what ``timings.json`` holds) with ``notes``: ``{stage: why its time is not
    its cost}``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.notes: dict[str, str] = {}


def epochs_text(n: int) -> str:
    """``"1 epoch"``, ``"3 epochs"``."""
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def reuse_note(result: TrainResult) -> str | None:
    """What of ``result``'s training an earlier run had done (``None``: all of it ran now)."""
    n = result.reused_epochs
    if not n:
        return None
    epochs = max(n, len(result.history))
    if n >= epochs:
        done = f"all {epochs_text(n)}" if n > 1 else "its 1 epoch"
        return f"reused: {done} ran in an earlier run of this command; the time is loading them"
    return (
        f"reused: {n} of {epochs_text(epochs)} ran in an earlier run of this command; the time is the rest's"
    )


def record_stage(timings: dict, stage: str, seconds: float, result: TrainResult | None = None) -> None:
    """``timings[stage] = seconds``, and the stage's reuse note where ``timings`` keeps notes."""
    timings[stage] = seconds
    note = reuse_note(result) if result is not None else None
    if note and isinstance(timings, StageTimes):
        timings.notes[stage] = note
