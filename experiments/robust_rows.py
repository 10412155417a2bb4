"""The robustness rows that experiments.robustness and experiments.input_defence share: the
attack settings per scale, the attack list, one evaluated row with its masking checks and
escalation (:func:`eval_robust`), and the checks a claim needs at an eps."""

from __future__ import annotations

import dataclasses
import warnings as W

import jax
import numpy as np

from experiments.common import Context
from jaxhfc import attacks
from jaxhfc import evidence as E
from jaxhfc import parallel
from jaxhfc import results as R

#: The attack settings per scale. ``eps``: the Linf radii (written for CIFAR-10; ``Setup.eps``
#: rescales them); ``n_eval``: test images attacked (None: all); ``check_n``: images the re-run
#: checks use (equal to the attack batch, so that the re-runs reuse the compiled attack program
#: of that shape); ``min_test``/``adv_min``: preconditions on M_natural / M_adversarial test
#: accuracy; ``escalate``: how many times a row's attacks are made stronger (2x steps, one more
#: restart) when the more-steps check says they have not converged (see :func:`eval_robust`);
#: ``apgd_targets``: target classes of APGD-T in the worst case (0: no APGD-T; it runs as a
#: cascade, only on the images the other attacks left right). Quick scale keeps what the claims
#: need, to fit a 2-core CPU: APGD-T over 9 targets costs 9 APGD runs per eps and check, and with
#: the attack loops unrolled (:func:`UNROLL`) the quick robustness driver with it was still
#: compiling after 20 minutes, at 22 GiB of memory, when it was stopped (2-core VM, 24 GiB).
#: ``search_n``/``search_points``: the minimal-eps search (:func:`minimal_eps_row`) on a
#: class-balanced ``search_n`` of the attacked images, over ``search_points`` radii doubling up
#: to the largest eps; the same search on ``search_n`` validation images of every seed's
#: M_natural chooses the radius the claims are judged at (:func:`claim_eps`).
ATTACKS = {
    "full": dict(eps=(0.03, 0.06, 0.09), pgd_steps=20, apgd_steps=100, apgd_targets=9, n_eval=None, check_n=1000,
                 batch_size=1000, min_test=0.5, adv_min=0.5, escalate=1, cascade=True, search_n=1000,
                 search_points=7),
    "quick": dict(eps=(0.03, 0.09), pgd_steps=5, apgd_steps=10, apgd_targets=0, n_eval=1000, check_n=250,
                  batch_size=250, min_test=0.5, adv_min=0.6, escalate=1, cascade=True, search_n=250,
                  search_points=7),
    "tiny": dict(eps=(0.03,), pgd_steps=2, apgd_steps=3, apgd_targets=0, n_eval=32, check_n=32, batch_size=32,
                 min_test=0.0, adv_min=0.0, escalate=1, cascade=False, search_n=16, search_points=3),
}


def UNROLL() -> bool:  # noqa: N802
    """Unroll attack loops in the CPU form of the loops (XLA:CPU runs convolutions in while loops
    several times slower; :func:`jaxhfc.parallel.accelerator_loops`)."""

    return not parallel.accelerator_loops()


def attack_seed(seed: int) -> int:
    """Seed of the attack keys of a training seed's rows (robustness and input_defence use the
    same, so an undefended row is one computation shared by both tables)."""
    return seed + 7


def attack_list(pgd_steps: int, apgd_steps: int, targets: int = 0, *, cascade: bool = True) -> tuple:
    """The attacks of every robustness row: the paper's FGSM and PGD, then APGD-CE and APGD-DLR,
    and APGD-T over ``targets`` target classes when ``targets > 0`` (AutoAttack's standard
    version uses 9; full scale runs it, quick scale leaves it out to fit the 2-core CPU budget).
    One tuple everywhere, so every row of a model structure runs one compiled program.
    ``cascade``: the APGD attacks run only on the images FGSM and PGD left right (two compiled
    programs per row instead of one: the tiny scale of the tests leaves it off)."""


    # AutoAttack's cascade for the APGD attacks: each runs only on the images FGSM and PGD left
    # right (with the same keys, so the worst case is the one every attack on every image gives);
    # the paper's FGSM and PGD columns keep their accuracy over every image
    apgd = attacks.standard_attacks(apgd_steps, targets=targets)
    if cascade:
        apgd = tuple(dataclasses.replace(a, cascade=True) for a in apgd)
    return (attacks.fgsm_attack(), attacks.pgd_attack(pgd_steps)) + apgd


def attack_subset(x, y, n: int | None):
    """The images every robustness row attacks: a class-balanced subset of ``n`` of the test
    images (the first ``n // classes`` of each class in test order; all when ``n`` is None or
    not smaller), the same for every row, model and seed."""
    y = np.asarray(y)
    if n is None or n >= len(y):
        return x, y
    classes = np.unique(y)
    per = n // len(classes)
    idx = np.sort(np.concatenate([np.flatnonzero(y == c)[:per] for c in classes]))
    if len(idx) < per * len(classes):
        raise ValueError(f"a class-balanced attack subset of {n} needs {per} test images of each class")
    return x[idx], y[idx]


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
CHECK_COLUMNS = ["median min eps", "attack x", "median |logit|", "scale d", "PGD scale d", "steps d", "noise acc", "CE grad~0",
                 "success on undefended", "checks"]


def flags_text(flags) -> str:
    """A row's ``checks`` cell: the failed checks' names, sorted and comma-separated, or ``ok``."""
    return ", ".join(sorted(flags)) or "ok"


def flags_of(text: str) -> set:
    """The failed checks' names of one seed's ``checks`` cell (:func:`flags_text`)."""
    return set() if text == "ok" else set(text.split(", "))


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text)).strip("_")


def search_grid(settings: dict) -> tuple[float, ...]:
    """The radii of the minimal-eps search: ``search_points`` doubling up to the largest eps of
    ``settings`` (already on the dataset's scale)."""

    return attacks.doubling_grid(max(settings["eps"]), settings["search_points"])


def minimal_eps_row(ctx: Context, logits, x, y, *, settings: dict, key, memo_key=None) -> np.ndarray:
    """Per-image minimal eps (:func:`jaxhfc.attacks.ascending_minimal_eps` with the rows' attacks,
    on :func:`search_grid`) of a class-balanced ``settings["search_n"]`` of ``x, y`` (``inf``:
    not broken on the grid, 0: wrong clean). ``memo_key`` as in :func:`eval_robust`."""

    s = settings
    grid = search_grid(s)
    mk = None if memo_key is None else ("minimal_eps", memo_key, grid, s["search_n"], s["pgd_steps"], s["apgd_steps"],
                                        s["apgd_targets"], s["batch_size"], len(y), s["cascade"])
    if mk is not None and mk in ctx.models.memo:
        return ctx.models.memo[mk]
    xs, ys = attack_subset(x, y, s["search_n"])
    out = attacks.ascending_minimal_eps(logits, xs, ys, key, eps_grid=grid, batch_size=s["batch_size"],
                                        attacks=attack_list(s["pgd_steps"], s["apgd_steps"], s["apgd_targets"],
                                                            cascade=s["cascade"]),
                                        mesh=ctx.models.mesh(), unroll=UNROLL(), cascade=ctx.setup.cascade)["min_eps"]
    if mk is not None:
        ctx.models.memo[mk] = out
    return out


def above_grid(settings: dict) -> float:
    """The value a minimal eps above the search grid counts as in a median: the next radius."""
    return 2.0 * search_grid(settings)[-1]


def claim_eps(ctx: Context, naturals, settings: dict) -> tuple[float, dict]:
    """The radius the robustness claims are judged at, chosen on validation images only: the
    median minimal eps of M_natural over the validation images it classifies right, pooled over
    every seed (each seed's own held-out split, ``search_n`` class-balanced images, the rows'
    attacks): the radius at which M_natural keeps half of what it gets right, where a defence
    can move the worst case either way. A grid radius (the lower median); the grid's largest
    when more than half survive it. Returns ``(eps, {"grid", "per seed": medians, "pooled n"})``."""
    grid, above = search_grid(settings), above_grid(settings)

    def grid_median(v):  # a grid radius (the lower median), above-grid images counted as the next radius
        return float(np.quantile(np.minimum(v, above), 0.5, method="lower"))

    pooled, per_seed = [], []
    for t in naturals:
        xv, yv = ctx.models.test_arrays(t.config, split="val")
        m = minimal_eps_row(ctx, t.logits_fn(), xv, yv, settings=settings, key=jax.random.key(attack_seed(t.config.run.seed)),
                            memo_key=(str(t.run_dir), "validation"))
        right = m[m > 0]
        pooled.append(right)
        per_seed.append(grid_median(right) if right.size else 0.0)
    allr = np.concatenate(pooled)
    if allr.size == 0:
        raise ValueError("M_natural classifies no validation image right: no radius to choose for the claims")
    med = grid_median(allr)
    eps = min(med, grid[-1]) if med > 0 else grid[0]
    return eps, {"grid": list(grid), "per seed": per_seed, "pooled n": int(allr.size), "chosen": eps}


@dataclasses.dataclass(frozen=True)
class AttackRequest:
    """What a robust row asks for: the attacks (the paper's FGSM and PGD with ``steps``, APGD-CE
    and APGD-DLR with ``apgd_steps``, APGD-T over ``apgd_targets`` classes; :func:`attack_list`),
    at which ``eps`` (already on the dataset's scale), in batches of ``batch_size``, with the
    masking checks on ``check_n`` images (``checks``), escalated up to ``escalate`` times when
    the attacks have not converged, and with ``search`` (search settings) each image's minimal
    eps too. :meth:`from_settings` makes one from a driver's settings."""

    eps: tuple
    steps: int
    batch_size: int
    apgd_steps: int = 20
    apgd_targets: int = 0
    cascade: bool = True
    checks: bool = True
    check_n: int | None = None
    escalate: int = 0
    search: dict | None = dataclasses.field(default=None, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "eps", tuple(float(e) for e in self.eps))
        if not self.eps or any(not e > 0 for e in self.eps):
            raise ValueError(f"an attack request needs eps > 0, got {self.eps}")

    @classmethod
    def from_settings(cls, s: dict, *, eps=None, search: dict | None = None) -> "AttackRequest":
        """A request from a robustness driver's settings (``eps``: other radii than ``s["eps"]``)."""
        return cls(eps=tuple(s["eps"] if eps is None else eps), steps=s["pgd_steps"], batch_size=s["batch_size"],
                   apgd_steps=s["apgd_steps"], apgd_targets=s["apgd_targets"], cascade=s["cascade"],
                   check_n=s["check_n"], escalate=s["escalate"], search=search)

    def attacks(self) -> tuple:
        """The attacks of its rows (:func:`attack_list`)."""
        return attack_list(self.steps, self.apgd_steps, self.apgd_targets, cascade=self.cascade)

    def memo_key(self, model_key, e: float, n: int) -> tuple:
        """Key of one eps's result on ``n`` images of the model and images named by ``model_key``."""
        return ("robust_accuracy", model_key, float(e), self.steps, self.apgd_steps, self.apgd_targets, self.check_n,
                self.batch_size, n, bool(self.checks), self.escalate, self.cascade)


def eval_robust(ctx: Context, logits, x, y, request: AttackRequest, *, key, model_id: str | None = None,
                per_example_dir=None, memo_key=None, outcomes: dict | None = None) -> dict:
    """One table row of ``request`` (:class:`AttackRequest`) on ``x``, ``y``: clean accuracy; per eps the paper's FGSM and PGD (cross-entropy) columns and
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

    - ``median min eps`` (with ``search``, the attack settings of :data:`ATTACKS` on the dataset's
      scale): the median per-image minimal eps on the search images (:func:`minimal_eps_row`).

    ``success on undefended`` is filled in by the caller from the model's undefended row.
    With ``memo_key`` (hashable, naming the model and ``x``, ``y``, ``key``: e.g. the run folder,
    the defence and the seed), each eps's :func:`jaxhfc.attacks.robust_accuracy` result is kept
    in ``ctx.models.memo`` and reused by any later row with the same key and settings (input_defence
    reports the undefended rows robustness already attacked).
    With ``outcomes`` (a dict), it is filled with the per-example outcomes behind the row:
    ``"clean"`` and ``"worst <e>"``, ``(N,) bool``, whether each image is classified right (under
    the worst case of the attacks at ``e``); with the checks, ``"PGD <e>"`` and ``"PGD/10 <e>"``,
    ``(check_n,) bool``, right clean and under the paper's PGD on the logits and on the logits
    divided by 10, on the images the logit-scale check re-ran; with ``search``, ``"min eps"``.
    Per-example results go to ``per_example_dir/<model_id>_eps<e>.json`` when given, and the
    minimal eps of the grid per example (None: not broken) with the accuracy at each threshold
    to ``<model_id>_min_eps.json``.
    """


    q = request
    eps, checks, escalate = q.eps, q.checks, q.escalate
    atks = q.attacks()
    fg, pg = atks[0].name, atks[1].name
    out: dict = {}
    flags, scale_d, pgd_scale_d, steps_d, attack_x = set(), 0.0, 0.0, 0.0, 1
    broken_at = []  # per eps: (N,) broken by the worst case (nested balls: also broken at larger eps)
    for e in eps:
        mk = None if memo_key is None else q.memo_key(memo_key, e, len(y))
        runs = ctx.models.memo.get(mk) if mk is not None else None
        if runs is None:
            runs, level_atks = [], atks
            while True:
                with W.catch_warnings():  # the flags go to the table, not to stderr once per row
                    W.simplefilter("ignore", RuntimeWarning)
                    r = attacks.robust_accuracy(logits, x, y, key, batch_size=q.batch_size, mesh=ctx.models.mesh(),
                                                eps=e, attacks=level_atks, unroll=UNROLL() and not runs, checks=checks,
                                                logit_scale=10.0 if checks else None,
                                                more_steps=2 if checks else None, check_examples=q.check_n,
                                                cascade=ctx.setup.cascade)
                runs.append(r)  # stronger runs are rare: loops, not unrolled (compiles much faster on a CPU)
                if len(runs) > escalate or not not_converged(r):
                    break
                level_atks = tuple(a.stronger(2) for a in level_atks)
            if mk is not None:
                ctx.models.memo[mk] = runs
        r = runs[-1]  # the worst case and the checks from the strongest attacks run
        out["clean"] = r.clean_accuracy
        out[f"FGSM {e:g}"] = runs[0].attack_accuracy[fg]  # the paper's columns: the set steps
        out[f"PGD {e:g}"] = runs[0].attack_accuracy[pg]
        attack_x = max(attack_x, 2 ** (len(runs) - 1))
        out[f"worst {e:g}"] = r.robust_accuracy
        if outcomes is not None:
            outcomes["clean"] = np.asarray(r.clean_correct, bool)
            outcomes[f"worst {e:g}"] = np.asarray(r.robust_correct, bool)
            scaled = runs[0].scaled_attack_correct
            if scaled is not None:  # the paper's PGD, set steps, on logits and logits / 10: the same images
                nc = len(scaled[pg])
                outcomes[f"PGD {e:g}"] = np.asarray(runs[0].clean_correct[:nc] & runs[0].attack_correct[pg][:nc], bool)
                outcomes[f"PGD/10 {e:g}"] = np.asarray(scaled[pg], bool)
        out[f"success {e:g}"] = r.success_rate
        flags |= set(r.flags)
        out[f"checks {e:g}"] = flags_text(r.flags)  # per eps, for claims at one eps (checks_at)
        broken_at.append(~r.robust_correct)
        if checks:
            c = r.checks
            scale_d = max(scale_d, abs(c["logit_scale"]["delta"]))
            pgd_scale_d = max(pgd_scale_d, abs(c["logit_scale"]["delta_per_attack"][r.attacks[1]]))  # the PGD run
            c0 = runs[0].checks  # the paper's PGD column (set steps) on logits / 10 minus on the logits, signed
            out[f"PGD scale d {e:g}"] = c0["logit_scale"]["delta_per_attack"][pg]
            steps_d = max(steps_d, abs(c["more_steps"]["delta"]))
            out["noise acc"] = c["noise"]["noise_accuracy"]
            out["CE grad~0"] = c["near_zero_grad"]["fraction"]
        if per_example_dir is not None and model_id is not None:
            R.write_json(per_example_dir / f"{_slug(model_id)}_eps{e:g}.json",
                         r.per_example(model_id=model_id, dataset=ctx.setup.dataset, labels=y))
    out["median |logit|"] = r.median_abs_logit
    if q.search is not None:
        m = minimal_eps_row(ctx, logits, x, y, settings=q.search, key=key, memo_key=memo_key)
        out["median min eps"] = attacks.median_min_eps(m, above=above_grid(q.search))
        if outcomes is not None:
            outcomes["min eps"] = m
    if per_example_dir is not None and model_id is not None:
        # the paper code's minimal-eps search on the grid (as attacks.minimal_eps), from the runs above
        min_eps = np.full(len(y), np.inf)
        for e, b in zip(reversed(list(eps)), reversed(broken_at)):
            min_eps = np.where(b, e, min_eps)
        min_eps = np.where(r.clean_correct, min_eps, 0.0)
        R.write_json(per_example_dir / f"{_slug(model_id)}_min_eps.json",
                     {"model": model_id, "dataset": ctx.setup.dataset, "threat_model": "Linf", "eps_grid": list(eps),
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


def checks_ok(name: str, flags_per_seed, *, guards: str = "both") -> E.Precondition:
    """Precondition: a row's attack sanity checks passed on every seed. ``guards``: the verdict a
    masked row could fake (a defended row's masking fakes "holds" for the defence, the undefended
    row's fakes "contradicted")."""
    flags = list(flags_per_seed)
    return E.Precondition(f"attack sanity checks pass: {name}", all(f == "ok" for f in flags), "; ".join(flags),
                          guards)


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


def checks_ok_at(name: str, rows_per_seed, eps: float, *, guards: str = "both") -> E.Precondition:
    """Precondition for a claim at ``eps``: :func:`checks_at` passed on every seed's row."""
    return checks_ok(f"{name} at eps {eps:g}", [checks_at(r, eps) for r in rows_per_seed], guards=guards)
