"""The README's two set-up commands and CI agree: .ci/run installs the project exactly as the
README says and runs exactly the README's test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _setup_commands():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Set-up.*?```bash\n(.*?)```", readme, re.S).group(1)
    cmds = [line for line in block.splitlines() if line and not line.startswith("#")]
    assert len(cmds) == 2, cmds
    return cmds


def test_ci_runs_the_readme_commands():
    main_job, tests = _setup_commands()
    install = main_job.split(" && .venv/bin/python -m experiments")[0]
    assert "experiments.reproduce_all --quick" in main_job
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install in ci, f"{install!r} not a line of .ci/run"
    assert tests in ci, f"{tests!r} not a line of .ci/run"
    assert "xla_force_host_platform_device_count=8" in tests and "pytest" in tests
