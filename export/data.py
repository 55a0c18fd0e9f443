"""The default time series: half-hourly electricity demand in England and Wales.

The series ships inside the ``pmdarima`` package (``pmdarima.datasets.load_taylor``,
Taylor 2003): 4,032 half-hourly readings in megawatts from Monday 5 June 2000 to
Sunday 27 August 2000. It is split chronologically: the first 8 weeks train, the
next 2 weeks validate, the last 2 weeks test. Scaling statistics come from the
training part alone.

Each time step t carries three features in real units -- the demand reading (MW), the
hour of day (0.0 to 23.5) and the day of week (0 = Monday) -- and the target is the
demand of the next half hour, t + 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STEPS_PER_DAY = 48
STEPS_PER_WEEK = 7 * STEPS_PER_DAY
FEATURES = (
    {"name": "demand", "unit": "MW", "description": "electricity demand in this half hour"},
    {"name": "hour_of_day", "unit": "h", "description": "start of the half hour, 0.0 to 23.5"},
    {"name": "day_of_week", "unit": "day", "description": "0 = Monday ... 6 = Sunday"},
)
OUTPUTS = ({"name": "demand_next", "unit": "MW", "description": "forecast demand of the next half hour"},)


# The demand a served model accepts: from 0 to this multiple of the training maximum. Demand
# never goes negative; twice the largest training reading leaves room for winter peaks
# (a summer-trained model sees about 0.6 of the winter peak) while refusing readings in the
# wrong unit (kW instead of MW is 1000x) or a corrupted value.
DEMAND_MAX_FACTOR = 2.0


class DatasetError(ValueError):
    """A dataset name or split that cannot be used."""


@dataclass(frozen=True)
class Series:
    """A univariate series with its calendar features and chronological split."""

    name: str
    source: str
    description: str
    values: np.ndarray  # float64 [n]
    features: np.ndarray  # float32 [n, 3]: demand, hour_of_day, day_of_week
    train_end: int  # targets with index < train_end train
    val_end: int  # targets with index in [train_end, val_end) validate; the rest test

    @property
    def n(self) -> int:
        return len(self.values)

    def split(self) -> dict[str, list[int]]:
        return {
            "train": [0, self.train_end],
            "validation": [self.train_end, self.val_end],
            "test": [self.val_end, self.n],
        }


def _calendar(n: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(n)
    hour = (t % STEPS_PER_DAY) / 2.0
    dow = (t // STEPS_PER_DAY) % 7  # the series starts on a Monday
    return hour, dow.astype(np.float64)


def load_taylor() -> Series:
    from pmdarima.datasets import load_taylor as _load

    values = np.asarray(_load(as_series=False), dtype=np.float64)
    hour, dow = _calendar(len(values))
    features = np.stack([values, hour, dow], axis=1).astype(np.float32)
    n = len(values)
    test = 2 * STEPS_PER_WEEK
    val = 2 * STEPS_PER_WEEK
    return Series(
        name="taylor",
        source="pmdarima.datasets.load_taylor",
        description=(
            "Half-hourly electricity demand (MW) in England and Wales, "
            "Monday 5 June 2000 to Sunday 27 August 2000 (Taylor 2003)"
        ),
        values=values,
        features=features,
        train_end=n - test - val,
        val_end=n - test,
    )


def feature_ranges(series: Series) -> list[dict[str, object]]:
    """The card's ``features`` with the valid range of each, from the data.

    The calendar features' ranges are those the data take (0.0 to 23.5, 0 to 6), and their
    grid (``step``): the half hour's start in hours, a whole day; the model reads both
    exactly (its memories are indexed by them), so the service refuses values off the grid
    as it refuses values out of range. The demand's range is 0 to
    :data:`DEMAND_MAX_FACTOR` times the training maximum.
    """
    train = series.features[: series.train_end]
    ranges = [
        (0.0, DEMAND_MAX_FACTOR * float(train[:, 0].max())),
        (float(series.features[:, 1].min()), float(series.features[:, 1].max())),
        (float(series.features[:, 2].min()), float(series.features[:, 2].max())),
    ]
    steps = [None, 24 / STEPS_PER_DAY, 1.0]
    return [
        {**f, "min": lo, "max": hi, **({"step": s} if s else {})}
        for f, (lo, hi), s in zip(FEATURES, ranges, steps, strict=True)
    ]


DATASETS = {"taylor": load_taylor}


def load(name: str) -> Series:
    """Load a dataset by name; an unknown name is a :class:`DatasetError` listing the known ones."""
    try:
        loader = DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {known}") from None
    return loader()
