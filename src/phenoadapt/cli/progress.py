"""The command line's one progress bar: tqdm on stderr, fed by ``progress(stage, done, total)``.

Every subcommand that runs a long job passes a :class:`ProgressBar` as the
job's ``progress`` hook (:data:`phenoadapt.progress.ProgressFn`).  The bar is
hidden when stderr is not a terminal, so logs and pipes get no control
characters.
"""

from __future__ import annotations

import sys
from types import TracebackType


class ProgressBar:
    """A progress hook drawing one tqdm bar; a new stage restarts the bar.

    Parameters
    ----------
    stage
        Label shown until the job reports its first stage.
    unit
        What is counted (``"field"``, ``"well"``...).
    enabled
        False hides the bar (e.g. on the ranks of a torchrun job other than 0).

    Attributes
    ----------
    stage, total
        The last reported stage and its total (0 before any report).
    """

    def __init__(self, stage: str = "start", unit: str = "it", enabled: bool = True) -> None:
        from tqdm import tqdm  # tqdm is only needed once a command runs

        self.stage = stage
        self.total = 0
        # disable=None: tqdm hides itself when stderr is not a terminal.
        self._bar = tqdm(total=0, desc=stage, unit=unit, file=sys.stderr,
                         disable=None if enabled else True)  # fmt: skip

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:  # a new stage restarts the bar's count and rate estimate
            self.stage = stage
            self._bar.set_description(stage, refresh=False)
            self._bar.reset(total=total)
        self.total = total
        self._bar.total = total
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        """Finish the bar (leaves the last line on the terminal)."""
        self._bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def progress_bar(stage: str = "start", unit: str = "it", enabled: bool = True) -> ProgressBar:
    """A :class:`ProgressBar` to use as ``with progress_bar(...) as progress:``."""
    return ProgressBar(stage, unit, enabled)
