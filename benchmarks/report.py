"""Markdown from a benchmark-suite JSON (``benchmarks/run_all.py``), and the README's
performance section regenerated from it (between ``<!-- perf:start -->`` and
``<!-- perf:end -->``), so no figure in the README is typed by hand. The quick
reproduction's time per artefact has its own block (``experiments.reproduce_all``), refreshed
here too.

    python -m benchmarks.report [RESULTS.json] [--readme README.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks import common
from experiments import readme_blocks

START, END = "<!-- perf:start -->", "<!-- perf:end -->"


#: Issue 15's target: a population of 8 paper-setting ResNet18s (batch 100) runs at least
#: this many times the images/s of one model on a GPU.
POPULATION_TARGET = 3.0


def _f(v, fmt="{:.1f}"):
    return "—" if v is None else fmt.format(v)


def _one(results: dict, name: str) -> dict | None:
    items = results.get(name) or []
    return items[0] if items else None


def markdown(record: dict) -> str:
    hw = record["hardware"]
    v = hw["versions"]
    lines = [
        f"Measured {record['time']} on **{hw['cpu']}** ({hw['cpu_cores']} cores), backend `{hw['backend']}`, "
        f"{hw['device_count']} x `{hw['device_kind']}`; jax {v.get('jax')}, flax {v.get('flax')}"
        f"{', torch ' + v['torch'] if v.get('torch') else ''}. Mode: {'quick (small sizes)' if record['quick'] else 'full'}."
        " Medians over repeats; compile time reported apart from steady state.",
        "",
    ]
    res = record["results"]
    f = _one(res, "filters")
    if f:
        j = f["jaxhfc"]
        lines += [
            f"**Fourier filtering**, {f['n_images']:,} images of 32x32x3 at {f['n_radii']} radii (one jitted call per "
            f"chunk of {f['chunk']:,}):",
            "",
            "| implementation | images/s | time for the split | vs jaxhfc |",
            "|---|---|---|---|",
            f"| jaxhfc (jit, one FFT for all radii) | {j['images_per_s']:,.0f} | {j['median_s']:.2f} s "
            f"(first call {j['first_s']:.2f} s) | 1x |",
            f"| numpy, per image (paper code style) | {f['numpy_loop']['images_per_s']:,.0f} | "
            f"{f['numpy_loop']['extrapolated_split_s']:.1f} s (extrapolated) | {f['speedup_vs_numpy_loop']:.1f}x slower |",
            f"| numpy, vectorised | {f['numpy_vectorised']['images_per_s']:,.0f} | "
            f"{f['numpy_vectorised']['extrapolated_split_s']:.1f} s (extrapolated) | {f['speedup_vs_numpy_vectorised']:.1f}x slower |",
            "",
            f"Effective bandwidth {j['effective_GBps']:.2f} GB/s"
            + (f" ({100 * j['fraction_of_peak_bandwidth']:.0f}% of the device's peak)." if j.get("fraction_of_peak_bandwidth") else "."),
            "",
        ]
    ip = _one(res, "input_pipeline")
    if ip:
        cfg = ip["config"]
        lines += [f"**Input pipeline** (on device: gather + crop/flip + normalise), {cfg['images']:,} images, batch "
                  f"{cfg['global_batch']}, {cfg['devices']} device(s):", "", "| variant | images/s |", "|---|---|"]
        lines += [f"| {k} | {r['images_per_s']:,.0f} |" for k, r in ip["results"].items()]
        lines.append("")
    tt = _one(res, "train_throughput")
    if tt:
        lines += [f"**Training step**, {tt['model']} (width {tt['width'] or 'default'}), all devices, synced = metrics "
                  "fetched every step as in `fit`:", "",
                  "| dtype | batch | img/s (pipelined) | img/s (synced) | compile s | GFLOP/img | MFU | 200 CIFAR epochs |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in tt["jax"]:
            if "skipped" in r:
                continue
            lines.append(f"| {r['dtype']} | {r['batch']} | {r['img_per_s_pipelined']:,.0f} | {r['img_per_s_sync']:,.0f} | "
                         f"{r['compile_s']:.1f} | {_f(r['flops_per_image'] and r['flops_per_image'] / 1e9, '{:.2f}')} | "
                         f"{_f(r.get('mfu') and 100 * r['mfu'], '{:.1f}%')} | {r['epochs200_min']:.0f} min |")
        torch_rows = tt["torch"]
        if isinstance(torch_rows, str):
            lines += ["", f"PyTorch reference: {torch_rows}."]
        else:
            lines += ["", "| PyTorch reference | batch | img/s | jaxhfc / PyTorch |", "|---|---|---|---|"]
            lines += [f"| {r.get('dtype')} | {r.get('batch')} | {_f(r.get('img_per_s'), '{:,.0f}')} | "
                      f"{_f(r.get('jax_over_torch'), '{:.2f}x')} |" for r in torch_rows]
        lines.append("")
    at = _one(res, "attacks")
    if at:
        lines += ["**Attacks**:", "", "| model | PGD-10 img/s | PGD-20 on 10,000 images | clean step | Madry PGD-10 step | ratio |",
                  "|---|---|---|---|---|---|"]
        for r in at["results"]:
            t = r["train"]
            lines.append(f"| {r['model']} (width {r['width'] or 'default'}) | {r['pgd10']['images_per_s']:,.1f} | "
                         f"{r['pgd20_eval']['scaled_to_10000_s']:.1f} s (from {r['pgd20_eval']['images']} images) | "
                         f"{t['clean']['median_s'] * 1e3:.0f} ms | {t['adversarial']['median_s'] * 1e3:.0f} ms | "
                         f"{t['adversarial_over_clean']:.1f}x |")
        lines.append("")
    sc = _one(res, "scaling")
    if sc:
        lines += [f"**Scaling**, {sc['model']} (width {sc['width'] or 'default'}), global batch {sc['batch']}"
                  f"{' — fake CPU devices sharing the same cores: this shows the overhead of the multi-device path, not a speed-up' if sc['fake_devices'] else ''}:",
                  "", "| devices | img/s | speed-up | efficiency |", "|---|---|---|---|"]
        lines += [f"| {r['devices']} | {r['img_per_s']:,.0f} | {r['speedup']:.2f} | {r['efficiency']:.2f} |" for r in sc["rows"]]
        lines.append("")
    hm = _one(res, "heatmap")
    if hm:
        o, lp = hm["jaxhfc"], hm["per_frequency_loop"]
        lines += [f"**Fourier heat map**, {hm['n_frequencies']} frequencies x {hm['n_images']} images of "
                  f"{hm['image_size'][0]}x{hm['image_size'][1]}: jaxhfc {o['median_s']:.2f} s vs a per-frequency loop "
                  f"{lp['median_s']:.2f} s ({hm['speedup']:.1f}x), max map difference {hm['max_abs_map_difference']:.1e}.", ""]
    for po in res.get("populations") or []:
        for r in po["results"]:
            lo = r["loop"]
            lines += [f"**Populations**, {r['model']} (width {r['width'] or 'default'}), {r['dtype']}, batch {r['batch']} "
                      f"per model, {r['devices']} device(s): K models in one program (vmapped model axis) vs the same "
                      f"models one after the other ({r['sequential']['img_per_s']:,.0f} img/s, "
                      f"{r['sequential']['loop'].replace('_', ' ')} loop):", "",
                      "| models K | img/s (all models) | img/s per model | vs one after the other | first run s |",
                      "|---|---|---|---|---|"]
            lines += [f"| {p['k']} | {p['img_per_s_total']:,.0f} | {p['img_per_s_per_model']:,.0f} | "
                      f"{p['vs_sequential']:.2f}x | {p['first_s']:.1f} |" for p in r["populations"]]
            eight = [p for p in r["populations"] if p["k"] == 8]
            if eight and r["model"] == "resnet18" and r["batch"] == 100:
                met = "met" if eight[0]["vs_sequential"] >= POPULATION_TARGET else "not met"
                lines += ["", f"Target for 8 paper-setting ResNet18s in one program: at least {POPULATION_TARGET:.0f}x "
                              f"the images/s of one model; measured {eight[0]['vs_sequential']:.2f}x ({met})."]
            lines += ["", "| training loop (one model) | steps per call | img/s | vs per-step synced | first run s |",
                      "|---|---|---|---|---|"]
            lines += [f"| {name.replace('_', ' ')} | {v['steps_per_call']} | {v['img_per_s']:,.0f} | "
                      f"{v['vs_per_step_sync']:.2f}x | {v['first_s']:.1f} |" for name, v in lo.items()]
            lines.append("")
    if record.get("errors"):
        lines += ["Benchmarks that failed: " + ", ".join(f"{k} ({v})" for k, v in record["errors"].items()), ""]
    if hw["backend"] == "cpu":
        lines += ["GPU figures: not yet measured (no accelerator was available to this run); "
                  "`python -m benchmarks.run_all --update-readme` on a GPU host fills this section.", ""]
    return "\n".join(lines)


def latest(results_dir: Path | None = None) -> Path:
    folder = Path(results_dir) if results_dir else common.RESULTS_DIR
    files = sorted(p for p in folder.glob("*.json") if "suite" in json.loads(p.read_text()))
    if not files:
        raise FileNotFoundError(f"no suite results in {folder}: run python -m benchmarks.run_all first")
    return max(files, key=lambda p: json.loads(p.read_text())["time"])


def update_readme(json_path: Path, readme: Path | None = None, *, reproduction: Path | None = None) -> Path:
    """Fill the performance page's section (default ``docs/performance.md``) from a suite JSON, and the quick reproduction's
    time per artefact (its own marked block, :func:`experiments.reproduce_all.update_time_section`)
    from the files that run wrote in ``reproduction`` (default ``results/synthetic`` beside the README)."""
    root = Path(__file__).resolve().parent.parent
    readme = Path(readme) if readme else root / "docs" / "performance.md"
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{readme} has no {START} ... {END} section to fill")
    record = json.loads(Path(json_path).read_text())
    body = markdown(record) + f"\n(Generated by `benchmarks/report.py` from `benchmarks/results/{Path(json_path).name}`.)\n"
    readme_blocks.fill_block(readme, START, END, body)
    base = readme.parent.parent if readme.parent.name == "docs" else readme.parent  # the repository root
    readme_blocks.update_time_section(readme, base / "results" / "synthetic" if reproduction is None
                                      else Path(reproduction))
    return readme


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="?", help="suite JSON (default: the newest in benchmarks/results)")
    p.add_argument("--readme", default=None)
    args = p.parse_args(argv)
    path = Path(args.results) if args.results else latest()
    print(f"updated {update_readme(path, args.readme)} from {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
