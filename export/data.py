"""The time series a model is trained on: the default one, or your own from a CSV file.

The default series is half-hourly electricity demand in England and Wales.

The series ships inside the ``pmdarima`` package (``pmdarima.datasets.load_taylor``,
Taylor 2003): 4,032 half-hourly readings in megawatts from Monday 5 June 2000 to
Sunday 27 August 2000. It is split chronologically: the first 8 weeks train, the
next 2 weeks validate, the last 2 weeks test. Scaling statistics come from the
training part alone.

Each time step t carries three features in real units -- the demand reading (MW), the
hour of day (0.0 to 23.5) and the day of week (0 = Monday) -- and the target is the
demand of the next half hour, t + 1.

:func:`load_csv` reads your own regular series the same way: a time column and a target
column; the frequency is inferred from the timestamps (any whole number of minutes that
divides a day) and checked (gaps, duplicates and rows out of order are refused with their
line numbers); the hour of day and the day of week come from the timestamps; the split is
the same (the last two weeks test, the two before validate).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

STEPS_PER_DAY = 48
STEPS_PER_WEEK = 7 * STEPS_PER_DAY
FEATURES = (
    {"name": "demand", "unit": "MW", "description": "electricity demand in this half hour"},
    {"name": "hour_of_day", "unit": "h", "description": "start of the half hour, 0.0 to 23.5"},
    {"name": "day_of_week", "unit": "day", "description": "0 = Monday ... 6 = Sunday"},
)
OUTPUTS = ({"name": "demand_next", "unit": "MW", "description": "forecast demand of the next half hour"},)


def daily_units(steps_per_day: int) -> int:
    """Hidden units of the model's daily memory: one per step of the day, and the previous reading."""
    return steps_per_day + 1


def weekly_units(steps_per_day: int) -> int:
    """Hidden units of the model's weekly memory: one per step of the week."""
    return 7 * steps_per_day


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
    features: np.ndarray  # float32 [n, 3 + E]: the reading, hour_of_day, day_of_week, then E extra columns
    train_end: int  # targets with index < train_end train
    val_end: int  # targets with index in [train_end, val_end) validate; the rest test
    steps_per_day: int = STEPS_PER_DAY
    target: dict[str, str] | None = None  # the reading's name, unit, description (None: the demand's)
    origin: dict[str, object] | None = None  # how to load it again: csv, time_column, target_column, feature_columns
    extras: tuple[str, ...] = ()  # the extra columns' names (a CSV's --features)

    @property
    def steps_per_week(self) -> int:
        return 7 * self.steps_per_day

    @property
    def frequency_minutes(self) -> int:
        return 1440 // self.steps_per_day

    @property
    def feature_info(self) -> tuple[dict[str, str], ...]:
        if self.target is None:
            return FEATURES
        hour = {
            "name": "hour_of_day",
            "unit": "h",
            "description": f"start of the {self.frequency_minutes}-minute step, 0.0 to {24 - 24 / self.steps_per_day:g}",
        }
        extra = tuple({"name": c, "unit": "", "description": f"{c}, from the CSV file"} for c in self.extras)
        return (self.target, hour, FEATURES[2], *extra)

    @property
    def output_info(self) -> tuple[dict[str, str], ...]:
        if self.target is None:
            return OUTPUTS
        t = self.target
        return (
            {
                "name": f"{t['name']}_next",
                "unit": t.get("unit", ""),
                "description": f"forecast {t['name']} of the next step",
            },
        )

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
    lo, hi = float(train[:, 0].min()), float(train[:, 0].max())
    # a reading that is never negative in training: 0 to twice the maximum (as demand); one
    # that is: the training range widened by its span on both sides
    reading = (0.0, DEMAND_MAX_FACTOR * hi) if lo >= 0 else (lo - (hi - lo), hi + (hi - lo))
    ranges = [
        reading,
        (0.0, 24 - 24 / series.steps_per_day),
        (float(series.features[:, 2].min()), float(series.features[:, 2].max())),
    ]
    for col in train[:, 3:].T.astype(np.float64):  # extra columns: the training range widened by its span
        span = float(col.max() - col.min()) or 1.0
        ranges.append((float(col.min()) - span, float(col.max()) + span))
    steps = [None, 24 / series.steps_per_day, 1.0, *[None] * len(series.extras)]
    return [
        {**f, "min": lo, "max": hi, **({"step": s} if s else {})}
        for f, (lo, hi), s in zip(series.feature_info, ranges, steps, strict=True)
    ]


def hour_of_step(k: np.ndarray, steps_per_day: int) -> np.ndarray:
    """The hour of day at the start of step ``k`` of the day, computed one way everywhere (the
    data, the model's one-hot slots, the verifier's inputs) so that float32 values match exactly."""
    return np.asarray(k) * (24 / steps_per_day)


MIN_WEEKS = 7  # two warm the memories up, at least one trains, two validate, two test


def _rows(lines: list[int], what: str) -> str:
    shown = ", ".join(str(n) for n in lines[:5])
    more = f" and {len(lines) - 5} more" if len(lines) > 5 else ""
    return f"{what} at line{'s' if len(lines) > 1 else ''} {shown}{more}"


def load_csv(path: Path, time_col: str, target_col: str, feature_cols: tuple[str, ...] = ()) -> Series:
    """A regular series from a CSV file with a header row; DatasetError names what is wrong
    (columns, unparsable rows, duplicates, gaps, the frequency, the length). ``feature_cols``:
    numeric columns known at each step, given to the model after the calendar."""
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read {path} as CSV: {e}") from None
    taken = [time_col, target_col, *feature_cols]
    if len(set(taken)) != len(taken):
        raise DatasetError(f"the time, target and feature columns must differ; got {taken}")
    missing = [c for c in taken if c not in frame.columns]
    if missing:
        raise DatasetError(f"{path}: no column {', '.join(map(repr, missing))}; the columns are {list(frame.columns)}")
    line = np.arange(len(frame)) + 2  # the header is line 1
    times = pd.to_datetime(frame[time_col], errors="coerce")
    if getattr(times.dt, "tz", None) is not None:
        times = times.dt.tz_localize(None)  # the local wall-clock time the calendar features read
    values = pd.to_numeric(frame[target_col], errors="coerce")
    extras = [pd.to_numeric(frame[c], errors="coerce") for c in feature_cols]
    for bad, what in (
        (times.isna(), f"{time_col}: not a timestamp"),
        (~np.isfinite(values), f"{target_col}: not a number"),
        *((~np.isfinite(e), f"{c}: not a number") for c, e in zip(feature_cols, extras, strict=True)),
    ):
        if bad.any():
            raise DatasetError(f"{path}: {_rows(line[bad.to_numpy()].tolist(), what)}")
    t = times.to_numpy().astype("datetime64[s]").astype(np.int64)
    if len(t) < 3:
        raise DatasetError(f"{path}: {len(t)} row(s); a series needs at least {MIN_WEEKS} weeks of readings")
    diff = np.diff(t)
    dup = np.flatnonzero(diff == 0)
    if dup.size:
        raise DatasetError(f"{path}: {_rows(line[dup + 1].tolist(), 'duplicate timestamps')}")
    back = np.flatnonzero(diff < 0)
    if back.size:
        raise DatasetError(f"{path}: {_rows(line[back + 1].tolist(), 'timestamps earlier than the row before')}")
    step, _ = Counter(diff.tolist()).most_common(1)[0]
    if step % 60 or 86_400 % step:
        raise DatasetError(
            f"{path}: readings every {step} s; the frequency must be a whole number of minutes that divides a day "
            "(e.g. 15 min, 30 min, 1 h, 1 day): resample the series"
        )
    gaps = np.flatnonzero(diff != step)
    if gaps.size:
        raise DatasetError(
            f"{path}: {_rows(line[gaps + 1].tolist(), f'gaps (the series is every {step // 60} min)')}: fill or cut them"
        )
    steps_per_day = 86_400 // step
    n, week = len(t), 7 * steps_per_day
    if n < MIN_WEEKS * week:
        raise DatasetError(
            f"{path}: {n} readings, {n / week:.1f} weeks; at least {MIN_WEEKS} weeks ({MIN_WEEKS * week} readings "
            f"every {step // 60} min) are needed: two warm the memories up, at least one trains, two validate, "
            "two test"
        )
    minutes = (t % 86_400) // 60
    hour = hour_of_step(minutes // (step // 60), steps_per_day)
    dow = ((t // 86_400) + 3) % 7  # 1970-01-01 was a Thursday (3 with Monday = 0)
    vals = values.to_numpy(np.float64)
    name = Path(path).stem
    return Series(
        name=name,
        source=str(path),
        description=(
            f"{target_col} from {Path(path).name}, every {step // 60} min, {times.iloc[0]} to {times.iloc[-1]}"
        ),
        values=vals,
        features=np.stack(
            [vals, hour, dow.astype(np.float64), *(e.to_numpy(np.float64) for e in extras)], axis=1
        ).astype(np.float32),
        train_end=n - 4 * week,
        val_end=n - 2 * week,
        steps_per_day=steps_per_day,
        target={"name": target_col, "unit": "", "description": f"{target_col} in this step"},
        origin={  # as the card's dataset records them (export.heldout.series_of reads them back)
            "csv": str(Path(path).resolve()),
            "time_column": time_col,
            "target_column": target_col,
            "feature_columns": list(feature_cols),
        },
        extras=tuple(feature_cols),
    )


DATASETS = {"taylor": load_taylor}


def load(name: str) -> Series:
    """Load a dataset by name; an unknown name is a :class:`DatasetError` listing the known ones."""
    try:
        loader = DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {known}") from None
    return loader()
