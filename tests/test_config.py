"""TrainConfig in sections: flat names as aliases, construction, replace, dict forms (nested
and the flat form of committed results), hashes equal to those of the flat TrainConfig of
earlier versions, validation, quick(), the population key and the compiled-loop cache key
derived from the sections, and the CLI flags."""
import copy
import dataclasses
import json
import pathlib
import pickle

import jax
import numpy as np
import pytest

from jaxhfc import config as C
from jaxhfc import step as step_module
from jaxhfc import models, parallel
from jaxhfc.config import DATA_FIELDS, EVAL_FIELDS
from jaxhfc.fit import fit_population, population_key
from jaxhfc.runs import load_run
from jaxhfc.step import create_train_state, make_optimizer
from jaxhfc.cli import build_parser, train_cmd

REPO = pathlib.Path(__file__).resolve().parents[1]

#: The flat fields of the TrainConfig before the sections, with their defaults, in order
#: (copied from that version's source).
OLD_FLAT_DEFAULTS = {
    "model": "resnet18", "width": None, "norm": None, "bn_eval": "running", "dropout": 0.0, "dtype": "float32",
    "normalize": False, "dataset": "cifar10", "data_dir": None, "data_source": "auto", "data_seed": 0, "test_seed": None,
    "num_train": None, "num_test": None, "train_subset": None, "num_val": 0, "shuffle_labels": 0.0,
    "train_filter": "none", "train_radius": 8.0, "scaling": "paper", "augment_crop": False, "augment_flip": False,
    "mixup_alpha": 0.0, "label_smoothing": 0.0, "optimizer": "adam", "learning_rate": 1e-4, "momentum": 0.9,
    "weight_decay": 0.0, "schedule": "constant", "epochs": 100, "batch_size": 100, "eval_every": 1,
    "eval_batch_size": 1000, "eval_radii": (4, 8, 12, 16), "eval_train": False, "eval_train_subset": None,
    "checkpoint_every": 10, "keep_checkpoints": 3, "seed": 0, "adv_eps": 0.0, "adv_steps": 10,
    "adv_step_size": 0.003, "adv_random_start": False, "adv_norm": "linf", "kernel_penalty": 0.0, "num_devices": None,
    "eval_stop_at_train": None,
}

#: A config with every field off its default (valid), in flat names.
ALL_CHANGED = dict(
    model="paper_resnet", width=8, norm="none", bn_eval="batch", dropout=0.1, dtype="bfloat16", normalize=True,
    dataset="synthetic", data_dir="/d", data_source="tfds", data_seed=3, test_seed=5, num_train=512, num_test=100,
    train_subset=256, num_val=64, shuffle_labels=0.5, train_filter="low", train_radius=12.0, scaling="unit",
    augment_crop=True, augment_flip=True, mixup_alpha=0.0, label_smoothing=0.1, optimizer="sgd", learning_rate=0.05,
    momentum=0.8, weight_decay=5e-4, schedule="cosine", epochs=7, batch_size=32, eval_every=2, eval_batch_size=128,
    eval_radii=(4, 12.5), eval_train=True, eval_train_subset=50, checkpoint_every=3, keep_checkpoints=2, seed=11,
    adv_eps=0.03, adv_steps=4, adv_step_size=0.01, adv_random_start=True, adv_norm="l2", kernel_penalty=0.2,
    num_devices=4, eval_stop_at_train=0.9,
)


def _committed_models():
    """``(flat config dict, config hash)`` of the 63 models the flat TrainConfig recorded in
    the artefact folders before the config was nested (tests/data/flat_configs.json, copied
    from results/ at commit 996d92a)."""
    data = json.loads((REPO / "tests" / "data" / "flat_configs.json").read_text())
    return [(m["config"], m["config_hash"]) for m in data["models"]]


def _current_models():
    """``(config dict, config hash)`` of every model in today's committed artefact folders
    (written nested by this TrainConfig)."""
    out = []
    for path in sorted(REPO.glob("results/*/*/config.json")):
        for entry in json.loads(path.read_text()).get("models", {}).values():
            for m in entry if isinstance(entry, list) else [entry]:
                out.append((m["config"], m["config_hash"]))
    return out


# ------------------------------------------------------------------ sections and aliases


def test_flat_table_covers_the_old_fields_and_every_section_field():
    assert list(C.FLAT_FIELDS) == list(OLD_FLAT_DEFAULTS)
    nested = [(s, f.name) for s, cls in C.SECTIONS.items() for f in dataclasses.fields(cls)]
    assert sorted(C.FLAT_FIELDS.values()) == sorted(nested) and len(set(C.FLAT_FIELDS.values())) == len(nested)
    assert [f.name for f in dataclasses.fields(C.TrainConfig)] == list(C.SECTIONS) == [
        "net", "data", "optim", "augment", "adversary", "evaluation", "run"]
    default = C.TrainConfig()
    for name, value in OLD_FLAT_DEFAULTS.items():
        assert getattr(default, name) == value, name
    c = C.TrainConfig(**ALL_CHANGED)
    for name, value in ALL_CHANGED.items():
        assert getattr(c, name) == value, name
    assert c.model == "paper_resnet" == c.net.name and c.adv_eps == 0.03 == c.adversary.eps
    assert c.dataset == "synthetic" == c.data.name and c.data_seed == 3 == c.data.seed and c.seed == 11 == c.run.seed
    assert c.optimizer == "sgd" == c.optim.name and c.eval_radii == (4, 12.5) == c.evaluation.radii
    assert c.augment_crop is True is c.augment.crop and c.num_devices == 4 == c.run.num_devices


def test_sections_and_flat_names_build_the_same_config():
    nested = C.TrainConfig(net=C.NetConfig(name="small_cnn", width=4), adversary=C.AdversaryConfig(eps=0.03, steps=2),
                           evaluation={"radii": [4, 8]})
    flat = C.TrainConfig(model="small_cnn", width=4, adv_eps=0.03, adv_steps=2, eval_radii=(4, 8))
    assert nested == flat and hash(nested) == hash(flat)
    assert nested.evaluation.radii == (4, 8)  # list -> tuple
    # flat names are applied on top of the given sections
    mixed = C.TrainConfig(net=C.NetConfig(name="small_cnn", width=4), width=8)
    assert mixed.net == C.NetConfig(name="small_cnn", width=8)
    assert C.TrainConfig() == C.TrainConfig(**OLD_FLAT_DEFAULTS)


def test_aliases_are_read_only_and_config_is_hashable():
    c = C.TrainConfig()
    for name in ("adv_eps", "model", "net"):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(c, name, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.net.width = 3
    assert {c: 1}[C.TrainConfig()] == 1
    assert pickle.loads(pickle.dumps(c)) == c and copy.deepcopy(c) == c


def test_unknown_names_are_one_line_errors_naming_the_valid_ones():
    with pytest.raises(ValueError) as err:
        C.TrainConfig(modell="small_cnn")
    msg = str(err.value)
    assert "\n" not in msg and "modell" in msg and "'model'" in msg and "'adv_eps'" in msg and "'net'" in msg
    with pytest.raises(ValueError, match="unknown"):
        C.TrainConfig.from_dict({"net": {"nme": "x"}})
    with pytest.raises(ValueError, match="unknown"):
        C.TrainConfig(seed=1).replace(sed=2)
    with pytest.raises(TypeError, match="NetConfig"):
        C.TrainConfig(net=C.OptimConfig())


def test_replace_flat_and_nested():
    c = C.TrainConfig(model="small_cnn", learning_rate=3e-3, seed=2)
    d = dataclasses.replace(c, adv_eps=0.03)
    assert d.adversary == C.AdversaryConfig(eps=0.03)
    assert (d.net, d.data, d.optim, d.augment, d.evaluation, d.run) == (c.net, c.data, c.optim, c.augment,
                                                                        c.evaluation, c.run)
    assert c.replace(adv_eps=0.03) == d == c.replace(adversary=c.adversary.replace(eps=0.03))
    assert dataclasses.replace(c, net=C.NetConfig(name="resnet18")).model == "resnet18"
    assert c.replace(run=C.RunConfig(seed=5), seed=7).seed == 7  # flat last
    with pytest.raises(ValueError, match="optimizer"):
        c.replace(optimizer="lamb")


@pytest.mark.parametrize("flat, bad", [
    ("model", "vgg"), ("width", 0), ("norm", "layer"), ("bn_eval", "ema"), ("dropout", 1.0), ("dtype", "int8"),
    ("dataset", ""), ("num_train", 0), ("num_val", -1), ("shuffle_labels", 2.0), ("train_filter", "band"),
    ("train_radius", -1.0), ("scaling", "max"), ("optimizer", "lamb"), ("schedule", "linear"), ("epochs", 0),
    ("batch_size", 0), ("label_smoothing", 1.0), ("kernel_penalty", -0.1), ("mixup_alpha", -1.0), ("adv_eps", -0.1),
    ("adv_steps", -1), ("adv_norm", "l1"), ("eval_every", -1), ("eval_batch_size", 0), ("eval_radii", (4, -1)),
    ("eval_train_subset", 0), ("keep_checkpoints", 0), ("num_devices", 0)
])
def test_each_section_validates_its_fields(flat, bad):
    section, field = C.FLAT_FIELDS[flat]
    with pytest.raises(ValueError, match=flat):
        C.TrainConfig(**{flat: bad})
    with pytest.raises(ValueError):
        C.SECTIONS[section](**{field: bad})


def test_cross_section_validation():
    with pytest.raises(ValueError, match="mixup"):
        C.TrainConfig(mixup_alpha=1.0, adv_eps=0.03)
    with pytest.raises(ValueError, match="mixup"):
        C.TrainConfig(adv_eps=0.03).replace(augment=C.AugmentConfig(mixup_alpha=0.2))


def test_quick_matches_the_flat_version():
    q = C.TrainConfig(optimizer="sgd", eval_radii=(2, 4, 8, 16), eval_train_subset=900, adv_steps=7, epochs=20).quick()
    # asdict of the same call on the flat TrainConfig of the earlier version
    want = dict(OLD_FLAT_DEFAULTS, model="small_cnn", width=16, dataset="synthetic", num_train=2048, num_test=1000,
                optimizer="sgd", epochs=8, batch_size=64, eval_batch_size=500, eval_radii=(2, 4, 8),
                eval_train_subset=500, checkpoint_every=4, adv_steps=3)
    assert {name: getattr(q, name) for name in C.FLAT_FIELDS} == want
    assert q.config_hash() == "0e29754bf19b57d2"
    assert C.TrainConfig().quick().learning_rate == 3e-3 and C.TrainConfig(eval_radii=(12,)).quick().eval_radii == (4,)


# ------------------------------------------------------------------ dict forms and hashes


def test_to_dict_is_nested_and_round_trips():
    c = C.TrainConfig(**ALL_CHANGED)
    d = c.to_dict()
    assert list(d) == list(C.SECTIONS)
    assert d["net"]["name"] == "paper_resnet" and d["adversary"]["eps"] == 0.03 and d["data"]["seed"] == 3
    assert d["evaluation"]["radii"] == [4, 12.5] and d["run"] == {"seed": 11, "checkpoint_every": 3,
                                                                   "keep_checkpoints": 2, "num_devices": 4}
    assert C.TrainConfig.from_dict(json.loads(json.dumps(d))) == c
    flat = c.to_flat_dict()
    assert list(flat) == list(OLD_FLAT_DEFAULTS) and flat == dict(ALL_CHANGED, eval_radii=[4, 12.5])
    assert C.TrainConfig.from_dict(json.loads(json.dumps(flat))) == c
    assert C.TrainConfig.from_dict({"net": {"name": "small_cnn"}, "seed": 3}) == C.TrainConfig(model="small_cnn", seed=3)


def test_hashes_equal_those_of_the_flat_version():
    # literals from the flat TrainConfig of the earlier version
    assert C.TrainConfig().config_hash() == "2b4f6e6b0e776e6f"
    assert C.TrainConfig(model="small_cnn", eval_radii=(4, 8)).config_hash() == "28ffc92ac185f67e"
    # fields added later (test_seed, eval_stop_at_train) leave the hash unchanged at their default
    old_fields = {k: v for k, v in ALL_CHANGED.items() if k not in ("test_seed", "eval_stop_at_train")}
    assert C.TrainConfig(**old_fields).config_hash() == "c1205e535fd11842"
    assert C.TrainConfig(**ALL_CHANGED).config_hash() != "c1205e535fd11842"
    assert C.TrainConfig(seed=1).config_hash() != C.TrainConfig().config_hash()


def test_committed_flat_configs_read_back_with_their_hashes():
    committed = _committed_models()
    assert len(committed) >= 20
    for flat, digest in committed:
        c = C.TrainConfig.from_dict(flat)
        assert {name: C._jsonable(getattr(c, name)) for name in flat} == flat
        assert c.config_hash() == digest


def test_committed_nested_configs_read_back_with_their_hashes():
    current = _current_models()
    assert len(current) >= 20
    for nested, digest in current:
        c = C.TrainConfig.from_dict(nested)
        written = c.to_dict()
        if "test_seed" not in nested["data"] and written["data"]["test_seed"] is None:  # written before the field
            del written["data"]["test_seed"]
        if "stop_at_train" not in nested["evaluation"] and written["evaluation"]["stop_at_train"] is None:
            del written["evaluation"]["stop_at_train"]
        assert written == nested and c.config_hash() == digest


def test_load_run_reads_a_flat_config_json(tmp_path):
    """A run folder as the flat TrainConfig wrote it (the config of a committed artefact):
    load_run reads the config and restores the checkpoint."""
    flat, digest = next((f, h) for f, h in _committed_models() if f["model"] == "small_cnn" and not f["adv_eps"])
    flat = dict(flat, width=4)  # a smaller model; the rest as committed
    config = C.TrainConfig.from_dict(flat)
    assert config.net == C.NetConfig(name="small_cnn", width=4, norm=flat["norm"], bn_eval=flat["bn_eval"],
                                     dtype=flat["dtype"], normalize=flat["normalize"], dropout=flat["dropout"])
    assert config.data.name == flat["dataset"] and config.data.num_val == flat["num_val"]
    assert config.evaluation.radii == tuple(flat["eval_radii"]) and config.run.seed == flat["seed"]
    mesh = parallel.make_mesh()
    model = models.get_model("small_cnn", width=4, norm=flat["norm"], bn_eval=flat["bn_eval"],
                             normalize=flat["normalize"])
    tx = make_optimizer(optimizer=flat["optimizer"], learning_rate=flat["learning_rate"])
    state = create_train_state(model, tx, jax.random.key(5), (32, 32, 3), mesh=mesh)
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager((tmp_path / "checkpoints").resolve()) as manager:
        manager.save(7, args=ocp.args.StandardSave(state))
        manager.wait_until_finished()
    (tmp_path / "config.json").write_text(json.dumps({"config": flat, "config_hash": "x", "num_classes": 10,
                                                      "input_shape": [32, 32, 3]}))
    loaded, restored, loaded_model = load_run(tmp_path, mesh=mesh)
    assert loaded == config and loaded_model == model
    for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(state)), jax.tree_util.tree_leaves(
            jax.device_get(restored))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_load_run_reads_a_local_result_run():
    """A run folder of the drivers (flat config.json before the nesting, nested after; gitignored,
    so only where it was run)."""
    runs = sorted((REPO / "results" / "synthetic" / "runs").glob("vanilla-s0-*/checkpoints"))
    if not runs:
        pytest.skip("no local results/synthetic/runs")
    run = runs[0].parent
    info = json.loads((run / "config.json").read_text())
    name = info["config"]["model"] if "model" in info["config"] else info["config"]["net"]["name"]
    config, state, _ = load_run(run)
    assert config.config_hash() == info["config_hash"] and config.model == name
    assert int(state.step) == max(int(p.name) for p in runs[0].iterdir() if p.name.isdigit())


# ------------------------------------------------------------------ roles and keys

#: Flat names whose change leaves the population key (the compiled program) unchanged.
OUTSIDE_THE_PROGRAM = {"data_dir", "data_source", "data_seed", "test_seed", "num_test", "shuffle_labels", "train_filter",
                       "train_radius", "scaling", "eval_every", "eval_batch_size", "eval_radii", "eval_train",
                       "eval_train_subset", "checkpoint_every", "keep_checkpoints", "seed", "learning_rate"}


def test_population_key_per_field():
    base = C.TrainConfig(model="small_cnn", dataset="synthetic", num_train=512, batch_size=32)
    changes = dict(ALL_CHANGED, model="resnet18", dataset="cifar10", num_train=1024, batch_size=64, mixup_alpha=0.5)
    assert set(changes) == set(C.FLAT_FIELDS)
    key = population_key(base)
    hash(key)
    for name, value in changes.items():
        # a fit criterion needs the training set evaluated
        other = base.replace(**{name: value}, **({"eval_train": True} if name == "eval_stop_at_train" else {}))
        assert getattr(other, name) != getattr(base, name), name
        assert (population_key(other) == key) == (name in OUTSIDE_THE_PROGRAM), name
    # the derived constants say the same
    assert set(C.DATA_FIELDS) | set(C.EVAL_FIELDS) | set(C.HPARAM_FIELDS) == OUTSIDE_THE_PROGRAM
    assert C.HPARAM_FIELDS == ("learning_rate",) and set(C.PROGRAM_FIELDS) == set(C.FLAT_FIELDS) - OUTSIDE_THE_PROGRAM
    assert DATA_FIELDS is C.DATA_FIELDS and EVAL_FIELDS is C.EVAL_FIELDS


def test_a_new_field_in_a_section_is_in_the_keys_by_its_role():
    """A field added to a program section changes the population key and the compiled-loop
    cache key without being listed anywhere; one added to data or evaluation changes neither."""
    extra = {}
    for name, cls in C.SECTIONS.items():
        extra[name] = dataclasses.make_dataclass(cls.__name__ + "Plus", [("extra", int, 0)], bases=(cls,),
                                                 frozen=True, kw_only=True)
    base = C.TrainConfig(**{name: cls() for name, cls in extra.items()})
    for name, cls in extra.items():
        changed = base.replace(**{name: cls(extra=1)})
        in_program = C.SECTIONS[name].ROLE == C.PROGRAM
        assert (population_key(changed) != population_key(base)) == in_program, name
        assert changed.config_hash() != base.config_hash(), name
    assert {n for n, cls in C.SECTIONS.items() if cls.ROLE == C.PROGRAM} == {"net", "optim", "augment", "adversary"}

    mesh = parallel.make_mesh()
    model = models.get_model("small_cnn", width=4)
    before = step_module._cached_loop.cache_info()

    def loop(optim, augment, adversary):
        return step_module._cached_loop(model, mesh, optim, augment, adversary, 10, 10, None, True, True, True)

    o, a, v = extra["optim"](batch_size=32), extra["augment"](), extra["adversary"]()
    first = loop(o, a, v)
    assert loop(extra["optim"](batch_size=32), extra["augment"](), extra["adversary"]()) is first  # cached
    for changed in (loop(o.replace(extra=1), a, v), loop(o, a.replace(extra=1), v), loop(o, a, v.replace(extra=1)),
                    loop(o.replace(learning_rate=1.0), a, v)):
        assert changed is not first
    info = step_module._cached_loop.cache_info()
    assert (info.hits - before.hits, info.misses - before.misses) == (1, 5)


def test_fit_population_names_the_differing_fields():
    a = C.TrainConfig(model="small_cnn", dataset="synthetic", batch_size=32)
    with pytest.raises(ValueError, match=r"momentum \(optim.momentum\)") as err:
        fit_population([a, a.replace(momentum=0.5, seed=3)], ["x", "y"])
    assert "seed" not in str(err.value).split("differ in")[1]


# ------------------------------------------------------------------ CLI


def test_cli_flags_are_the_flat_names():
    parser = build_parser()
    assert set(C.FLAT_FIELDS) <= set(vars(parser.parse_args(["train"])))
    argv = ["train", "--model", "small_cnn", "--adv-eps", "0.03", "--adv-random-start", "--no-augment-flip",
            "--eval-radii", "4", "8", "--radius", "12", "--num-val", "64", "--learning-rate", "0.01", "--width", "8"]
    got = train_cmd.config_from_args(parser.parse_args(argv))
    assert got == C.TrainConfig(model="small_cnn", adv_eps=0.03, adv_random_start=True, augment_flip=False,
                                eval_radii=(4.0, 8.0), train_radius=12.0, num_val=64, learning_rate=0.01, width=8)
    quick = train_cmd.config_from_args(parser.parse_args(["train", "--quick", "--epochs", "2"]))
    assert quick == C.TrainConfig().quick().replace(epochs=2)


def test_flat_aliases_are_declared_for_type_checkers_with_their_section_types():
    """The ``if TYPE_CHECKING:`` block of TrainConfig declares every flat alias, in the table's
    order, with the annotation of the section field it reads (the block must not drift from
    FLAT_FIELDS)."""
    import ast
    import inspect

    from jaxhfc import config as C

    tree = ast.parse(inspect.getsource(C))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TrainConfig")
    block = next(n for n in cls.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")
    declared = [(s.target.id, ast.unparse(s.annotation)) for s in block.body if isinstance(s, ast.AnnAssign)]
    expected = []
    for flat, (section, field) in C.FLAT_FIELDS.items():
        types = {f.name: f.type for f in dataclasses.fields(C.SECTIONS[section])}
        expected.append((flat, types[field]))
    assert declared == expected
    # and they stay out of the dataclass fields (aliases are properties, not fields)
    assert [f.name for f in dataclasses.fields(C.TrainConfig)] == list(C.SECTIONS)


def test_nested_names_are_the_api_and_flat_names_are_deprecated():
    with pytest.warns(DeprecationWarning, match="flat TrainConfig names"):
        flat = C.TrainConfig(norm="batch", adv_eps=0.1)
    nested = C.TrainConfig(net={"norm": "batch"}, adversary={"eps": 0.1})
    assert flat == nested and flat.config_hash() == nested.config_hash()
    assert C.nest({"norm": "batch", "adv_eps": 0.1, "run": {"seed": 2}}) == {
        "net": {"norm": "batch"}, "adversary": {"eps": 0.1}, "run": {"seed": 2}}
    # merged keeps the other fields of a section
    m = nested.merged(net={"width": 8})
    assert m.net.norm == "batch" and m.net.width == 8 and m.adversary.eps == 0.1
    assert C.merge_sections({"net": {"width": 8, "norm": "none"}}, {"net": {"norm": "batch"}}) == {
        "net": {"width": 8, "norm": "batch"}}
    with pytest.raises(ValueError, match="unknown TrainConfig section"):
        nested.merged(nett={"width": 8})
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        C.nest({"widht": 8})
    # an old flat config.json still reads back, with a warning
    with pytest.warns(DeprecationWarning, match="reading flat config names"):
        assert C.TrainConfig.from_dict(flat.to_flat_dict()) == flat
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert C.TrainConfig.from_dict(nested.to_dict()) == nested  # the nested form: no warning
