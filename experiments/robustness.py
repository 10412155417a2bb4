"""Table 2 and Fig. 7: adversarial robustness and kernel smoothness.

M_natural (vanilla) and M_adversarial (Madry PGD training, the paper's settings), plus a model
trained with the kernel-smoothness penalty. For each model and each post-hoc kernel defence
(smoothing of the first-layer kernels with rho, paper Eq. 3; removing the high frequencies of
the first-layer kernels), clean accuracy and FGSM / PGD accuracy at Linf eps 0.03, 0.06, 0.09
(images in [0, 1]). Also the first-layer kernels as pictures and the smoothness of every layer.

The released code searched for the minimal eps with Foolbox; we use fixed-eps Linf FGSM and
PGD (white box, through the smoothed model) and say so. The paper's table values are not
available to us: the claims are compared qualitatively.

Paper claims: adversarially trained models have smoother first-layer kernels; smoothing the
kernels lowers clean accuracy but raises adversarial accuracy, especially at large eps;
removing kernel HFC and the smoothness penalty give only small gains.

    python -m experiments.robustness [--quick] [--seeds N] [--dataset ...]
"""

from __future__ import annotations

import jax
import numpy as np

from experiments.common import Context, claim, combine_seeds, main_for, save_figure, write_artefact
from jaxhfc import evidence as E

NAME = "robustness"
#: Everything this artefact (and input_defence, which shares the attack settings) changes by
#: scale. ``n_eval``: test images attacked (None: all); ``check_n``: images the re-run checks
#: use (equal to the attack batch, so that the re-runs reuse the compiled attack program of
#: that shape); ``min_test``/``adv_min``: preconditions on M_natural / M_adversarial test accuracy;
#: ``defended``: the models that get the post-hoc kernel defences (rho: Eq. 3 smoothing;
#: ``kernel_radii``: kernel low-pass, for 3x3 kernels 1.2 keeps the centre and its 4 neighbours,
#: 1.0 only the mean); ``defended_eps``: the radii of the defended rows (the claims about
#: kernel smoothing are made at the largest eps); ``penalty``: also train and attack a model with
#: the kernel-smoothness penalty (no claim is judged on it); ``escalate``: how many times a row's
#: attacks are made stronger (2x steps, one more restart) when the more-steps check says they
#: have not converged (see ``eval_robust``); ``apgd_targets``: target classes of APGD-T in the
#: worst case (0: no APGD-T; it runs as a cascade, only on the images the other attacks left
#: right). Quick scale keeps what the claims need, to fit a 2-core CPU: APGD-T over 9 targets
#: costs 9 APGD runs per eps and check there, and with the attack loops unrolled (UNROLL) the
#: quick robustness driver with it was still compiling after 20 minutes, at 22 GiB of memory,
#: when it was stopped (2-core VM, 24 GiB; 2026-11-26).
SETTINGS = {
    "full": dict(eps=(0.03, 0.06, 0.09), defended_eps=(0.03, 0.06, 0.09), rhos=(0.125, 0.25, 0.5, 1.0),
                 kernel_radii=(1.2, 1.0), defended=("M_natural", "M_adversarial"), penalty=True, pgd_steps=20,
                 apgd_steps=100, apgd_targets=9, n_eval=None, check_n=1000, batch_size=1000, kernel_penalty=0.01,
                 min_test=0.5, adv_min=0.5, escalate=1),
    "quick": dict(eps=(0.03, 0.09), defended_eps=(0.09,), rhos=(1.0,), kernel_radii=(1.0,), defended=("M_natural",),
                  penalty=False, pgd_steps=5, apgd_steps=10, apgd_targets=0, n_eval=128, check_n=128, batch_size=128,
                  kernel_penalty=0.05, min_test=0.5, adv_min=0.6, escalate=1),
    "tiny": dict(eps=(0.03,), defended_eps=(0.03,), rhos=(1.0,), kernel_radii=(1.0,), defended=("M_natural",),
                 penalty=True, pgd_steps=2, apgd_steps=3, apgd_targets=0, n_eval=32, check_n=32, batch_size=32,
                 kernel_penalty=0.05, min_test=0.0, adv_min=0.0, escalate=1),
}


def UNROLL() -> bool:  # noqa: N802
    """Unroll attack loops on a CPU (XLA:CPU runs convolutions in while loops several times slower)."""
    return jax.default_backend() == "cpu"


def attack_settings(ctx: Context) -> dict:
    """This scale's settings with the eps values on the dataset's scale (``Context.eps``)."""
    return ctx.scaled(SETTINGS[ctx.scale])


def attack_seed(seed: int) -> int:
    """Seed of the attack keys of a training seed's rows (robustness and input_defence use the
    same, so an undefended row is one computation shared by both tables)."""
    return seed + 7


def attack_list(pgd_steps: int, apgd_steps: int, targets: int = 0) -> tuple:
    """The attacks of every robustness row: the paper's FGSM and PGD, then APGD-CE and APGD-DLR,
    and APGD-T over ``targets`` target classes when ``targets > 0`` (AutoAttack's standard
    version uses 9; full scale runs it, quick scale leaves it out to fit the 2-core CPU budget).
    One tuple everywhere, so every row of a model structure runs one compiled program."""
    from jaxhfc import attacks

    return (attacks.fgsm_attack(), attacks.pgd_attack(pgd_steps)) + attacks.standard_attacks(apgd_steps,
                                                                                           targets=targets)


def attacks_text(targets: int = 0) -> str:
    """The attacks behind 'worst', in words (tables, claims and notes)."""
    return "FGSM, PGD, APGD-CE, APGD-DLR" + (f", APGD-T ({targets} targets)" if targets else "")


def merge_seed_checks(rows: list, per_seed_rows: list) -> None:
    """Write the failed checks of every seed into the combined rows' ``checks`` columns (all eps
    and per eps), and the strongest attacks any seed needed into ``attack x`` (in place; the rows
    of all seeds come in the same order)."""
    for r, *others in zip(rows, *per_seed_rows[1:]):
        for k in [k for k in r if k == "checks" or k.startswith("checks ")]:
            r[k] = " / ".join(dict.fromkeys([r[k], *(o.get(k, "ok") for o in others)]))
        if "attack x" in r:
            r["attack x"] = max([r["attack x"], *(o.get("attack x", 1) for o in others)])


#: Sanity-check columns of every row (see ``eval_robust``).
CHECK_COLUMNS = ["attack x", "median |logit|", "scale d", "PGD scale d", "steps d", "noise acc", "CE grad~0",
                 "success on undefended", "checks"]


def flags_text(flags) -> str:
    """A row's ``checks`` cell: the failed checks' names, sorted and comma-separated, or ``ok``."""
    return ", ".join(sorted(flags)) or "ok"


def flags_of(text: str) -> set:
    """The failed checks' names of one seed's ``checks`` cell (:func:`flags_text`)."""
    return set() if text == "ok" else set(text.split(", "))


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text)).strip("_")


def eval_robust(ctx: Context, logits, x, y, *, eps, steps, batch_size, key, apgd_steps=20, check_n=None,
                model_id: str | None = None, per_example_dir=None, checks=True, memo_key=None,
                escalate: int = 0, apgd_targets: int = 0) -> dict:
    """One table row: clean accuracy; per eps the paper's FGSM and PGD (cross-entropy) columns and
    the worst case over FGSM, PGD, APGD-CE and APGD-DLR (AutoAttack-style, scale-invariant), and
    APGD-T over ``apgd_targets`` target classes when > 0 (:func:`attack_list`); and
    the sanity checks of :func:`jaxhfc.attacks.robust_accuracy` on every row (defended or not):

    - ``median |logit|``: the logits' scale (Eq. 3 without renormalisation inflates it);
    - ``scale d``: max over eps of the change of the worst-case accuracy when the logits are divided
      by 10 (same classifier); ``PGD scale d`` the same for the paper's PGD alone (large: the
      paper's column is masked by a saturated softmax);
    - ``steps d``: max over eps of the change with 2x steps and one more restart;
    - ``noise acc``: accuracy under random +-eps noise at the largest eps;
    - ``CE grad~0``: share of correct examples whose cross-entropy gradient is near zero
      (``eps * ||g||_1 < 1e-3``) at the largest eps;
    - ``checks``: the failed checks over all eps (``ok`` when none failed);
    - ``attack x``: the attacks' strength behind ``worst`` and the checks, as a multiple of
      the set steps (the largest over eps). When the more-steps check finds that 2x the steps
      and one more restart lower the robust accuracy by more than its tolerance (the attacks
      have not converged), the eps is attacked again with those stronger attacks, up to
      ``escalate`` times, and the checks are re-run on top of them. The paper's ``FGSM`` and
      ``PGD`` columns always come from the set steps.

    ``success on undefended`` is filled in by the caller from the model's undefended row.
    With ``memo_key`` (hashable, naming the model and ``x``, ``y``, ``key``: e.g. the run folder,
    the defence and the seed), each eps's :func:`jaxhfc.attacks.robust_accuracy` result is kept
    in ``ctx.memo`` and reused by any later row with the same key and settings (input_defence
    reports the undefended rows robustness already attacked).
    Per-example results go to ``per_example_dir/<model_id>_eps<e>.json`` when given, and the
    minimal eps of the grid per example (None: not broken) with the accuracy at each threshold
    to ``<model_id>_min_eps.json``.
    """
    import warnings as W

    from jaxhfc import attacks
    from jaxhfc import results as R

    atks = attack_list(steps, apgd_steps, apgd_targets)
    fg, pg = atks[0].name, atks[1].name
    out: dict = {}
    flags, scale_d, pgd_scale_d, steps_d, attack_x = set(), 0.0, 0.0, 0.0, 1
    broken_at = []  # per eps: (N,) broken by the worst case (nested balls: also broken at larger eps)
    for e in eps:
        mk = None if memo_key is None else ("robust_accuracy", memo_key, float(e), steps, apgd_steps, apgd_targets,
                                            check_n, batch_size, len(y), bool(checks), escalate)
        runs = ctx.memo.get(mk) if mk is not None else None
        if runs is None:
            runs, level_atks = [], atks
            while True:
                with W.catch_warnings():  # the flags go to the table, not to stderr once per row
                    W.simplefilter("ignore", RuntimeWarning)
                    r = attacks.robust_accuracy(logits, x, y, key, batch_size=batch_size, mesh=ctx.mesh(), eps=e,
                                                attacks=level_atks, unroll=UNROLL() and not runs, checks=checks,
                                                logit_scale=10.0 if checks else None,
                                                more_steps=2 if checks else None, check_examples=check_n)
                runs.append(r)  # stronger runs are rare: loops, not unrolled (compiles much faster on a CPU)
                if len(runs) > escalate or not not_converged(r):
                    break
                level_atks = tuple(a.stronger(2) for a in level_atks)
            if mk is not None:
                ctx.memo[mk] = runs
        r = runs[-1]  # the worst case and the checks from the strongest attacks run
        out["clean"] = r.clean_accuracy
        out[f"FGSM {e:g}"] = runs[0].attack_accuracy[fg]  # the paper's columns: the set steps
        out[f"PGD {e:g}"] = runs[0].attack_accuracy[pg]
        attack_x = max(attack_x, 2 ** (len(runs) - 1))
        out[f"worst {e:g}"] = r.robust_accuracy
        out[f"success {e:g}"] = r.success_rate
        flags |= set(r.flags)
        out[f"checks {e:g}"] = flags_text(r.flags)  # per eps, for claims at one eps (checks_at)
        broken_at.append(~r.robust_correct)
        if checks:
            c = r.checks
            scale_d = max(scale_d, abs(c["logit_scale"]["delta"]))
            pgd_scale_d = max(pgd_scale_d, abs(c["logit_scale"]["delta_per_attack"][r.attacks[1]]))  # the PGD run
            steps_d = max(steps_d, abs(c["more_steps"]["delta"]))
            out["noise acc"] = c["noise"]["noise_accuracy"]
            out["CE grad~0"] = c["near_zero_grad"]["fraction"]
        if per_example_dir is not None and model_id is not None:
            R.write_json(per_example_dir / f"{_slug(model_id)}_eps{e:g}.json",
                         r.per_example(model_id=model_id, dataset=ctx.dataset, labels=y))
    out["median |logit|"] = r.median_abs_logit
    if per_example_dir is not None and model_id is not None:
        # the paper code's minimal-eps search on the grid (as attacks.minimal_eps), from the runs above
        min_eps = np.full(len(y), np.inf)
        for e, b in zip(reversed(list(eps)), reversed(broken_at)):
            min_eps = np.where(b, e, min_eps)
        min_eps = np.where(r.clean_correct, min_eps, 0.0)
        R.write_json(per_example_dir / f"{_slug(model_id)}_min_eps.json",
                     {"model": model_id, "dataset": ctx.dataset, "threat_model": "Linf", "eps_grid": list(eps),
                      "attacks": list(r.attacks),
                      "accuracy_at_threshold": {f"{e:g}": float((min_eps > e).mean()) for e in eps},
                      "min_eps": [None if not np.isfinite(m) else float(m) for m in min_eps]})
    if checks:
        out.update({"scale d": scale_d, "PGD scale d": pgd_scale_d, "steps d": steps_d})
    out["attack x"] = attack_x
    out["checks"] = flags_text(flags)
    return out


def not_converged(r) -> bool:
    """The more-steps check of a :class:`jaxhfc.attacks.RobustResult` found that stronger
    attacks break more images (its ``converged`` is False; a stronger attack that breaks fewer
    is noise or masking, not a reason to attack harder)."""
    return (r.checks or {}).get("more_steps", {}).get("converged") is False


def fill_success_on_undefended(rows: list, *, key: str = "model", eps: float) -> None:
    """Copy each model's attack success rate on its undefended row (worst case, smallest eps)
    into every row of that model: the attack is shown to work where nothing masks it."""
    base = {r[key]: r.get(f"success {eps:g}") for r in rows if r.get("defence", r.get("input low-pass r")) == "none"}
    for r in rows:
        r["success on undefended"] = base.get(r[key])


def checks_ok(name: str, flags_per_seed) -> E.Precondition:
    """Precondition: a row's attack sanity checks passed on every seed."""
    flags = list(flags_per_seed)
    return E.Precondition(f"attack sanity checks pass: {name}", all(f == "ok" for f in flags), "; ".join(flags))


#: Checks whose failure at one eps says nothing about a measurement at another: whether the
#: attacks converged at that radius.
PER_EPS_CHECKS = ("more_steps",)


def checks_at(row: dict, eps: float) -> str:
    """The failed checks of a row (:func:`eval_robust`) that bear on its accuracy at ``eps``:
    every check run at ``eps``, and at the other radii every check but convergence (signs of
    gradient masking at any radius make every radius suspect). Rows without per-eps checks
    give all their failed checks."""
    per_eps = {k: v for k, v in row.items() if k.startswith("checks ")}
    if not per_eps:
        return row["checks"]
    flags: set = set()
    for k, v in per_eps.items():
        failed = flags_of(v)
        flags |= failed if k == f"checks {eps:g}" else failed - set(PER_EPS_CHECKS)
    return flags_text(flags)


def checks_ok_at(name: str, rows_per_seed, eps: float) -> E.Precondition:
    """Precondition for a claim at ``eps``: :func:`checks_at` passed on every seed's row."""
    return checks_ok(f"{name} at eps {eps:g}", [checks_at(r, eps) for r in rows_per_seed])


def judge_claims(per_seed: list[dict], settings: dict, n_eval: int) -> list:
    """Claims from per-seed ``{"rows": {(model, defence): row}, "rough": {model: first-layer
    roughness}, "test": {model: test acc}}`` (rows as :func:`eval_robust` returns them)."""
    eps, rhos = settings["eps"], settings["rhos"]
    big, small = f"worst {eps[-1]:g}", f"worst {eps[0]:g}"
    raw, ren = f"smooth rho={rhos[-1]:g}", f"smooth-renorm rho={rhos[-1]:g}"
    row = lambda m, model, d: m["rows"][(model, d)]  # noqa: E731
    val = lambda model, d, col: [row(m, model, d)[col] for m in per_seed]  # noqa: E731
    mean = lambda xs: float(np.mean(xs))  # noqa: E731
    nat_ok = E.precondition("M_natural test acc", [m["test"]["M_natural"] for m in per_seed],
                            minimum=settings["min_test"])
    adv_ok = E.precondition("M_adversarial test acc", [m["test"]["M_adversarial"] for m in per_seed],
                            minimum=settings["adv_min"])
    twin_ok = E.precondition("twin test acc", [m["test"]["twin"] for m in per_seed], minimum=settings["min_test"])
    chk = lambda model, d, e: checks_ok_at(f"{model} {d}", [row(m, model, d) for m in per_seed], e)  # noqa: E731
    se = lambda model, d1, d2, col: [E.diff_se(row(m, model, d1)[col], n_eval, row(m, model, d2)[col], n_eval)  # noqa: E731
                                     for m in per_seed]
    # a defence must keep the model a classifier (a constant prediction has clean = worst = chance), and
    # against an undefended worst case of 0 on every seed no defence can do worse: that claim has no power
    defended_ok = lambda d: E.precondition(f"M_natural {d} clean acc", val("M_natural", d, "clean"),  # noqa: E731
                                           minimum=settings["min_test"])
    undefended_above_floor = any(v > 0 for v in val("M_natural", "none", big))
    claims = [
        claim(NAME, "adversarially trained models have smoother first-layer kernels",
              [m["rough"]["twin"] - m["rough"]["M_adversarial"] for m in per_seed],
              effect="first-layer roughness of the twin (M_adversarial's recipe without the attack) minus "
                     "M_adversarial's (lower = smoother)", preconditions=[twin_ok, adv_ok],
              evidence=f"roughness: M_adversarial {mean([m['rough']['M_adversarial'] for m in per_seed]):.3f}, twin "
                       f"{mean([m['rough']['twin'] for m in per_seed]):.3f}, M_natural "
                       f"{mean([m['rough']['M_natural'] for m in per_seed]):.3f}"),
        claim(NAME, "smoothing M_natural's kernels lowers clean accuracy",
              [a - b for a, b in zip(val("M_natural", "none", "clean"), val("M_natural", raw, "clean"))],
              se=se("M_natural", "none", raw, "clean"), effect=f"clean accuracy without minus with {raw} (Eq. 3)",
              preconditions=[nat_ok], bounds=(-1, 1)),
        claim(NAME, f"smoothing M_natural's kernels (Eq. 3 as in the paper) raises adversarial accuracy at large eps "
                    f"({big}: worst case over {attacks_text(settings.get('apgd_targets', 0))})",
              [a - b for a, b in zip(val("M_natural", raw, big), val("M_natural", "none", big))],
              se=se("M_natural", raw, "none", big), effect=f"{big} accuracy with minus without {raw}",
              preconditions=[nat_ok, defended_ok(raw), chk("M_natural", "none", eps[-1]),
                             chk("M_natural", raw, eps[-1])],
              bounds=(-1, 1), opposite_possible=undefended_above_floor,
              evidence=f"paper's PGD column at {eps[-1]:g}: {mean(val('M_natural', 'none', f'PGD {eps[-1]:g}')):.3f} -> "
                       f"{mean(val('M_natural', raw, f'PGD {eps[-1]:g}')):.3f}; median |logit| "
                       f"{mean(val('M_natural', 'none', 'median |logit|')):.1f} -> "
                       f"{mean(val('M_natural', raw, 'median |logit|')):.1f}"),
        claim(NAME, f"smoothing M_natural's kernels renormalised by 1 + 8 rho (no logit rescaling) raises worst-case "
                    f"accuracy at large eps ({big})",
              [a - b for a, b in zip(val("M_natural", ren, big), val("M_natural", "none", big))],
              se=se("M_natural", ren, "none", big), effect=f"{big} accuracy with minus without {ren}",
              preconditions=[nat_ok, defended_ok(ren), chk("M_natural", "none", eps[-1]),
                             chk("M_natural", ren, eps[-1])],
              bounds=(-1, 1), opposite_possible=undefended_above_floor),
        claim(NAME, f"adversarial training gives the more robust model at the training eps ({small})",
              [a - b for a, b in zip(val("M_adversarial", "none", small), val("M_natural", "none", small))],
              se=[E.diff_se(row(m, "M_adversarial", "none")[small], n_eval, row(m, "M_natural", "none")[small], n_eval)
                  for m in per_seed],
              effect=f"{small} accuracy of M_adversarial minus M_natural", bounds=(-1, 1),
              preconditions=[nat_ok, adv_ok, chk("M_natural", "none", eps[0]), chk("M_adversarial", "none", eps[0])]),
    ]
    return claims


def run(ctx: Context) -> dict:
    from jaxhfc import kernels, plotting, train

    s = attack_settings(ctx)
    rhos = s["rhos"]
    naturals, adversarials, twins = ctx.vanillas(), ctx.adversarials(), ctx.twins()
    penalties = ctx.train_seeds("kernel_penalty", kernel_penalty=s["kernel_penalty"]) if s["penalty"] else None
    x, y = ctx.test_arrays(naturals[0].config)
    if s["n_eval"]:
        x, y = x[: s["n_eval"]], y[: s["n_eval"]]
    folder = ctx.artefact_dir(NAME)
    per_example_dir = folder / "per_example"
    per_example_dir.mkdir(exist_ok=True)
    per_seed_metrics, per_seed_rows = [], []
    for i, seed in enumerate(ctx.seed_list):
        key = jax.random.key(attack_seed(seed))
        rows, smooth_rows, metrics = [], [], {"rows": {}, "rough": {}, "test": {}}
        models = (("M_natural", naturals[i]), ("M_adversarial", adversarials[i]))
        if penalties:
            models += (("M_penalty", penalties[i]),)
        for mname, t in models:
            variables = t.state.variables()
            defences = [("none", variables["params"])]
            if mname in s["defended"]:
                # Eq. 3 as the paper applies it (raw: scales a constant kernel by 1 + 8 rho) and
                # renormalised by 1 + 8 rho (the smoothing without the rescaling of the logits)
                defences += [(f"smooth rho={r:g}", kernels.smooth_params(variables["params"], r)) for r in rhos]
                defences += [(f"smooth-renorm rho={r:g}", kernels.smooth_params(variables["params"], r, renormalize=True))
                             for r in rhos]
                defences += [(f"kernel low-pass r={r:g}", kernels.lowpass_params(variables["params"], r))
                             for r in s["kernel_radii"]]
            for dname, params in defences:
                v = dict(variables, params=params)
                res = eval_robust(ctx, train.logits_fn(v, t.model), x, y, eps=s["eps"] if dname == "none" else
                                  s["defended_eps"], steps=s["pgd_steps"], apgd_steps=s["apgd_steps"],
                                  check_n=s["check_n"], batch_size=s["batch_size"], key=key,
                                  model_id=f"{mname}/{dname}", per_example_dir=per_example_dir if i == 0 else None,
                                  memo_key=(str(t.run_dir), dname, seed) if dname == "none" else None,
                                  escalate=s["escalate"], apgd_targets=s["apgd_targets"])
                row = {"model": mname, "defence": dname, **res,
                       "first-layer smoothness": float(kernels.smoothness(kernels.first_conv_kernel(params)))}
                rows.append(row)
                metrics["rows"][(mname, dname)] = row
            smooth_rows.append({"model": mname, **{k: round(v, 4) for k, v in
                                                   kernels.smoothness_by_layer(variables["params"]).items()}})
        fill_success_on_undefended(rows, eps=s["eps"][0])
        for mname, t in (("M_natural", naturals[i]), ("M_adversarial", adversarials[i]), ("twin", twins[i])):
            metrics["rough"][mname] = float(kernels.smoothness(kernels.first_conv_kernel(t.state.params)))
            metrics["test"][mname] = train.evaluate(t.state, t.model, ctx.mesh(), x, y)["accuracy"]
        per_seed_metrics.append(metrics)
        per_seed_rows.append(rows)
        if i == 0:
            first_smooth = smooth_rows

    natural, adversarial = naturals[0], adversarials[0]
    kernel_sets = {
        "M_natural": kernels.first_conv_kernel(natural.state.params),
        "M_adversarial": kernels.first_conv_kernel(adversarial.state.params),
        "M_natural, rho=1": kernels.first_conv_kernel(kernels.smooth_params(natural.state.params, 1.0)),
        "M_adversarial, rho=1": kernels.first_conv_kernel(kernels.smooth_params(adversarial.state.params, 1.0)),
    }
    figs = [save_figure(plotting.kernel_figure({k: np.asarray(v) for k, v in kernel_sets.items()}), folder / "kernels.png")]
    claims = judge_claims(per_seed_metrics, s, len(y))
    cols = (["model", "defence", "clean"] + [f"{a} {e:g}" for e in s["eps"] for a in ("FGSM", "PGD", "worst")]
            + ["first-layer smoothness"] + CHECK_COLUMNS)
    rows = combine_seeds(per_seed_rows)
    merge_seed_checks(rows, per_seed_rows)  # failed checks of every seed, not only the first
    write_artefact(ctx, NAME, title="Table 2 and Fig. 7: robustness, kernel smoothing and kernel smoothness",
                   rows=rows, per_seed=per_seed_rows, columns=cols, claims=claims,
                   models={"natural": naturals, "adversarial": adversarials, "twin": twins,
                           **({"penalty": penalties} if penalties else {})},
                   figures=figs,
                   settings={**s,
                             "attack": "the paper's Linf FGSM, and PGD (cross-entropy) with random start and step "
                                       "2.5*eps/steps; 'worst': per example the worst case over "
                                       f"{attacks_text(s['apgd_targets'])} (Croce & Hein 2020); robust accuracy "
                                       "counts an image if it is right both clean and attacked",
                             "checks": "logit scale T=10, 2x steps + 1 restart (on the first check_n images), "
                                       "noise, near-zero CE gradients, flat margin; tolerance 0.03; when 2x steps "
                                       "break more images than the tolerance, the eps is attacked again with those "
                                       "attacks and checked again, up to 'escalate' times ('attack x' column); a claim at one "
                                       "eps needs every check at that eps and every check but convergence "
                                       "(more_steps) at the others (checks_at)"},
                   notes=f"Defended rows are attacked at eps {', '.join(f'{e:g}' for e in s['defended_eps'])}"
                         f"{'' if s['penalty'] else '; no smoothness-penalty model at this scale'}. "
                         "Roughness ('first-layer smoothness' column, kernels.smoothness): mean squared difference of "
                         "adjacent weights over mean squared weight, lower is smoother. Per-layer values (first seed) in "
                         "smoothness.md. Fixed-eps attacks (the paper searched minimal eps with Foolbox). "
                         "'smooth rho' is the paper's Eq. 3 (no renormalisation: it multiplies the first layer's "
                         "response to flat patches, and the logits of a model without normalisation, by up to "
                         "1 + 8 rho); 'smooth-renorm rho' divides by 1 + 8 rho. Checks on every row: 'scale d' and "
                         "'PGD scale d' the change of the worst-case / paper-PGD accuracy when the logits are divided "
                         "by 10 (same classifier; a large 'PGD scale d' means the paper's PGD column is masked by a "
                         "saturated softmax), 'steps d' the change with 2x steps and one more restart, 'attack x' the "
                         "strength of the attacks behind 'worst' and the checks as a multiple of the set steps (2: "
                         "the set attacks had not converged and were run again with 2x steps and one more restart; "
                         "the paper's FGSM and PGD columns keep the set steps), 'noise acc' "
                         "accuracy under random +-eps noise, 'CE grad~0' the share of correct images with a "
                         "near-zero cross-entropy gradient, 'success on undefended' the worst-case attack's success "
                         "rate on the model's undefended row, 'checks' the failed checks of any seed ('ok': none). "
                         "Per-example results of the first seed (clean and adversarial correctness per attack, the "
                         "successful attack, perturbation norm, eps, model id) in "
                         "per_example/<model>_<defence>_eps<e>.json; the minimal eps of the grid per example (the "
                         "paper code's search) in per_example/<model>_<defence>_min_eps.json. Claims about what "
                         "adversarial training does compare M_adversarial with its twin (the same recipe without the "
                         "attack).")
    from jaxhfc import results as R

    R.write_text(folder / "smoothness.md", "# Roughness of every conv layer (first seed)\n\n"
                 + R.markdown_table(first_smooth, digits=4))
    return {"rows": rows, "claims": claims}


def main(argv=None):
    return main_for(run, __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    main()
