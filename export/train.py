"""Train the default forecaster and export it: ``python -m export.train``.

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

from export.data import FEATURES, OUTPUTS, STEPS_PER_DAY, STEPS_PER_WEEK, DatasetError, Series, load


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m export.train", description=__doc__)
    p.add_argument("--dataset", default="taylor", help="dataset name (default: taylor)")
    p.add_argument("--name", default="demand", help="model name in the repository")
    p.add_argument("--version", default="1", help="model version (a positive integer)")
    p.add_argument("--models", type=Path, default=Path("models"), help="model repository root")
    p.add_argument("--hidden", type=int, default=64, help="LSTM hidden size")
    p.add_argument("--layers", type=int, default=2, help="number of stacked LSTM layers")
    p.add_argument("--window", type=int, default=STEPS_PER_WEEK, help="training window (steps)")
    p.add_argument("--burn-in", type=int, default=STEPS_PER_DAY, help="steps of each window not scored")
    p.add_argument("--stride", type=int, default=24, help="step between training window starts")
    p.add_argument("--batch", type=int, default=16, help="windows per optimiser step")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    p.add_argument("--epochs", type=int, default=300, help="maximum epochs")
    p.add_argument("--patience", type=int, default=20, help="epochs without validation gain before stopping")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps runs bit-identical)")
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="skip training: export randomly initialised weights (for benchmarks)",
    )
    p.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    args = p.parse_args(argv)
    for field in ("hidden", "layers", "window", "stride", "batch", "epochs", "threads"):
        if getattr(args, field) <= 0:
            p.error(f"--{field.replace('_', '-')} must be positive, got {getattr(args, field)}")
    if args.patience < 0 or args.burn_in < 0 or args.burn_in >= args.window:
        p.error("--patience must be >= 0 and --burn-in must lie in [0, --window)")
    if args.lr <= 0:
        p.error("--lr must be positive")
    if not args.version.isdigit() or int(args.version) < 1:
        p.error(f"--version must be a positive integer, got {args.version!r}")
    return args


def run_full(model: Any, inputs: np.ndarray) -> np.ndarray:
    """Run the model statefully over a whole series from zero state; scaled predictions."""
    import torch

    with torch.no_grad():
        x = torch.from_numpy(inputs[None])
        h0, c0 = model.zero_state(1)
        ys, _, _ = model.forward_scaled(x, h0, c0)
    return ys[0, :, 0].numpy()


def train(args: argparse.Namespace, series: Series) -> tuple[Any, dict[str, Any]]:
    import torch
    from tqdm import tqdm

    from export.model import Forecaster

    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)

    train_vals = series.values[: series.train_end]
    mean, std = float(train_vals.mean()), float(train_vals.std())
    model = Forecaster(hidden_size=args.hidden, num_layers=args.layers, mean=mean, std=std)
    info: dict[str, Any] = {"seed": args.seed, "threads": args.threads, "torch": torch.__version__}
    if args.random_weights:
        info["trained"] = False
        return model.eval(), info

    inputs = series.features[:-1]  # input t predicts target t + 1
    target_z = ((series.values[1:] - mean) / std).astype(np.float32)
    # a window starting at s uses inputs s .. s+W-1 and targets s+1 .. s+W, all in train
    starts = np.arange(0, series.train_end - 1 - args.window + 1, args.stride)
    if len(starts) == 0:
        raise DatasetError("the training part is shorter than one --window")
    val_lo, val_hi = series.train_end - 1, series.val_end - 1  # target rows t+1 in validation

    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    best = (np.inf, 0, {k: v.clone() for k, v in model.state_dict().items()})
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    bar = tqdm(range(1, args.epochs + 1), desc="training", unit="epoch", file=sys.stderr)
    for epoch in bar:
        model.train()
        order = rng.permutation(starts)
        losses = []
        for b in range(0, len(order), args.batch):
            idx = order[b : b + args.batch, None] + np.arange(args.window)[None]
            x = torch.from_numpy(inputs[idx])
            y = torch.from_numpy(target_z[idx])
            h0, c0 = model.zero_state(len(idx))
            pred, _, _ = model.forward_scaled(x, h0, c0)
            loss = torch.mean((pred[:, args.burn_in :, 0] - y[:, args.burn_in :]) ** 2)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
        model.eval()
        pred = run_full(model, inputs[:val_hi])
        val_loss = float(np.mean((pred[val_lo:val_hi] - target_z[val_lo:val_hi]) ** 2))
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val_loss})
        if val_loss < best[0]:
            best = (val_loss, epoch, {k: v.clone() for k, v in model.state_dict().items()})
        bar.set_postfix(train=f"{np.mean(losses):.4f}", val=f"{val_loss:.4f}", best=best[1])
        if epoch - best[1] >= args.patience:
            break
    bar.close()
    model.load_state_dict(best[2])
    info.update(
        trained=True,
        epochs_run=len(history),
        best_epoch=best[1],
        best_val_mse_scaled=best[0],
        seconds=round(time.perf_counter() - t0, 1),
        history=history,
        hyperparameters={
            k: getattr(args, k)
            for k in ("hidden", "layers", "window", "burn_in", "stride", "batch", "lr", "epochs", "patience")
        },
    )
    return model.eval(), info


def evaluate(onnx_path: Path, series: Series) -> tuple[dict[str, Any], np.ndarray]:
    """Test metrics of the exported model (run by onnxruntime) and of the baselines."""
    import onnxruntime as ort

    from export.baselines import errors, persistence, seasonal_naive

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    meta = {i.name: i.shape for i in sess.get_inputs()}
    layers, hidden = meta["h0"][0], meta["h0"][2]
    zeros = np.zeros((layers, 1, hidden), np.float32)
    y, _, _ = sess.run(None, {"x": series.features[None, :-1], "h0": zeros, "c0": zeros})
    forecast = y[0, :, 0].astype(np.float64)  # forecast[t] is for target t + 1
    targets = np.arange(series.val_end, series.n)
    actual = series.values[targets]
    metrics = {
        "model": errors(actual, forecast[targets - 1]),
        "persistence": errors(actual, persistence(series.values, targets)),
        "seasonal_naive_daily": errors(actual, seasonal_naive(series.values, targets, STEPS_PER_DAY)),
        "seasonal_naive_weekly": errors(actual, seasonal_naive(series.values, targets, STEPS_PER_WEEK)),
    }
    return metrics, forecast


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        series = load(args.dataset)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from export.package import write_model_dir

    model, info = train(args, series)
    out_dir = args.models / args.name / args.version
    card = {
        "name": args.name,
        "version": args.version,
        "description": (
            f"Next-half-hour electricity demand forecaster: {args.layers}-layer LSTM, "
            f"hidden {args.hidden}, trained on {series.description}"
        ),
        "features": list(FEATURES),
        "outputs_meaning": list(OUTPUTS),
        "dataset": {
            "name": series.name,
            "source": series.source,
            "description": series.description,
            "length": series.n,
            "frequency": "30min",
            "split": series.split(),
            "split_note": "chronological; index ranges of target readings; scaling from train only",
        },
        "training": {k: v for k, v in info.items() if k != "history"},
    }
    onnx_path = write_model_dir(model, out_dir, card)
    metrics, forecast = evaluate(onnx_path, series)
    card_path = out_dir / "model.json"
    import json

    full = json.loads(card_path.read_text())
    full["metrics"] = {
        "test": metrics,
        "note": (
            "one-step-ahead forecasts over the test split, the model run by onnxruntime "
            "statefully over the whole series from zero state (as a streaming client would)"
        ),
    }
    card_path.write_text(json.dumps(full, indent=2) + "\n")
    if not args.no_plots:
        from export.plots import plot_forecast, plot_losses

        if info.get("history"):
            plot_losses(info["history"], info["best_epoch"], out_dir / "loss.png")
        plot_forecast(series, forecast, metrics, out_dir / "forecast.png")
    _print_metrics(metrics, out_dir)
    return 0


def _print_metrics(metrics: dict[str, dict[str, float]], out_dir: Path) -> None:
    print(f"wrote {out_dir}/model.onnx and model.json")
    print(f"{'test split':<24}{'MAE (MW)':>12}{'RMSE (MW)':>12}")
    for name, m in metrics.items():
        print(f"{name:<24}{m['mae']:>12.1f}{m['rmse']:>12.1f}")


if __name__ == "__main__":
    sys.exit(main())
