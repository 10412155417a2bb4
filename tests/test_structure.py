"""The shape of the code base, kept true by a test: module length, README length and its three
tasks, no import cycle, benchmarks depending on experiments (never the other way), a short
``reproduce_all`` and one profile per dataset known by name."""

import ast
import re
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
MAX_MODULE_LINES = 600
MAX_README_LINES = 250
#: Modules allowed over the limit, each capped at its size so that it can only shrink (none now).
OVER_LIMIT: dict[str, int] = {}


def _modules(*packages):
    for pkg in packages:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
            yield (name[: -len(".__init__")] if name.endswith(".__init__") else name), p


def _imports(path: Path, known: set) -> set:
    """Every module of ``known`` that ``path`` imports, at its top or inside a function."""
    out = set()
    for n in ast.walk(ast.parse(path.read_text())):
        if isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            for a in n.names:
                full = f"{n.module}.{a.name}"
                out.add(full if full in known else n.module)
        elif isinstance(n, ast.Import):
            out.update(a.name for a in n.names)
    return out & known


def _cycles(graph: dict) -> list:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_modules_stay_short():
    too_long = {}
    for _, p in _modules("jaxhfc", "experiments"):
        rel = p.relative_to(ROOT).as_posix()
        n = len(p.read_text().splitlines())
        if n > OVER_LIMIT.get(rel, MAX_MODULE_LINES):
            too_long[rel] = n
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines (or over their cap in OVER_LIMIT): {too_long}"


def test_readme_is_short_with_the_three_tasks_first():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, len(lines)
    head = "\n".join(lines[:100])
    for task in ("Run the reproduction", "Use the filters", "Trust the numbers"):
        assert re.search(rf"^## \d\. {task}", head, re.M), task


def test_no_import_cycle_and_benchmarks_depend_one_way():
    mods = dict(_modules("jaxhfc", "experiments", "benchmarks"))
    graph = {m: _imports(p, set(mods)) for m, p in mods.items()}
    assert _cycles(graph) == []
    back = {m: sorted(d for d in deps if d.startswith("benchmarks")) for m, deps in graph.items()
            if m.startswith(("experiments", "jaxhfc"))}
    assert not {m: d for m, d in back.items() if d}, "experiments and jaxhfc must not import benchmarks"


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_over_limit_caps_name_real_modules():
    assert all((ROOT / name).exists() for name in OVER_LIMIT), sorted(OVER_LIMIT)


def test_reproduce_all_is_a_short_main():
    n = len((ROOT / "experiments" / "reproduce_all.py").read_text().splitlines())
    assert n <= 150, f"experiments/reproduce_all.py has {n} lines; its writers belong in experiments/reporting.py"


def test_every_dataset_known_by_name_has_one_profile():
    from experiments import profiles
    from jaxhfc import datasets

    assert set(profiles.PROFILES) == set(datasets.READERS), (
        f"readers without a profile: {sorted(set(datasets.READERS) - set(profiles.PROFILES))}; "
        f"profiles without a reader: {sorted(set(profiles.PROFILES) - set(datasets.READERS))}")
    for name, p in profiles.PROFILES.items():
        assert p.name == name and p.image_size is not None, name
    # the dataset facts live in the profiles: no other module of experiments/ branches on a
    # dataset's name (the built-in default "synthetic" aside)
    for path in sorted((ROOT / "experiments").glob("*.py")):
        named = _compared_names(ast.parse(path.read_text()), set(profiles.PROFILES) - {"synthetic"})
        assert not named, f"{path.name} compares the dataset with {named}; put the fact in their profile"


def _compared_names(tree, names) -> list:
    """String constants in ``names`` that take part in a comparison (``x == "a"``, ``x in ("a", "b")``)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                found += [n.value for n in ast.walk(side) if isinstance(n, ast.Constant) and n.value in names]
    return found


def test_the_branch_finder_finds_a_branch_on_a_name():
    tree = ast.parse('if d in ("mnist", "x"):\n    pass\nelif d == "cifar10":\n    pass\nTABLE = {"mnist": 1}')
    assert _compared_names(tree, {"mnist", "cifar10"}) == ["mnist", "cifar10"]
