"""``contracts.__all__`` is exactly the public surface, as in httpx's test_exported_members.py."""

import importlib
import inspect
import pkgutil

import msgspec

import contracts


def test_all_names_exist_once() -> None:
    assert len(set(contracts.__all__)) == len(contracts.__all__)
    for name in contracts.__all__:
        assert hasattr(contracts, name), f"contracts.__all__ names {name}, which does not exist"


def test_every_public_name_is_in_all() -> None:
    public = {
        name
        for name, value in vars(contracts).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }

    assert public == set(contracts.__all__)


def test_every_public_struct_of_the_contracts_modules_is_exported() -> None:
    for info in pkgutil.iter_modules(contracts.__path__, prefix="contracts."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                name.startswith("_")
                or not inspect.isclass(obj)
                or not issubclass(obj, msgspec.Struct)
                or obj.__module__ != module.__name__
            ):
                continue
            assert getattr(contracts, name, None) is obj, (
                f"{module.__name__}.{name} is not exported from contracts (add it to __all__)"
            )
