"""Print, per layer, how far an EBP run's posterior moved from its prior draw.

    python scripts/ebp_posterior_drift.py RUN

The prior is redrawn from the run's config as the trainer drew it (``initial_model``), so the
figures need only the run folder: mean |h| of the prior, mean |h - h_prior| and the fraction of
weights whose most probable sign flipped.
"""

import sys

from qnnlab.data import DatasetError
from qnnlab.models.ebp import EBPNetwork, drift_from_prior
from qnnlab.run.model import initial_model, load_trained


def main(run: str) -> None:
    try:
        posterior, data, info = load_trained(run, need_images=False)
    except (ValueError, DatasetError, OSError) as exc:
        sys.exit(f"ebp_posterior_drift: error: {exc}")
    if not isinstance(posterior, EBPNetwork):
        sys.exit(f"ebp_posterior_drift: error: {run} is not an ebp run (its recipe trains with backprop)")
    prior = initial_model(info["config"], data)
    for layer, row in enumerate(drift_from_prior(prior, posterior)):
        print(
            f"layer {layer}: prior mean |h| {row['prior_mean_abs_h']:.3f}, mean |h - h_prior| "
            f"{row['mean_abs_shift']:.3f}, signs flipped {row['signs_flipped']:.1%}"
        )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
