"""Request parameter checking against stripe-python's own parameter types.

stripe-python ships a TypedDict for every request (`stripe.params._customer_create_params.
CustomerCreateParams`, ...), generated from Stripe's OpenAPI spec. They name every parameter an
endpoint accepts, which ones are required, the nested shapes, integer and boolean fields and closed
enums. The server reads them to answer like Stripe does: 400 `parameter_unknown` for a parameter
the endpoint does not take, `parameter_missing` for a required one, `parameter_invalid_integer`,
and "Invalid x: must be one of ..." for a closed enum. Where a type cannot be read the check is
skipped for that part (never a false rejection from a gap in this reader).
"""

from __future__ import annotations

import decimal
import importlib
import re
import types
import typing
from dataclasses import dataclass, field
from functools import cache

import typing_extensions

from .errors import StripeError, invalid_choice, invalid_integer, missing, unknown

REQUEST_OPTION_KEYS = frozenset(
    {
        "api_key",
        "stripe_version",
        "stripe_account",
        "stripe_context",
        "max_network_retries",
        "idempotency_key",
        "content_type",
        "headers",
    }
)


@dataclass
class Spec:
    kind: str  # object, list, map, int, bool, decimal, str, enum, union, any
    fields: dict[str, tuple[Spec, bool]] = field(default_factory=dict)  # name -> (spec, required)
    item: Spec | None = None
    choices: tuple = ()
    members: list[Spec] = field(default_factory=list)
    emptyable: bool = False  # accepts "" (Stripe's way to unset a field)


ANY = Spec("any")


def _namespace(module) -> dict:
    ns = dict(vars(module))
    ns.update(
        {
            "typing": typing,
            "decimal": decimal,
            "Literal": typing_extensions.Literal,
            "NotRequired": typing_extensions.NotRequired,
            "Required": typing_extensions.Required,
            "List": typing.List,  # noqa: UP006 - names used in the generated annotations
            "Dict": typing.Dict,  # noqa: UP006
            "Union": typing.Union,
            "Optional": typing.Optional,
        }
    )
    return ns


class _Reader:
    def __init__(self, module):
        self.module = module
        self.ns = _namespace(module)
        self.memo: dict[type, Spec] = {}

    def resolve(self, annotation):
        if isinstance(annotation, typing.ForwardRef):
            annotation = annotation.__forward_arg__
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, self.ns)  # noqa: S307 - stripe-python's own annotations
            except Exception:  # noqa: BLE001 - a name only imported under TYPE_CHECKING
                return None
        return annotation

    def required(self, annotation) -> tuple[object, bool]:
        """Strip NotRequired/Required; a string annotation is checked by its text."""
        if isinstance(annotation, typing.ForwardRef):
            annotation = annotation.__forward_arg__
        if isinstance(annotation, str):
            text = annotation.strip()
            for prefix in ("typing.NotRequired[", "NotRequired[", "typing_extensions.NotRequired["):
                if text.startswith(prefix):
                    return text[len(prefix) : -1], False
            return text, True
        origin = typing_extensions.get_origin(annotation)
        if origin is typing_extensions.NotRequired or origin is getattr(typing, "NotRequired", None):
            return typing_extensions.get_args(annotation)[0], False
        if origin is typing_extensions.Required or origin is getattr(typing, "Required", None):
            return typing_extensions.get_args(annotation)[0], True
        return annotation, True

    def spec(self, annotation) -> Spec:
        annotation = self.resolve(annotation)
        if annotation is None:
            return ANY
        if typing_extensions.is_typeddict(annotation):
            return self.typeddict(annotation)
        origin = typing_extensions.get_origin(annotation)
        args = typing_extensions.get_args(annotation)
        if origin in (typing_extensions.NotRequired, typing_extensions.Required):
            return self.spec(args[0])
        if origin is typing.Union or origin is types.UnionType:
            return self.union([self.spec(a) for a in args])
        if origin is typing_extensions.Literal or origin is typing.Literal:
            return Spec("enum", choices=tuple(args))
        if origin in (list, typing.List):  # noqa: UP006
            return Spec("list", item=self.spec(args[0]) if args else ANY)
        if origin in (dict, typing.Dict):  # noqa: UP006
            return Spec("map")
        if annotation is int:
            return Spec("int")
        if annotation is bool:
            return Spec("bool")
        if annotation is float or annotation is decimal.Decimal:
            return Spec("decimal")
        if annotation is str:
            return Spec("str")
        name = getattr(annotation, "__name__", "") or getattr(origin, "__name__", "")
        if "StripeObject" in name:
            return Spec("map")
        return ANY

    def union(self, members: list[Spec]) -> Spec:
        emptyable = False
        kept = []
        for m in members:
            if m.kind == "enum" and m.choices == ("",):
                emptyable = True
                continue
            kept.append(m)
        enums = [m for m in kept if m.kind == "enum"]
        if enums and len(enums) == len(kept):
            return Spec("enum", choices=tuple(c for m in enums for c in m.choices), emptyable=emptyable)
        if len(kept) == 1:
            single = kept[0]
            return Spec(
                single.kind,
                fields=single.fields,
                item=single.item,
                choices=single.choices,
                members=single.members,
                emptyable=emptyable,
            )
        return Spec("union", members=kept, emptyable=emptyable)

    def typeddict(self, cls) -> Spec:
        if cls in self.memo:
            return self.memo[cls]
        spec = Spec("object")
        self.memo[cls] = spec
        for name, annotation in cls.__annotations__.items():
            inner, required = self.required(annotation)
            spec.fields[name] = (self.spec(inner), required)
        return spec


def _class_name(module_name: str) -> str:
    base = module_name.rsplit(".", 1)[-1].lstrip("_")
    return "".join(part.capitalize() for part in base.split("_"))


@cache
def load(module_name: str) -> Spec | None:
    """The parameter spec for e.g. `stripe.params._customer_create_params` (None if unavailable)."""
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, _class_name(module_name))
        spec = _Reader(module).typeddict(cls)
    except Exception:  # noqa: BLE001 - stripe-python missing or laid out differently: no checking
        return None
    top = Spec("object", fields={k: v for k, v in spec.fields.items() if k not in REQUEST_OPTION_KEYS})
    return top


_INT = re.compile(r"^-?\d+$")
_DECIMAL = re.compile(r"^-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")


def _name(prefix: str, key) -> str:
    return f"{prefix}[{key}]" if prefix else str(key)


def check(params: dict, spec: Spec | None, api_mode: str = "v1") -> dict:
    """Validate (and normalise list shapes in) `params`; raise StripeError like Stripe would."""
    if spec is None:
        return params
    return _check(params, spec, "", api_mode)


def _check(value, spec: Spec, name: str, api_mode: str):
    if spec.kind == "any":
        return value
    if spec.emptyable and value == "":
        return value
    if spec.kind == "union":
        return _check_union(value, spec, name, api_mode)
    if spec.kind == "object":
        if not isinstance(value, dict):
            if isinstance(value, list) and not value:
                return value
            raise StripeError(400, f"Invalid object: {name} must be an object.", param=name or None)
        out = {}
        for key, sub in value.items():
            if key not in spec.fields:
                raise unknown(_name(name, key))
            out[key] = _check(sub, spec.fields[key][0], _name(name, key), api_mode)
        for key, (_sub, required) in spec.fields.items():
            if required and key not in value:
                raise missing(_name(name, key))
        return out
    if spec.kind == "list":
        if isinstance(value, dict) and all(str(k).isdigit() for k in value):
            value = [value[k] for k in sorted(value, key=int)]
        if not isinstance(value, list):
            raise StripeError(400, f"Invalid array: {name} must be an array.", param=name)
        return [_check(v, spec.item or ANY, f"{name}[{i}]", api_mode) for i, v in enumerate(value)]
    if spec.kind == "map":
        if isinstance(value, list) and not value:
            return {}
        if not isinstance(value, dict):
            raise StripeError(400, f"Invalid object: {name} must be an object.", param=name)
        return value
    if spec.kind == "int":
        if isinstance(value, bool):
            raise invalid_integer(name, value)
        if isinstance(value, int):
            return value
        if isinstance(value, str) and _INT.match(value):
            return value
        raise invalid_integer(name, value)
    if spec.kind == "bool":
        if isinstance(value, bool) or value in ("true", "false"):
            return value
        raise StripeError(400, f"Invalid boolean: {value}", param=name)
    if spec.kind == "decimal":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and _DECIMAL.match(value):
            return value
        raise StripeError(400, f"Invalid decimal: {value}", param=name)
    if spec.kind == "enum":
        if isinstance(value, str) and value in spec.choices:
            return value
        if not isinstance(value, str) and value in spec.choices:
            return value
        raise invalid_choice(name, value, [str(c) for c in spec.choices])
    if spec.kind == "str":
        if isinstance(value, str):
            return value
        if api_mode == "v1" and isinstance(value, (dict, list)):
            raise StripeError(400, f"Invalid string: {name} must be a string.", param=name)
        if api_mode == "v2":
            raise StripeError(400, f"Invalid string: {name} must be a string.", param=name)
        return value
    return value


def _check_union(value, spec: Spec, name: str, api_mode: str):
    by_kind: dict[str, Spec] = {}
    for m in spec.members:
        by_kind.setdefault(m.kind, m)
    if "any" in by_kind:
        return value
    if isinstance(value, dict):
        for kind in ("object", "map", "list"):
            if kind in by_kind:
                return _check(value, by_kind[kind], name, api_mode)
    if isinstance(value, list) and "list" in by_kind:
        return _check(value, by_kind["list"], name, api_mode)
    if isinstance(value, (str, int, float, bool)):
        errors = []
        for kind in ("str", "enum", "int", "decimal", "bool"):
            if kind in by_kind:
                try:
                    return _check(value, by_kind[kind], name, api_mode)
                except StripeError as exc:
                    errors.append(exc)
        if errors:
            raise errors[0]
    if spec.members:
        return _check(value, spec.members[0], name, api_mode)
    return value
