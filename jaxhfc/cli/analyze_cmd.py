"""``jaxhfc analyze``: what a trained model uses, from a run folder or a params file.

Runs, on the test split:

* the paper's Fig. 1/2 prediction counts ({LFC right, wrong} x {HFC right, wrong}) at every
  radius, with the count that independent LFC/HFC predictions would give beside the
  "LFC wrong, HFC right" cell (the baseline, not zero);
* accuracy on the LFC and HFC versions over radius, and where the two curves cross;
* the Fourier sensitivity heat map (Yin et al. 2019), with the clean error beside it.

Writes ``analysis.json`` (every number), ``heatmap.npy`` and three figures to ``--out``.
The model comes from a run folder written by ``jaxhfc train`` / ``jaxhfc.fit.fit``
(config, checkpoint and dataset as recorded), or from a params file: a flax msgpack of the
variables (``flax.serialization.to_bytes(variables)``, ``.msgpack``) or an ``.npz`` whose
keys are the ``/``-joined variable paths (``params/conv_init/kernel``), with the model named
by ``--model``/``--width``/``--norm``/``--normalize`` and the data by ``--dataset``.

Radius defaults follow the image size: every integer radius from 0 to the spectrum's corner;
the heat map's default ``eps`` is 4 (Yin et al., CIFAR-10) scaled by ``sqrt(H*W)/32``.
"""

from __future__ import annotations

import argparse
import logging
import math
import pathlib
from typing import Any

import numpy as np

from jaxhfc.cli._errors import CLIError

log = logging.getLogger("jaxhfc")


def add_analyze_parser(sub: Any) -> None:
    """Register ``jaxhfc analyze``."""
    from jaxhfc import datasets, models

    p = sub.add_parser(
        "analyze",
        help="prediction counts (Fig. 1/2), accuracy vs radius and the Fourier heat map of a model",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model_path", metavar="RUN_OR_PARAMS",
                   help="run folder (with config.json and checkpoints/) or params file (.msgpack or .npz)")
    p.add_argument("--out", "-o", help="output folder (default: RUN/analyze, or runs/analyze/<params file stem>)")
    p.add_argument("--step", type=int, help="checkpoint step of a run folder (default: newest)")
    g = p.add_argument_group("data (a run folder's own dataset by default)")
    g.add_argument("--dataset", type=datasets.dataset_arg, help="synthetic, cifar10, tfds:NAME, npz:PATH or folder:PATH")
    g.add_argument("--data-dir", help="dataset folder (cifar10 archive or TFDS data dir)")
    g.add_argument("--num-test", type=int, help="a class-balanced subset of the test split of this size")
    g = p.add_argument_group("model of a params file")
    g.add_argument("--model", choices=models.MODEL_NAMES, default="small_cnn")
    g.add_argument("--width", type=int, default=None)
    g.add_argument("--norm", choices=("batch", "none"), default=None)
    g.add_argument("--normalize", action="store_true", help="CIFAR-10 mean/std normalisation inside the model")
    g = p.add_argument_group("analyses")
    g.add_argument("--radii", type=float, nargs="+", help="radii (default: 0, 1, ..., the spectrum's corner)")
    g.add_argument("--scaling", choices=("paper", "unit"), help="filtered-image scaling (default: the run's, else paper)")
    g.add_argument("--heatmap-images", type=int, default=256, help="test images for the heat map (0: no heat map)")
    g.add_argument("--heatmap-eps", type=float, help="L2 norm of the Fourier perturbation (default 4 * sqrt(H*W)/32)")
    g.add_argument("--batch-size", type=int, default=256)
    g.add_argument("--seed", type=int, default=0, help="heat-map signs and subsets")
    p.set_defaults(func=cmd_analyze)


# ----------------------------------------------------------------------------- loading


def _unflatten(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split("/")
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = value
    return tree


def read_variables(path: pathlib.Path) -> dict:
    """Flax variables from a ``.msgpack`` (flax serialization) or ``.npz`` (``/``-joined keys)
    file; a bare params tree is wrapped as ``{"params": tree}``."""
    if not path.is_file():
        raise CLIError(f"{path}: no such run folder or params file")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                tree = _unflatten({k: z[k] for k in z.files})
        else:
            from flax import serialization

            tree = serialization.msgpack_restore(path.read_bytes())
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise CLIError(f"{path}: cannot read as a params file ({type(err).__name__}: {err}); expected a flax "
                       "msgpack of the variables (.msgpack) or an .npz with '/'-joined variable paths") from None
    if not isinstance(tree, dict) or not tree:
        raise CLIError(f"{path}: expected a dict of variables, got {type(tree).__name__}")
    return tree if "params" in tree else {"params": tree}


def _check_variables(path: pathlib.Path, variables: dict, model: Any, sample: np.ndarray) -> dict:
    """``variables`` with the structure and shapes ``model`` expects, or a CLIError naming the file."""
    import jax

    template = jax.eval_shape(lambda x: model.init({"params": jax.random.key(0)}, x, train=False), sample)
    want = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(template)}
    got = {jax.tree_util.keystr(k): np.shape(v) for k, v in jax.tree_util.tree_leaves_with_path(variables)}
    if want != got:
        missing = sorted(set(want) - set(got))[:3]
        extra = sorted(set(got) - set(want))[:3]
        shapes = [f"{k}: {got[k]} != {want[k]}" for k in sorted(set(want) & set(got)) if want[k] != got[k]][:3]
        raise CLIError(f"{path}: variables do not fit the model (missing {missing}, unexpected {extra}, "
                       f"shapes {shapes}); check --model/--width/--norm and --dataset (classes, image size)")
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), variables)


def _load_model(args: argparse.Namespace):
    """``(logits_fn, test Dataset, scaling, description)``."""
    from jaxhfc import datasets, models
    from jaxhfc.evaluation import logits_fn
    from jaxhfc.cli.train_cmd import load_run

    path = pathlib.Path(args.model_path)
    if path.is_dir():
        config, state, model = load_run(path, step=args.step)
        d = config.data
        dataset = args.dataset or d.name
        data_dir = args.data_dir if args.data_dir is not None else d.dir
        source = d.source if dataset == d.name else "auto"
        test = datasets.load_dataset(dataset, split="test", data_dir=data_dir, source=source, seed=d.seed,
                                 num_test=args.num_test or (d.num_test if dataset == d.name else None))
        scaling = args.scaling or d.scaling
        fn = logits_fn(state, model)
        return fn, test, scaling, {"run": str(path), "model": config.net.name, "dataset": dataset}
    dataset = args.dataset or "synthetic"
    test = datasets.load_dataset(dataset, split="test", data_dir=args.data_dir, seed=args.seed,
                             num_test=args.num_test or (1000 if dataset == "synthetic" else None))
    model = models.get_model(args.model, num_classes=test.num_classes, width=args.width, norm=args.norm,
                             normalize=args.normalize)
    variables = _check_variables(path, read_variables(path), model, np.zeros((1, *test.images.shape[1:]), np.float32))
    return logits_fn(variables, model), test, args.scaling or "paper", {
        "params": str(path), "model": args.model, "dataset": dataset}


# ----------------------------------------------------------------------------- command


def _independent(counts: dict, n: int) -> np.ndarray:
    """Expected 'LFC wrong, HFC right' count if LFC and HFC predictions were independent."""
    lo, hi = np.asarray(counts["low_right"], np.float64) / n, np.asarray(counts["high_right"], np.float64) / n
    return (1.0 - lo) * hi * n


def cmd_analyze(args: argparse.Namespace) -> int:
    import jax

    from jaxhfc import analysis, parallel, plotting, results

    if args.batch_size < 1 or args.heatmap_images < 0 or (args.num_test is not None and args.num_test < 1):
        raise CLIError("--batch-size and --num-test must be >= 1 and --heatmap-images >= 0")
    if args.radii is not None and any(not math.isfinite(r) or r < 0 for r in args.radii):
        raise CLIError(f"--radii must be finite and >= 0, got {args.radii}")
    fn, test, scaling, source = _load_model(args)
    n, h, w, c = test.images.shape
    mesh = parallel.make_mesh(None)
    res = analysis.accuracy_vs_radius(fn, test.images, test.labels, args.radii, scaling=scaling,
                                      batch_size=args.batch_size, mesh=mesh, return_predictions=True)
    counts = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in res["counts"].items()}
    independent = _independent(res["counts"], n)
    summary: dict[str, Any] = {
        **source, "scaling": scaling, "n": int(n), "image_shape": [h, w, c], "class_names": list(test.class_names),
        "acc_orig": res["acc_orig"], "radii": res["radii"].tolist(), "acc_low": res["acc_low"].tolist(),
        "acc_high": res["acc_high"].tolist(), "crossing": res["crossing"], "counts": counts,
        "low_wrong_high_right_if_independent": independent.tolist(),
    }
    out = pathlib.Path(args.out) if args.out else (
        pathlib.Path(args.model_path) / "analyze" if pathlib.Path(args.model_path).is_dir()
        else pathlib.Path("runs") / "analyze" / pathlib.Path(args.model_path).stem)
    out.mkdir(parents=True, exist_ok=True)
    figures = []
    fig = plotting.accuracy_radius_figure(res["radii"], res["acc_low"], res["acc_high"], crossing=res["crossing"],
                                          acc_orig=res["acc_orig"], title=f"{test.name}: accuracy vs radius")
    figures.append(_save(fig, out / "accuracy_radius.png"))
    fig = plotting.prediction_counts_figure(res["radii"], res["counts"], title=f"{test.name}: prediction counts")
    figures.append(_save(fig, out / "prediction_counts.png"))
    if args.heatmap_images:
        k = min(args.heatmap_images, n)
        eps = args.heatmap_eps if args.heatmap_eps is not None else 4.0 * math.sqrt(h * w) / 32.0
        x = np.asarray(test.images[:k], np.float32) / 255.0
        y = np.asarray(test.labels[:k], np.int32)
        grid = analysis.fourier_heatmap(fn, x, y, jax.random.key(args.seed), eps=eps, mesh=mesh,
                                        batch_size=args.batch_size)
        clean_error = float(np.mean(res["pred_orig"][:k] != y))
        np.save(out / "heatmap.npy", grid)
        summary["heatmap"] = {"eps": eps, "n": k, "clean_error": clean_error, "mean_error": float(grid.mean()),
                              "max_error": float(grid.max()), "file": "heatmap.npy"}
        fig = plotting.heatmap_figure({f"eps {eps:g}, clean error {clean_error:.3f}": grid},
                                      title=f"{test.name}: Fourier heat map")
        figures.append(_save(fig, out / "heatmap.png"))
    summary["figures"] = figures
    results.write_json(out / "analysis.json", summary)

    print(f"{source.get('run') or source.get('params')}: {test.name} test, {n} images {h}x{w}x{c}, "
          f"accuracy {res['acc_orig']:.4f}, scaling {scaling}")
    print(f"{'r':>6} {'acc LFC':>8} {'acc HFC':>8} {'LFC+ HFC-':>10} {'LFC- HFC+':>10} {'(indep.)':>9}")
    for i, r in enumerate(res["radii"]):
        print(f"{r:>6g} {res['acc_low'][i]:>8.4f} {res['acc_high'][i]:>8.4f} "
              f"{counts['low_right_high_wrong'][i]:>10d} {counts['low_wrong_high_right'][i]:>10d} "
              f"{independent[i]:>9.1f}")
    cross = "none" if res["crossing"] is None else f"{res['crossing']:.2f}"
    print(f"LFC and HFC accuracy curves cross at r = {cross}")
    if "heatmap" in summary:
        hm = summary["heatmap"]
        print(f"heat map ({hm['n']} images, eps {hm['eps']:g}): error mean {hm['mean_error']:.3f}, "
              f"max {hm['max_error']:.3f}, clean {hm['clean_error']:.3f}")
    print(f"wrote {out / 'analysis.json'} and {', '.join(figures)}")
    return 0


def _save(fig, path: pathlib.Path) -> str:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path.name
