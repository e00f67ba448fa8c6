r"""Progress of ``pyro-vsm compare`` on stderr.

* On a terminal: one line per objective (a tqdm bar while it trains, then its result).
* On a non-interactive stream (a log file, CI): a line when the run starts and one when each
  objective finishes; never the bars' refreshes.
* ``quiet``: nothing.
"""

import sys
import time

__all__ = ["Progress", "Throttle"]


class Throttle:
    r"""Calls ``fn(step)`` at most every ``interval`` seconds (and always for the last step).

    :param fn: the callable.
    :param int total: the last step.
    :param float interval: seconds between calls.
    """

    def __init__(self, fn, total, interval=0.25):
        self.fn, self.total, self.interval = fn, total, interval
        self.last = 0.0

    def __call__(self, step):
        now = time.monotonic()
        if step >= self.total or now - self.last >= self.interval:
            self.last = now
            self.fn(step)


class Progress:
    r"""Shows the progress of several objectives.

    :param names: the objectives, in table order.
    :param bool quiet: show nothing.
    :param stream: the stream (default ``sys.stderr``).
    """

    def __init__(self, names, quiet=False, stream=None):
        self.names = list(names)
        self.stream = stream or sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.mode = "off" if quiet else ("tty" if callable(isatty) and isatty() else "lines")
        self.bars = {}
        self.finished = 0

    def start(self, message):
        r"""The opening line.

        :param str message: what runs where.
        """
        if self.mode != "off":
            print(message, file=self.stream, flush=True)
        if self.mode == "tty":
            from tqdm.auto import tqdm

            for i, name in enumerate(self.names):
                self.bars[i] = tqdm(
                    total=1,
                    desc=f"{name:<18}",
                    position=i,
                    leave=True,
                    file=self.stream,
                    bar_format="{desc} {percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt} "
                    "[{elapsed}] {postfix}",
                )
                self.bars[i].set_postfix_str("waiting")

    def event(self, index, event):
        r"""A worker's event: ``("start", steps)``, ``("step", step)`` or ``("phase", text)``.

        :param int index: the objective's position.
        :param tuple event: the event.
        """
        bar = self.bars.get(index)
        if bar is None:
            return
        kind, value = event
        if kind == "start":
            bar.reset(total=value)
            bar.set_postfix_str("training")
        elif kind == "step":
            bar.update(value - bar.n)
        elif kind == "phase":
            bar.set_postfix_str(value)

    def done(self, index, summary):
        r"""An objective finished.

        :param int index: its position.
        :param str summary: the result, one line.
        """
        self.finished += 1
        bar = self.bars.pop(index, None)
        if bar is not None:
            bar.set_postfix_str(summary)
            bar.close()
        elif self.mode == "lines":
            name = self.names[index]
            print(
                f"[{self.finished}/{len(self.names)}] {name}: {summary}",
                file=self.stream,
                flush=True,
            )

    def close(self):
        r"""Closes the remaining bars."""
        for bar in self.bars.values():
            bar.close()
        self.bars = {}
