"""Entry points and CLIs are wired: what every ns-* command depends on."""

import subprocess
import sys
from importlib.metadata import entry_points

import pytest

METHODS = {"crossfire", "crossfire-lite", "crossfire-big"}


def test_method_entry_points_resolve_to_method_specifications():
    from nerfstudio.plugins.types import MethodSpecification

    found = {ep.name: ep for ep in entry_points(group="nerfstudio.method_configs")}
    assert METHODS <= set(found)
    for name in METHODS:
        spec = found[name].load()
        assert isinstance(spec, MethodSpecification)
        assert spec.config.method_name == name
        assert spec.description


def test_nerfstudio_discovers_the_methods():
    from nerfstudio.plugins.registry import discover_methods

    methods, descriptions = discover_methods()
    assert METHODS <= set(methods)
    assert all(descriptions[m] for m in METHODS)


def test_optimizer_groups_cover_model_param_groups():
    from method_configs.crossfire_methods import crossfire_lite

    assert {"proposal_networks", "fields", "descriptor_field", "encoder", "camera_opt"} <= set(
        crossfire_lite.config.optimizers
    )


def test_only_the_cpu_variant_skips_the_eval_image():
    """crossfire-lite renders no eval image (10 s of a 10-minute CPU run; the viewer shows the map), and nerfstudio
    reads 0 as never; the GPU variants keep nerfstudio's 500 steps."""
    from nerfstudio.utils.misc import step_check

    from method_configs.crossfire_methods import crossfire, crossfire_big, crossfire_lite

    lite = crossfire_lite.config.steps_per_eval_image
    assert not any(step_check(step, lite) for step in range(crossfire_lite.config.max_num_iterations + 1))
    assert crossfire.config.steps_per_eval_image == crossfire_big.config.steps_per_eval_image == 500


def test_console_scripts_are_registered():
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("ns-localize") == "crossfire_ns.scripts.localize:entrypoint"
    assert scripts.get("crossfire-make-scene") == "crossfire_ns.scripts.make_scene:entrypoint"


@pytest.mark.parametrize("method", ["crossfire", "crossfire-lite"])
def test_ns_train_help_lists_crossfire_fields(method):
    # In a subprocess: catches circular imports and mutable dataclass defaults, as users would meet them.
    ns_train = [sys.executable, "-c", "from nerfstudio.scripts.train import entrypoint; entrypoint()"]
    out = subprocess.run([*ns_train, method, "--help"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    for flag in ("--pipeline.model.descriptor-dim", "--pipeline.model.negative-radius-px", "images-per-batch"):
        assert flag in text, f"{flag} missing from ns-train {method} --help"
    assert "Warm-up" in text or "warm-up" in text.lower()


def test_ns_train_top_level_help_lists_all_variants():
    ns_train = [sys.executable, "-c", "from nerfstudio.scripts.train import entrypoint; entrypoint()"]
    out = subprocess.run([*ns_train, "--help"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    for method in METHODS:
        assert method in out.stdout
