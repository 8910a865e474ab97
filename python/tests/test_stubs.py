"""The type stubs match the module: every class, function and method they declare exists, and
every public name of the module is declared."""

import ast
import os

import shmq
from shmq import _shmq


def stub_tree():
    path = os.path.join(os.path.dirname(shmq.__file__), "_shmq.pyi")
    assert os.path.exists(path), "the wheel lacks _shmq.pyi"
    assert os.path.exists(os.path.join(os.path.dirname(shmq.__file__), "py.typed"))
    with open(path) as f:
        return ast.parse(f.read())


def test_stubs_declare_what_exists():
    declared = set()
    for node in stub_tree().body:
        if isinstance(node, ast.ClassDef):
            declared.add(node.name)
            cls = getattr(_shmq, node.name)
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    assert hasattr(cls, item.name), f"{node.name}.{item.name}"
                elif isinstance(item, ast.AnnAssign) and not issubclass(cls, BaseException):
                    assert hasattr(cls, item.target.id), f"{node.name}.{item.target.id}"
        elif isinstance(node, ast.AnnAssign):
            declared.add(node.target.id)
    public = {n for n in dir(_shmq) if not n.startswith("_")}
    assert public == declared, public ^ declared
    assert set(shmq.__all__) == declared


def test_every_error_is_a_shmq_error():
    for name in shmq.__all__:
        obj = getattr(shmq, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, shmq.Error)
