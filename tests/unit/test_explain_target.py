"""``target_code``: a class named by label or by code; anything else is a one-line error."""

import pytest

from bigmodel.errors import BigModelError
from bigmodel.explanations.core import target_code
from bigmodel.tasks import TaskSpec


def test_a_code_is_ascii_digits_and_other_digits_are_a_one_line_error():
    spec = TaskSpec("multiclass", 3, ["a", "b", "c"])
    assert target_code(spec, "2") == 2 and target_code(spec, 1) == 1 and target_code(spec, "c") == 2
    # '²' passes str.isdigit but int() refuses it; '３' int() would read as 3
    for target in ("²", "３", "3", "-1"):
        with pytest.raises(BigModelError, match=f"unknown target class '{target}' \\(classes: a, b, c\\)"):
            target_code(spec, target)
