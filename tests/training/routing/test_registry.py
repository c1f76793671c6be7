"""The router registry: duplicates, lazy entries, metadata."""

from __future__ import annotations

import pytest

from tests.training.routing.temporary import unregister
from training.routing.baselines import RoundRobin
from training.routing.registry import (
    RouterContext,
    get_entry,
    get_router,
    register,
    register_lazy,
    router_names,
)


@pytest.fixture
def cleanup():
    names: list[str] = []
    yield names
    for n in names:
        unregister(n)


def test_duplicate_name_raises(cleanup):
    with pytest.raises(ValueError, match="already registered"):
        register("round_robin", RoundRobin, description="again")
    register("tmp_dup", RoundRobin, description="x")
    cleanup.append("tmp_dup")
    with pytest.raises(ValueError, match="already registered"):
        register_lazy("tmp_dup", "training.routing.baselines:RoundRobin", description="x")


def test_invalid_names_raise():
    for bad in ("", " x", "a,b"):
        with pytest.raises(ValueError, match="invalid router name"):
            register(bad, RoundRobin, description="x")


def test_unknown_router_lists_known():
    with pytest.raises(KeyError, match="round_robin"):
        get_router("nope", RouterContext(2))


def test_lazy_registration_imports_only_on_demand(cleanup):
    entry = register_lazy(
        "tmp_lazy", "training.routing.baselines:LeastRequest", description="lazy", oracle=False
    )
    cleanup.append("tmp_lazy")
    assert entry.is_lazy
    assert "tmp_lazy" in router_names()
    router = get_router("tmp_lazy", RouterContext(2))
    router.reset(2, 0)
    assert type(router).__name__ == "LeastRequest"
    register_lazy("tmp_broken", "no_such_module_xyz:make", description="broken")
    cleanup.append("tmp_broken")
    with pytest.raises(ModuleNotFoundError):
        get_router("tmp_broken", RouterContext(2))


def test_factory_must_return_a_router(cleanup):
    register("tmp_bad", lambda ctx: object(), description="bad")
    cleanup.append("tmp_bad")
    with pytest.raises(TypeError, match="not a Router"):
        get_router("tmp_bad", RouterContext(2))


def test_metadata():
    assert get_entry("decode_balancer").oracle
    assert get_entry("decode_balancer").needs_predictions
    assert get_entry("workload_impact_greedy").needs_latency_model
    assert not get_entry("round_robin").needs_predictions
    assert "decode_balancer" not in router_names(include_oracle=False)


def test_context_validation():
    with pytest.raises(ValueError, match="num_instances"):
        RouterContext(0)
    with pytest.raises(ValueError, match="length_threshold_tokens"):
        RouterContext(2, length_threshold_tokens=0)


def test_routing_imports_no_io_or_ml_frameworks():
    import subprocess
    import sys

    code = (
        "import sys; import training.routing as r; r.router_names(); "
        "bad = [m for m in ('duckdb','pandas','torch','mlflow','prefect','matplotlib') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_router_order_does_not_depend_on_what_a_process_imported_first():
    """A built-in module registers its routers when first imported; the RL env imports
    ``latency_aware`` before the registry loads the others. The listed order (what ``--routers all``,
    reports and the stored replay digests follow) must be the same either way."""
    import subprocess
    import sys

    def names(first: str) -> list[str]:
        code = f"{first}from training.routing.registry import router_names; print(router_names())"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        return out.stdout.strip().splitlines()[-1].split("'")[1::2]

    plain = names("")
    assert plain[:2] == ["round_robin", "random"]
    assert names("import training.routing.latency_aware; ") == plain
    assert names("import training.rl.env; ") == plain
