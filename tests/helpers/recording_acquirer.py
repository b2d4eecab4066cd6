"""A plug-in acquirer for tests: records what the loop offered it, then takes the first k rows."""

import json

import numpy as np


class UnlabelledRecorder:
    """Appends one JSON line per call (labelled and unlabelled rows) to ``out``."""

    def __init__(self, out: str) -> None:
        self.out = out

    def select(self, ctx, k: int) -> np.ndarray:
        with open(self.out, "a") as f:
            f.write(
                json.dumps(
                    {"labelled": ctx.labelled.tolist(), "unlabelled": ctx.unlabelled.tolist()}
                )
                + "\n"
            )
        return ctx.unlabelled[:k]
