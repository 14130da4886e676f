"""The README's Python examples run as written (the plugin example excepted: it defines a stub body)."""

import inspect
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("index", [i for i, b in enumerate(BLOCKS) if "..." not in b])
def test_readme_python_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"readme_example_{index}"}
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), namespace)


def test_readme_tables_list_every_built_in_estimator():
    """Each estimator lvbench registers has a row (its name first) in the README's estimator tables."""
    import lvbench

    firsts = [line.split("|")[1] for line in README.read_text().splitlines() if line.startswith("| `")]

    def module(name):  # where the estimator is defined (tests register their own ones, also as "lvbench")
        return inspect.unwrap(lvbench.get_estimator(name).obj).__module__

    built_in = [n for n in lvbench.list_estimators() if module(n).startswith("lvbench.")]
    assert {"iwae", "jvi", "rebar"} <= set(built_in)
    missing = [n for n in built_in if not any(f"`{n}`" in first for first in firsts)]
    assert not missing, f"README tables lack {missing}"
