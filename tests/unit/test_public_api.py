"""A name on `bigmodel` is one thing: the verbs are functions, their code lives in stage packages
(issue 18: `bigmodel.train.evaluation` once failed after `import bigmodel.train.evaluation`)."""

import importlib
import inspect
import subprocess
import sys


def test_verbs_are_functions_even_after_their_packages_are_imported():
    code = (
        "import bigmodel.training.evaluation, bigmodel.online_learning.learner, "
        "bigmodel.explanations.core, bigmodel.federation.run\n"
        "import bigmodel, inspect\n"
        "assert all(inspect.isfunction(getattr(bigmodel, n)) for n in ('train', 'online', 'explain', 'federated'))\n"
        "assert bigmodel.training.evaluation.evaluate_stream\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_no_public_name_shadows_a_subpackage():
    import bigmodel

    for name in bigmodel.__all__:
        try:
            module = importlib.import_module(f"bigmodel.{name}")
        except ModuleNotFoundError:
            continue
        raise AssertionError(f"bigmodel.{name} is both {getattr(bigmodel, name)!r} and {module!r}")
    assert inspect.isfunction(bigmodel.train)
