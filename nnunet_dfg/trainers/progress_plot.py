"""nnU-Net redraws its progress plot (``progress.png``) after every epoch, about 0.6 s of matplotlib on a CPU.

That is noise after a stock 250-iteration epoch, but the FA schedule's epochs are 5 iterations long (the reference
decays the lr every 5 iterations and nnU-Net's scheduler steps per epoch), so there the plot took 30% of the FA
training time (2d benchmark: 61 s with it, 43 s without). The DFG trainers redraw it once per
``plot_every_iterations`` training iterations and after the last epoch; with epochs of 50 iterations or more that
is every epoch, as in nnU-Net.
"""
from __future__ import annotations


def plot_due(epoch: int, num_epochs: int, iterations_per_epoch: int, every: int) -> bool:
    """Whether the epoch just finished (0-based) crossed a multiple of ``every`` iterations, or was the last."""
    done = (epoch + 1) * iterations_per_epoch
    return epoch >= num_epochs - 1 or done // every > (done - iterations_per_epoch) // every


class ThrottledProgressPlot:
    """Mixin placed before ``nnUNetTrainer`` in the bases: skips nnU-Net's plot on epochs where it is not due."""

    plot_every_iterations: int = 50

    def on_epoch_end(self):
        if plot_due(self.current_epoch, self.num_epochs, self.num_iterations_per_epoch, self.plot_every_iterations):
            return super().on_epoch_end()
        self.logger.plot_progress_png = lambda output_folder: None  # shadows the method for this one call
        try:
            super().on_epoch_end()
        finally:
            del self.logger.plot_progress_png
