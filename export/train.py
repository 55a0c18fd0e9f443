"""Train the default forecaster and export it: ``python -m export.train``.

Or train on your own series: ``python -m export.train --csv FILE --time COLUMN --target
COLUMN --name NAME`` (a regular series, any frequency that divides a day: see
:func:`export.data.load_csv`); the window, burn-in, stride and hidden size then follow the
series' steps per day unless given.

Seeded and deterministic (single-threaded torch, deterministic algorithms): the same
arguments give the same weights and the same metrics. Early stopping on the validation
loss; a progress bar per epoch; writes the loss curve and a test-period forecast plot
next to the model.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from export.analogues import DAILY_DECAY, WARM_WEEKS, WEEKLY_DECAY
from export.baselines import NAMES as BASELINE_NAMES
from export.data import (
    DEMAND_MAX_FACTOR,
    DatasetError,
    Series,
    daily_units,
    feature_ranges,
    load,
    load_csv,
    weekly_units,
)

TRAINED_UNITS = 31  # the default model's units beyond its two memories (416 - 49 - 336)
SESSION_TTL_S = 14 * 86400  # the card's session_ttl_s: two weeks, for a memory that spans weeks


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m export.train", description=__doc__)
    p.add_argument("--dataset", default="taylor", help="dataset name (default: taylor)")
    p.add_argument("--csv", type=Path, help="train on your own series: a CSV file with a header row")
    p.add_argument("--time", help="with --csv: the timestamp column")
    p.add_argument("--target", help="with --csv: the column of readings to forecast one step ahead")
    p.add_argument(
        "--features",
        help="with --csv: numeric columns known at each step (comma separated), given to the model after the calendar",
    )
    p.add_argument("--name", help="model name in the repository (default demand; needed with --csv)")
    p.add_argument("--version", default="1", help="model version (a positive integer)")
    p.add_argument("--models", type=Path, default=Path("models"), help="model repository root")
    p.add_argument(
        "--hidden",
        type=int,
        help="LSTM hidden size of each ensemble member (default: the two memories' units + 31; 416 half-hourly)",
    )
    p.add_argument("--layers", type=int, default=1, help="number of stacked LSTM layers")
    p.add_argument(
        "--ensemble", type=int, default=1, help="members trained from successive seeds, averaged in one graph"
    )
    p.add_argument(
        "--hour-encoding",
        choices=("onehot", "harmonics"),
        default="onehot",
        help="the hour of day as a one-hot of the 48 half hours, or as --hour-harmonics sin/cos pairs",
    )
    p.add_argument("--hour-harmonics", type=int, default=4, help="sin/cos pairs of the hour of day (harmonics)")
    p.add_argument("--day-harmonics", type=int, default=3, help="sin/cos pairs of the day of week (harmonics)")
    p.add_argument(
        "--day-encoding",
        choices=("onehot", "harmonics"),
        default="onehot",
        help="the day of week as a one-hot of the 7 days, or as --day-harmonics sin/cos pairs",
    )
    p.add_argument(
        "--residual",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="forecast the change from the current reading rather than the level",
    )
    p.add_argument(
        "--daily-memory",
        type=float,
        default=DAILY_DECAY,
        metavar="DECAY",
        help="start layer 0 with a by-time-of-day memory of the half-hourly changes that forgets at this rate "
        "per day (0: no memory; needs --residual and --hour-encoding onehot)",
    )
    p.add_argument(
        "--weekly-memory",
        type=float,
        default=WEEKLY_DECAY,
        metavar="DECAY",
        help="add a memory, by half hour of the week, of what the daily memory missed, that forgets at this rate "
        "per week (0: none; needs --daily-memory and --hidden >= 385)",
    )
    p.add_argument(
        "--half-weights",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="store the LSTM weight matrices as float16 in the ONNX graph (the torch weights are rounded to them)",
    )
    p.add_argument(
        "--warm-windows",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="start each training window from the state of a stateful run over the series (memories full) "
        "instead of zeros; windows start after the first two weeks",
    )
    p.add_argument(
        "--warm-from",
        type=int,
        default=WARM_WEEKS,
        metavar="WEEKS",
        help="with --warm-windows, the first training window starts after this many weeks of the series",
    )
    p.add_argument("--window", type=int, help="training window (steps; default two days)")
    p.add_argument("--burn-in", type=int, help="steps of each window not scored (default half a day)")
    p.add_argument("--stride", type=int, help="step between training window starts (default a quarter day)")
    p.add_argument("--batch", type=int, default=16, help="windows per optimiser step")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    p.add_argument(
        "--loss",
        choices=("mse", "mae"),
        default="mse",
        help="training loss and early-stopping criterion (scaled units): mean squared or mean absolute error",
    )
    p.add_argument("--epochs", type=int, default=300, help="maximum epochs")
    p.add_argument("--patience", type=int, default=20, help="epochs without validation gain before stopping")
    p.add_argument(
        "--refit",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="after early stopping on validation, train again from the same start on train + validation "
        "for the selected number of epochs, and export that model",
    )
    p.add_argument(
        "--refit-epochs",
        type=int,
        default=None,
        metavar="N",
        help="skip the selection run: train on train + validation for N epochs (no out-of-sample validation MAE)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps runs bit-identical)")
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="skip training: export one randomly initialised member of --hidden (for benchmarks)",
    )
    p.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    args = p.parse_args(argv)
    if args.csv is not None and (args.time is None or args.target is None):
        p.error("--csv needs --time COLUMN and --target COLUMN")
    if args.csv is None and (args.time is not None or args.target is not None or args.features is not None):
        p.error("--time, --target and --features go with --csv")
    if args.name is None:
        if args.csv is not None:
            p.error("--csv needs --name NAME: the model's name in the repository (not the default model's)")
        args.name = "demand"
    for field in (
        "hidden",
        "layers",
        "ensemble",
        "hour_harmonics",
        "day_harmonics",
        "window",
        "stride",
        "batch",
        "epochs",
        "threads",
    ):
        if getattr(args, field) is not None and getattr(args, field) <= 0:
            p.error(f"--{field.replace('_', '-')} must be positive, got {getattr(args, field)}")
    if args.refit_epochs is not None and args.refit_epochs <= 0:
        p.error(f"--refit-epochs must be positive, got {args.refit_epochs}")
    if args.patience < 0 or (args.burn_in is not None and args.burn_in < 0):
        p.error("--patience and --burn-in must be >= 0")
    if args.lr <= 0:
        p.error("--lr must be positive")
    if args.daily_memory and not 0 < args.daily_memory < 1:
        p.error(f"--daily-memory must lie in (0, 1), got {args.daily_memory}")
    if args.weekly_memory and not 0 < args.weekly_memory < 1:
        p.error(f"--weekly-memory must lie in (0, 1), got {args.weekly_memory}")
    if not args.version.isdigit() or int(args.version) < 1:
        p.error(f"--version must be a positive integer, got {args.version!r}")
    return args


def settle(args: argparse.Namespace, series: Series) -> None:
    """Fill the defaults that follow the series' steps per day, and check what depends on it;
    DatasetError (exit 2, one line) for a combination that cannot train."""
    day = series.steps_per_day
    memories = (daily_units(day) if args.daily_memory else 0) + (weekly_units(day) if args.weekly_memory else 0)
    if args.hidden is None:
        args.hidden = memories + TRAINED_UNITS
    if args.window is None:
        args.window = max(2, 2 * day)
    if args.burn_in is None:
        args.burn_in = day // 2
    if args.stride is None:
        args.stride = max(1, day // 4)
    if args.burn_in >= args.window:
        raise DatasetError(f"--burn-in ({args.burn_in}) must be less than --window ({args.window})")
    if args.daily_memory and (not args.residual or args.hour_encoding != "onehot" or args.hidden <= day):
        raise DatasetError(f"--daily-memory needs --residual, --hour-encoding onehot and --hidden > {day}")
    if args.weekly_memory and (not args.daily_memory or args.hidden < memories or args.day_encoding != "onehot"):
        raise DatasetError(f"--weekly-memory needs --daily-memory, --hidden >= {memories} and --day-encoding onehot")


def run_full(model: Any, inputs: np.ndarray) -> np.ndarray:
    """Run the model statefully over a whole series from zero state; scaled predictions."""
    import torch

    with torch.no_grad():
        x = torch.from_numpy(inputs[None])
        h0, c0 = model.zero_state(1)
        ys, _, _ = model.forward_scaled(x, h0, c0)
    return ys[0, :, 0].numpy()


def stream_states(model: Any, inputs: np.ndarray, stride: int) -> tuple[Any, Any]:
    """The model's state ``(h, C)`` run statefully from zero over ``inputs``, before every ``stride``-th step.

    ``h[:, n]`` is the state before input ``n * stride``: a training window starting there starts
    from what a streaming client's state would be (the memories full), not from zeros.
    """
    import torch

    was_training = model.training
    model.eval()
    hs, cs = [], []
    with torch.no_grad():
        h, c = model.zero_state(1)
        for lo in range(0, len(inputs), stride):
            hs.append(h)
            cs.append(c)
            _, h, c = model.forward_scaled(torch.from_numpy(inputs[None, lo : lo + stride]), h, c)
    model.train(was_training)
    return torch.cat(hs, dim=1), torch.cat(cs, dim=1)


HYPERPARAMETERS = (
    "hidden",
    "layers",
    "ensemble",
    "hour_encoding",
    "hour_harmonics",
    "day_harmonics",
    "day_encoding",
    "residual",
    "daily_memory",
    "window",
    "burn_in",
    "stride",
    "batch",
    "lr",
    "loss",
    "epochs",
    "patience",
    "refit",
    "refit_epochs",
    "weekly_memory",
    "half_weights",
    "warm_windows",
    "warm_from",
)


def _fit(
    model: Any,
    args: argparse.Namespace,
    series: Series,
    seed: int,
    target_z: np.ndarray,
    refit_epochs: int | None = None,
) -> dict[str, Any]:
    """Train one member from ``seed``; leaves ``model`` at its best validation epoch.

    With ``refit_epochs`` the windows come from train + validation and the model trains for
    exactly that many epochs and keeps its last weights (the validation loss it reports is
    then in-sample, not a selection criterion).
    """
    import torch
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    inputs = series.features[:-1]  # input t predicts target t + 1
    # a window starting at s uses inputs s .. s+W-1 and targets s+1 .. s+W, all in the fitted part
    fit_end = series.train_end if refit_epochs is None else series.val_end
    starts = np.arange(0, fit_end - 1 - args.window + 1, args.stride)
    if args.warm_windows:
        starts = starts[starts >= args.warm_from * series.steps_per_week]
    if len(starts) == 0:
        raise DatasetError("the training part is shorter than one --window")
    val_lo, val_hi = series.train_end - 1, series.val_end - 1  # target rows t+1 in validation
    out_scale = float(model.out_scale)

    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    best = (np.inf, 0, {k: v.clone() for k, v in model.state_dict().items()})
    best_val_mae = float("nan")
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    epochs = args.epochs if refit_epochs is None else refit_epochs
    desc = f"training seed {seed}" if refit_epochs is None else f"refit seed {seed} on train + validation"
    bar = tqdm(range(1, epochs + 1), desc=desc, unit="epoch", file=sys.stderr)
    for epoch in bar:
        if args.warm_windows:
            warm_h, warm_c = stream_states(model, inputs[: fit_end - 1], args.stride)
        model.train()
        order = rng.permutation(starts)
        losses = []
        for b in range(0, len(order), args.batch):
            idx = order[b : b + args.batch, None] + np.arange(args.window)[None]
            x = torch.from_numpy(inputs[idx])
            y = torch.from_numpy(target_z[idx])
            if args.warm_windows:
                chunk = torch.from_numpy(order[b : b + args.batch] // args.stride)
                h0, c0 = warm_h[:, chunk], warm_c[:, chunk]
            else:
                h0, c0 = model.zero_state(len(idx))
            pred, _, _ = model.forward_scaled(x, h0, c0)
            err = pred[:, args.burn_in :, 0] - y[:, args.burn_in :]
            loss = torch.mean(err.abs()) if args.loss == "mae" else torch.mean(err**2)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
        model.eval()
        pred = run_full(model, inputs[:val_hi])
        val_err = pred[val_lo:val_hi] - target_z[val_lo:val_hi]
        val_loss = float(np.mean(np.abs(val_err))) if args.loss == "mae" else float(np.mean(val_err**2))
        val_mae = float(np.mean(np.abs(val_err))) * out_scale
        history.append(
            {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val_loss, "val_mae_mw": val_mae}
        )
        if val_loss < best[0] or refit_epochs is not None:
            best = (val_loss, epoch, {k: v.clone() for k, v in model.state_dict().items()})
            best_val_mae = val_mae
        bar.set_postfix(train=f"{np.mean(losses):.4f}", val=f"{val_loss:.4f}", best=best[1])
        if refit_epochs is None and epoch - best[1] >= args.patience:
            break
    bar.close()
    model.load_state_dict(best[2])
    return {
        "seed": seed,
        "epochs_run": len(history),
        "best_epoch": best[1],
        "best_val_loss_scaled": best[0],
        "best_val_mae_mw": best_val_mae,
        "seconds": round(time.perf_counter() - t0, 1),
        "history": history,
    }


def train(args: argparse.Namespace, series: Series) -> tuple[Any, dict[str, Any]]:
    """Train ``--ensemble`` members from seeds ``--seed``, ``--seed + 1``, ... and merge them."""
    import torch

    from export.model import Forecaster, ensemble, freeze_daily_memory, init_daily_memory, init_weekly_memory

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(args.threads)

    train_vals = series.values[: series.train_end]
    mean, std = float(train_vals.mean()), float(train_vals.std())
    # the head's unit: the spread of what it predicts (the level, or the half-hourly change)
    out_scale = float(np.diff(train_vals).std()) if args.residual else std

    extras = series.features[: series.train_end, 3:].astype(np.float64)
    extra_mean = extras.mean(axis=0).tolist() if extras.shape[1] else None
    extra_std = [s or 1.0 for s in extras.std(axis=0).tolist()] if extras.shape[1] else None

    def member(seed: int) -> Forecaster:
        torch.manual_seed(seed)
        model = Forecaster(
            n_features=series.features.shape[1],
            extra_mean=extra_mean,
            extra_std=extra_std,
            hidden_size=args.hidden,
            num_layers=args.layers,
            mean=mean,
            std=std,
            hour_harmonics=args.hour_harmonics,
            day_harmonics=args.day_harmonics,
            residual=args.residual,
            out_scale=out_scale,
            hour_onehot=args.hour_encoding == "onehot",
            half_weights=args.half_weights,
            day_onehot=args.day_encoding == "onehot",
            steps_per_day=series.steps_per_day,
        )
        if args.daily_memory:
            init_daily_memory(model, decay=args.daily_memory)
            units = daily_units(series.steps_per_day)
            if args.weekly_memory:
                init_weekly_memory(model, decay=args.weekly_memory)
                units += weekly_units(series.steps_per_day)
            freeze_daily_memory(model, units)
        if args.half_weights:
            model.round_weights_to_half()
        return model

    seeds = [args.seed + j for j in range(args.ensemble)]
    info: dict[str, Any] = {"seed": args.seed, "threads": args.threads, "torch": torch.__version__}
    if args.random_weights:
        info["trained"] = False  # one member of --hidden: the benchmarks' size-controlled models
        return member(args.seed).eval(), info

    base = series.values[:-1] if args.residual else np.full(series.n - 1, mean)
    target_z = ((series.values[1:] - base) / out_scale).astype(np.float32)
    t0 = time.perf_counter()
    members, runs = [], []
    refits: list[dict[str, Any]] = []
    val_lo, val_hi = series.train_end - 1, series.val_end - 1
    selected_val: list[np.ndarray] = []
    for seed in seeds:
        model = member(seed)
        if args.refit_epochs is None:
            runs.append(_fit(model, args, series, seed, target_z))
            if args.half_weights:
                model.round_weights_to_half()
            selected_val.append(run_full(model.eval(), series.features[:val_hi]))
            epochs = runs[-1]["best_epoch"]
        else:
            epochs = args.refit_epochs
        if args.refit or args.refit_epochs is not None:
            model = member(seed)  # the same start, now trained on train + validation
            refits.append(_fit(model, args, series, seed, target_z, refit_epochs=epochs))
        if args.half_weights:
            model.round_weights_to_half()  # what the graph stores
        members.append(model.eval())
    merged = members[0] if len(members) == 1 else ensemble(members)
    # validation MAE of the selection run(s) (trained on train only): the out-of-sample figure;
    # after a refit on train + validation the exported model's own validation MAE is in-sample
    if selected_val:
        val_pred = np.mean(selected_val, axis=0)
        val_mae = float(np.mean(np.abs(val_pred[val_lo:val_hi] - target_z[val_lo:val_hi]))) * out_scale
    else:
        val_mae = float("nan")
    pred = run_full(merged, series.features[:val_hi])
    final_val_mae = float(np.mean(np.abs(pred[val_lo:val_hi] - target_z[val_lo:val_hi]))) * out_scale
    info.update(
        trained=True,
        epochs_run=sum(r["epochs_run"] for r in runs + refits),
        best_epoch=[r["best_epoch"] for r in runs] if len(runs) > 1 else (runs[0]["best_epoch"] if runs else None),
        val_mae_mw=val_mae,
        refit_on_train_and_validation=bool(refits),
        exported_val_mae_mw_in_sample=final_val_mae if refits else None,
        refits=[{k: v for k, v in r.items() if k != "history"} for r in refits],
        seconds=round(time.perf_counter() - t0, 1),
        members=[{k: v for k, v in r.items() if k != "history"} for r in runs],
        history=[r["history"] for r in runs + refits],
        hyperparameters={k: getattr(args, k) for k in HYPERPARAMETERS},
    )
    return merged, info


def model_forecast(onnx_path: Path, series: Series) -> np.ndarray:
    """The exported model run by onnxruntime over the whole series from zero state.

    ``forecast[t]`` is the forecast of reading ``t + 1``, made after reading ``t``.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    meta = {i.name: i.shape for i in sess.get_inputs()}
    layers, hidden = meta["h0"][0], meta["h0"][2]
    zeros = np.zeros((layers, 1, hidden), np.float32)
    y, _, _ = sess.run(None, {"x": series.features[None, :-1], "h0": zeros, "c0": zeros})
    return y[0, :, 0].astype(np.float64)


def test_targets(series: Series) -> np.ndarray:
    return np.arange(series.val_end, series.n)


def baseline_forecasts(series: Series) -> dict[str, np.ndarray]:
    """Every baseline of :mod:`export.baselines`, fitted on train + validation, over the test targets."""
    from export.baselines import forecasts

    return forecasts(series.values, series.val_end, test_targets(series), series.steps_per_day, series.steps_per_week)


def evaluate(onnx_path: Path, series: Series) -> tuple[dict[str, Any], np.ndarray]:
    """Test metrics of the exported model (run by onnxruntime) alone; its whole-series forecast."""
    from export.baselines import errors

    forecast = model_forecast(onnx_path, series)
    targets = test_targets(series)
    return {"model": errors(series.values[targets], forecast[targets - 1])}, forecast


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        features = tuple(c.strip() for c in (args.features or "").split(",") if c.strip())
        series = load_csv(args.csv, args.time, args.target, features) if args.csv else load(args.dataset)
        settle(args, series)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from export.package import write_model_dir

    model, info = train(args, series)
    hidden = model.hidden_size
    out_dir = args.models / args.name / args.version
    what = (
        "Next-half-hour electricity demand forecaster"
        if series.target is None
        else f"Next-step forecaster of {series.feature_info[0]['name']}"
    )
    card = {
        "name": args.name,
        "version": args.version,
        "description": (
            f"{what}: {args.layers}-layer LSTM, "
            + (
                f"{args.ensemble} members of hidden {args.hidden} averaged in one graph (hidden {hidden})"
                if args.ensemble > 1
                else f"hidden {hidden}"
            )
            + f", trained on {series.description}"
        ),
        "features": feature_ranges(series),
        "features_note": (
            "min/max: the valid range of each input; hour and day as in the data, "
            + (
                f"demand from 0 to {DEMAND_MAX_FACTOR:g}x the training maximum"
                if series.target is None
                else f"{series.feature_info[0]['name']} from 0 to {DEMAND_MAX_FACTOR:g}x the training maximum (the "
                "training range widened by its span on both sides if it goes negative), extra columns the training "
                "range widened by its span"
            )
            + "; step: the grid the values lie on (hour and day are read exactly); the service refuses values "
            "outside the range or off the grid"
        ),
        "outputs_meaning": list(series.output_info),
        # how long an idle stream's state stays worth keeping: the weekly memory needs weeks of
        # history, so a stream that misses a day of readings must not lose it (the service's
        # default session TTL follows this)
        "session_ttl_s": SESSION_TTL_S,
        "dataset": {
            "name": series.name,
            "source": series.source,
            "description": series.description,
            "length": series.n,
            "frequency": f"{series.frequency_minutes}min",
            **(series.origin or {}),
            "split": series.split(),
            "split_note": "chronological; index ranges of target readings; scaling from train only",
        },
        "training": {k: v for k, v in info.items() if k != "history"},
    }
    onnx_path = write_model_dir(model, out_dir, card)
    metrics, forecast = evaluate(onnx_path, series)
    from export.baselines import errors

    baselines = baseline_forecasts(series)
    actual = series.values[test_targets(series)]
    metrics.update({name: errors(actual, f) for name, f in baselines.items()})
    from export import intervals

    targets = test_targets(series)
    metrics["model"].update(intervals.metrics(actual, forecast[targets - 1], baselines, series.steps_per_day))
    card_path = out_dir / "model.json"
    import json

    full = json.loads(card_path.read_text())
    full["metrics"] = {
        "test": metrics,
        "note": (
            "one-step-ahead forecasts over the test split, the model run by onnxruntime "
            "statefully over the whole series from zero state (as a streaming client would); "
            "each baseline (export/baselines.py) fitted on train + validation, then run over "
            "the test split with its parameters fixed and its state updated by each reading"
        ),
        "baselines": {name: label for name, label in BASELINE_NAMES.items()},
    }
    card_path.write_text(json.dumps(full, indent=2) + "\n")
    from export import heldout

    heldout.write(out_dir, series)  # the console demo's held-out readings, next to the model
    if not args.no_plots:
        from export.plots import plot_forecast, plot_losses

        if info.get("history"):
            plot_losses(info["history"], out_dir / "loss.png")
        plot_forecast(series, forecast, baselines, metrics, out_dir / "forecast.png")
    _print_metrics(metrics, out_dir, series.feature_info[0].get("unit", ""))
    return 0


def _print_metrics(metrics: dict[str, dict[str, Any]], out_dir: Path, unit: str) -> None:
    print(f"wrote {out_dir}/model.onnx and model.json")
    u = f" ({unit})" if unit else ""
    print(f"{'test split':<28}{'MAE' + u:>12}{'RMSE' + u:>12}")
    for name, m in metrics.items():
        print(f"{name:<28}{m['mae']:>12.1f}{m['rmse']:>12.1f}")
    m = metrics["model"]
    lo, hi = m["mae_ci95"]
    vs = m["mae_minus_best_baseline"]
    print(f"model MAE 95% interval (block bootstrap by day): {lo:.1f} to {hi:.1f}{u}")
    print(
        f"model MAE minus {vs['baseline']}: {vs['mae']:+.1f}{u}, 95% interval {vs['ci95'][0]:+.1f} to {vs['ci95'][1]:+.1f}"
    )


if __name__ == "__main__":
    sys.exit(main())
