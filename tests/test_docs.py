"""The generated configuration reference matches the code it documents."""

import dataclasses
import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _generator():
    spec = importlib.util.spec_from_file_location("gen_config_docs", ROOT / "tools" / "gen_config_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_md_is_up_to_date():
    gen = _generator()
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == gen.render(), (
        f"docs/configuration.md is stale (a config field, default or comment changed); "
        f"regenerate it with `{gen.REGENERATE}` and commit the result"
    )


def test_every_leaf_key_is_documented_and_settable():
    from w2sjax import config

    text = _generator().render()
    rows = config.describe()
    keys = [key for key, *_ in rows]
    assert len(keys) == len(set(keys))
    for key, typ, default, _ in rows:
        assert f"| `{key}` |" in text
        # describe() must name keys exactly as --set takes them, with the declared default.
        node = config.Config()
        for part in key.split("."):
            node = getattr(node, part)
        assert node == default, key
        assert not dataclasses.is_dataclass(node), key
        config.apply_overrides(config.Config(), [f"{key}={_as_override(default)}"])


def _as_override(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def test_describe_reads_types_and_comments():
    from w2sjax import config

    rows = {key: (typ, comment) for key, typ, _, comment in config.describe()}
    assert rows["seeds"][0] == "tuple[int, ...]"
    assert rows["data.n_test"][0] == "int | None"
    assert rows["data.task"][1]  # a trailing source comment
    assert rows["train.loss.alpha_max"][1]  # the comment heading its block


def test_the_documented_call_path_is_the_code_path():
    """docs/internals.md lists the calls from `w2sjax run` to the loss line; each caller must call
    the next function by name, the first be the console script and the last hold `loss = ...`."""
    import ast
    import importlib
    import inspect
    import re
    import textwrap
    import tomllib

    section = (ROOT / "docs" / "internals.md").read_text().split("## Data flow")[1].split("\n## ")[0]
    hops = re.findall(r"^\d+\. `([\w.]+)` → `([\w.]+)` \(`(w2sjax/[\w/]+\.py)`\)", section, re.M)
    assert 1 <= len(hops) <= 7, hops

    def resolve(name):
        module, *attrs = name.split(".")
        obj = importlib.import_module(f"w2sjax.{module}")
        for attr in attrs:
            obj = getattr(obj, attr)
        return inspect.unwrap(obj)

    script = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["w2sjax"]
    assert script == f"w2sjax.{hops[0][0].rsplit('.', 1)[0]}:{hops[0][0].rsplit('.', 1)[1]}"
    for (caller, callee, path), following in zip(hops, hops[1:] + [None]):
        function = resolve(caller)
        assert pathlib.Path(inspect.getsourcefile(function)) == ROOT / path, caller
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
        called = {node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
                  for node in ast.walk(tree) if isinstance(node, ast.Call)}
        assert callee.rsplit(".", 1)[-1] in called, f"{caller} does not call {callee}"
        assert callable(resolve(callee))
        if following is not None:
            assert following[0] == callee, (caller, callee, following)
    loss_line = re.compile(r"^\s*loss = ", re.M)
    assert loss_line.search(inspect.getsource(resolve(hops[-1][1]))), hops[-1][1]
