"""``load_object``: both reference forms, stable module names, and one clear SpecError per way it fails.

User files here subclass ``Exception`` (``base=Exception``) so these tests need no Lightning.
"""

from __future__ import annotations

import pickle
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from runner.errors import SpecError
from runner.spec.loading import load_object, module_name_for_file, split_ref


@pytest.fixture(autouse=True)
def isolated_imports():
    """Forget the modules and sys.path entries a test added, so tests do not see each other's files."""
    modules, path = set(sys.modules), list(sys.path)
    yield
    for name in set(sys.modules) - modules:
        del sys.modules[name]
    sys.path[:] = path


def write(directory: Path, name: str, source: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


def failure(ref: str, **kwargs) -> str:
    with pytest.raises(SpecError) as caught:
        load_object(ref, base=Exception, field="train.model", **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("train.model: ")
    return message


GOOD = """
    class Good(ValueError):
        pass

    class Other(KeyError):
        pass

    def helper():
        pass

    NUMBER = 3
"""


def test_file_reference_loads_the_class(tmp_path):
    path = write(tmp_path, "models.py", GOOD)
    found = load_object(f"{path}:Good", base=Exception, field="train.model")
    assert issubclass(found, ValueError) and found.__name__ == "Good"
    assert sys.modules[found.__module__].__file__ == str(path)


def test_relative_file_reference_resolves_against_the_current_directory(tmp_path, monkeypatch):
    write(tmp_path, "sub/models.py", GOOD)
    monkeypatch.chdir(tmp_path)
    assert load_object("sub/models.py:Good", base=Exception, field="train.model").__name__ == "Good"


def test_same_file_is_one_module(tmp_path):
    path = write(tmp_path, "models.py", GOOD)
    first = load_object(f"{path}:Good", base=Exception, field="train.model")
    again = load_object(f"{tmp_path}/./models.py:Good", base=Exception, field="train.data")
    assert again is first
    assert first.__module__ == module_name_for_file(path)


def test_module_name_is_stable_and_distinct_per_path(tmp_path):
    one, two = tmp_path / "a" / "model.py", tmp_path / "b" / "model.py"
    assert module_name_for_file(one) == module_name_for_file(one)
    assert module_name_for_file(one) != module_name_for_file(two)
    assert module_name_for_file(one).isidentifier()


def test_pickled_class_loads_again_in_a_process_that_loaded_the_same_path(tmp_path):
    path = write(tmp_path, "models.py", GOOD)
    pickled = pickle.dumps(load_object(f"{path}:Good", base=Exception, field="train.model")("hello"))
    del sys.modules[module_name_for_file(path)]  # as in a fresh process

    with pytest.raises(ModuleNotFoundError):
        pickle.loads(pickled)
    cls = load_object(f"{path}:Good", base=Exception, field="train.model")
    restored = pickle.loads(pickled)
    assert type(restored) is cls and restored.args == ("hello",)


def test_file_can_import_its_siblings(tmp_path):
    package = f"helpers_{uuid.uuid4().hex}"
    write(tmp_path, f"{package}.py", "class Base(ValueError):\n    pass\n")
    path = write(tmp_path, "models.py", f"from {package} import Base\n\nclass Child(Base):\n    pass\n")
    assert load_object(f"{path}:Child", base=Exception, field="train.model").__name__ == "Child"


def test_module_reference_imports_from_workdir(tmp_path):
    package = f"pkg_{uuid.uuid4().hex}"
    write(tmp_path, f"{package}/__init__.py", "")
    write(tmp_path, f"{package}/models.py", GOOD)
    found = load_object(f"{package}.models:Other", base=Exception, field="train.model", workdir=tmp_path)
    assert found.__module__ == f"{package}.models"


def test_installed_module_reference():
    assert load_object("json.decoder:JSONDecodeError", base=Exception, field="train.model").__name__ == "JSONDecodeError"


@pytest.mark.parametrize("ref", ["models.py", "models.py:", "models.py:not-a-name", "my-package.models:Good", ":Good"])
def test_malformed_reference(ref):
    message = failure(ref)
    assert "expected 'path/to/file.py:Class' or 'package.module:Class'" in message
    assert repr(ref) in message


def test_split_ref_tells_files_from_modules():
    assert split_ref("a/b.py:C") == ("a/b.py", "C")
    assert split_ref("pkg.mod:C") == ("pkg.mod", "C")


def test_missing_file(tmp_path):
    message = failure(f"{tmp_path}/nope.py:Good")
    assert "expected an existing Python file" in message and f"{tmp_path}/nope.py" in message


def test_module_that_raises_while_importing(tmp_path):
    path = write(tmp_path, "broken.py", "import os\n\nraise RuntimeError('no GPU\\nfound')\n")
    message = failure(f"{path}:Good")
    assert f"expected {path} to import cleanly" in message
    assert "RuntimeError: no GPU found (line 3)" in message
    assert module_name_for_file(path) not in sys.modules


def test_module_with_a_syntax_error(tmp_path):
    path = write(tmp_path, "broken.py", "class Good(ValueError)\n    pass\n")
    assert "SyntaxError" in failure(f"{path}:Good")


def test_module_that_exits_while_importing(tmp_path):
    path = write(tmp_path, "script.py", "import sys\nsys.exit(2)\n")
    assert "SystemExit: 2 (line 2)" in failure(f"{path}:Good")


def test_module_not_installed():
    message = failure("no_such_package_for_spotrun.models:Good")
    assert "expected an importable module no_such_package_for_spotrun.models" in message
    assert "ModuleNotFoundError" in message


def test_module_whose_own_import_fails(tmp_path):
    package = f"pkg_{uuid.uuid4().hex}"
    write(tmp_path, f"{package}/__init__.py", "import no_such_dependency_for_spotrun\n")
    message = failure(f"{package}:Good", workdir=tmp_path)
    assert f"expected module {package} to import cleanly" in message
    assert "No module named 'no_such_dependency_for_spotrun'" in message


def test_missing_class_lists_what_the_module_defines(tmp_path):
    path = write(tmp_path, "models.py", GOOD)
    message = failure(f"{path}:Missing")
    assert "expected a class Missing" in message
    assert "its Exception subclasses: Good, Other" in message


def test_missing_class_in_a_module_without_candidates(tmp_path):
    path = write(tmp_path, "empty.py", "X = 1\n")
    assert "it defines no Exception subclass" in failure(f"{path}:Model")


def test_class_of_the_wrong_base(tmp_path):
    path = write(tmp_path, "models.py", textwrap.dedent(GOOD) + "\nclass Plain(dict):\n    pass\n")
    message = failure(f"{path}:Plain")
    assert "expected a Exception subclass" in message and "deriving from dict" in message


def test_not_a_class(tmp_path):
    path = write(tmp_path, "models.py", GOOD)
    assert "a function, not a class" in failure(f"{path}:helper")


def test_the_base_itself_is_not_a_subclass():
    assert "expected a Exception subclass" in failure("builtins:Exception")
