"""A progress bar for long embedding jobs: texts done, texts/s and tokens/s, on stderr.

    with Progress(show=True, total=len(texts)) as bar:
        ...
        bar.update(texts=32, tokens=1200)   # after each batch

The bar is tqdm's (huggingface-hub depends on tqdm, so it is always there); it
is imported only when a bar is asked for. `show` is False (no bar), True (a bar
from the start) or a number of seconds: the bar appears only once the job has
run that long, so quick jobs print nothing (the command line uses 2 s).
"""
from __future__ import annotations

import sys
import time


def bar_delay(show) -> float | None:
    """show_progress -> seconds to wait before drawing the bar, or None for no bar."""
    if show is None or show is False:
        return None
    if show is True:
        return 0.0
    if isinstance(show, (int, float)) and show >= 0:
        return float(show)
    raise ValueError(f"show_progress must be True, False or a number of seconds >= 0, got {show!r}")


class Progress:
    """Counts texts and tokens; draws a tqdm bar on stderr when asked to, else does nothing."""

    def __init__(self, show=False, total: int | None = None, description: str = "embedding"):
        delay = bar_delay(show)
        self.tokens = 0
        self.start = time.perf_counter()
        self.bar = None
        if delay is None:
            return
        try:
            from tqdm import tqdm
        except ImportError:  # pragma: no cover - tqdm comes with huggingface-hub
            return
        self.bar = tqdm(total=total, desc=description, unit=" texts", file=sys.stderr, delay=delay,
                        disable=False, dynamic_ncols=True, mininterval=0.5, smoothing=0.05)

    def update(self, texts: int, tokens: int) -> None:
        """Record a finished batch: `texts` more texts done, `tokens` more tokens encoded."""
        self.tokens += tokens
        if self.bar is not None:
            elapsed = max(time.perf_counter() - self.start, 1e-9)
            self.bar.set_postfix_str(f"{self.tokens / elapsed:,.0f} tokens/s", refresh=False)
            self.bar.update(texts)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
