"""The Examples of the public docstrings run, as doctests (NumPy's style, numpydoc sections).

A test file rather than ``--doctest-modules``: collecting fastcorr's modules as doctests would
import every one of them (the CUDA kernels where numba.cuda is missing, the TensorFlow
adapter where TensorFlow is), and would change what the CI stages that name their test files
(the simulator, the benchmark) collect. Here the public functions are named: fastcorr's
``__all__`` and the adapters' ``__all__``, each adapter skipped where its framework is not
installed (.ci/run runs this file again in its TensorFlow stage).
"""

import doctest
import importlib
import importlib.util
import inspect

import pytest

import fastcorr

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
ADAPTERS = {"fastcorr.torch": "torch", "fastcorr.jax": "jax",
            "fastcorr.tensorflow": "tensorflow"}
SECTIONS = ("Parameters", "Returns", "Examples")


def public(module):
    """(name, object) of a module's public functions and classes (output_pool: its class)."""
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            yield f"{module.__name__}.{name}", obj
        elif isinstance(obj, fastcorr._memory.OutputPool):
            yield f"{module.__name__}.{name}", type(obj)


def cases():
    yield from (pytest.param(fastcorr, n, o, id=n) for n, o in public(fastcorr))
    for module, framework in ADAPTERS.items():
        if importlib.util.find_spec(framework) is None:
            yield pytest.param(None, module, None, id=module,
                               marks=pytest.mark.skip(reason=f"{framework} is not installed"))
            continue
        mod = importlib.import_module(module)
        yield from (pytest.param(mod, n, o, id=n) for n, o in public(mod))


CASES = list(cases())


@pytest.mark.parametrize("module, name, obj", CASES)
def test_examples_run(module, name, obj):
    tests = doctest.DocTestFinder().find(obj, name, module=inspect.getmodule(obj), globs={})
    examples = [t for t in tests if t.examples]
    assert examples, f"{name} has no Examples"
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for t in examples:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed"


@pytest.mark.parametrize("module, name, obj", CASES)
def test_numpydoc_sections(module, name, obj):
    doc = inspect.getdoc(obj)
    assert doc and "{" + "axis}" not in doc  # the fragments were filled in
    summary = doc.splitlines()[0]
    assert summary.endswith(".") and len(summary) <= 96, summary
    sections = SECTIONS if inspect.isfunction(obj) else ("Examples",)
    for section in sections:
        if section == "Parameters" and not inspect.signature(obj).parameters:
            continue
        if section == "Returns" and name.rsplit(".", 1)[1] in ("set_num_threads",
                                                                 "num_threads"):
            continue  # they return nothing
        assert f"\n{section}\n{'-' * len(section)}\n" in doc, f"{name}: no {section} section"
