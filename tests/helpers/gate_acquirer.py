"""A plug-in acquirer for tests: random picks that wait at a gate, so a run can be caught mid-cycle."""

import time
from pathlib import Path

from active.acquirers.random import RandomAcquirer


class GatedRandom(RandomAcquirer):
    """Touches ``entered``, then waits in ``select`` until the file ``gate`` exists (the same picks
    as ``random`` otherwise)."""

    def __init__(self, gate: str, entered: str) -> None:
        super().__init__()
        self.gate, self.entered = Path(gate), Path(entered)

    def select(self, ctx, k: int):
        self.entered.touch()
        while not self.gate.exists():
            time.sleep(0.05)
        return super().select(ctx, k)
