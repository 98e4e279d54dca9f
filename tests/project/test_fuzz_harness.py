"""The fuzz harness (tools/fuzz/fuzz_cache.py) runs in CI without atheris: its
one-input function over every seed in tools/fuzz/corpus and 200 random inputs."""

import importlib.util
import random
import warnings
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parents[2] / "tools" / "fuzz"

pytestmark = pytest.mark.skipif(
    not (FUZZ / "fuzz_cache.py").is_file(),
    reason=f"the fuzz harness is not beside the tests ({FUZZ}): run from a clone or an "
    "unpacked sdist",
)


def _harness():
    spec = importlib.util.spec_from_file_location("fuzz_cache", FUZZ / "fuzz_cache.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def harness():
    return _harness()


def _run(harness, data: bytes) -> None:
    with warnings.catch_warnings():
        # the harness builds np.matrix inputs on purpose
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        harness.test_one_input(data)


def test_seed_corpus(harness):
    seeds = sorted((FUZZ / "corpus").iterdir())
    assert seeds, "tools/fuzz/corpus has no seeds"
    for path in seeds:
        _run(harness, path.read_bytes())


def test_random_inputs(harness):
    rng = random.Random(20261201)
    for _ in range(200):
        _run(harness, rng.randbytes(rng.randint(0, 400)))


def test_empty_and_tiny_inputs(harness):
    for data in (b"", b"\x00", b"\xff" * 3, bytes(range(256))):
        _run(harness, data)
