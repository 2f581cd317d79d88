"""Former home of the feature predictor, now ``nnunet_dfg.volume.predictor``; kept as an alias because
``benchmarks/refine_speed.py`` and ``benchmarks/speed_ratios.py`` import it from here."""
from ..volume.predictor import CasePrediction, FeaturePredictor, LogitsAndFeatures  # noqa: F401
