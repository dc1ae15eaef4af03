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
