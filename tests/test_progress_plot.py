"""The DFG trainers draw nnU-Net's progress plot once per 50 iterations and after the last epoch."""
from nnunet_dfg.trainers.progress_plot import ThrottledProgressPlot, plot_due


def test_plot_due_every_50_iterations_and_at_the_end():
    fa = [e for e in range(32) if plot_due(e, 32, 5, 50)]  # the FA schedule: 32 epochs of 5 iterations
    assert fa == [9, 19, 29, 31]
    assert all(plot_due(e, 10, 250, 50) for e in range(10))  # stock epochs: every epoch, as nnU-Net does
    assert [e for e in range(4) if plot_due(e, 4, 20, 50)] == [2, 3]


class _Logger:
    def __init__(self):
        self.plots = []

    def plot_progress_png(self, output_folder):
        self.plots.append(output_folder)


class _Trainer:  # the part of nnUNetTrainer.on_epoch_end the mixin relies on
    def __init__(self):
        self.logger, self.current_epoch, self.output_folder = _Logger(), 0, "out"
        self.num_epochs, self.num_iterations_per_epoch = 12, 5

    def on_epoch_end(self):
        self.logger.plot_progress_png(self.output_folder)
        self.current_epoch += 1


class _Throttled(ThrottledProgressPlot, _Trainer):
    pass


def test_mixin_skips_the_plot_only_when_not_due_and_restores_the_logger():
    trainer = _Throttled()
    for _ in range(trainer.num_epochs):
        trainer.on_epoch_end()
    assert trainer.current_epoch == 12
    assert len(trainer.logger.plots) == 2  # after iteration 50 and after the last epoch
    assert "plot_progress_png" not in vars(trainer.logger)
