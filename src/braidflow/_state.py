"""A flow's state type: the keys of ``shared``, their types and merge rules, read once.

`state_type` reads a TypedDict, a dataclass or a pydantic model (``Flow(state=...)``);
the `StateType` checks a store against it when a run starts, says which
rules the joins use, and makes the views its nodes get (`_state_views`).
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
import weakref
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from ._errors import InvalidParameterError, StateError
from ._merge import Rule
from ._state_check import describe, problem, strip
from ._state_pydantic import field_adapter, fields_validator, model_from_fields
from ._state_views import view_class
from ._views import SharedView
from .merge import MergeRule

__all__ = [
    "VALUE_CLASSES",
    "StateT",
    "StateType",
    "declared_state",
    "state_type",
]

# Values nothing changes in place: a step that touched one left it as its write
# (or the run's start) checked it.
_UNCHANGING = frozenset({str, int, float, bool, type(None)})

if TYPE_CHECKING:  # a default (PEP 696) for type checkers; Python 3.11's TypeVar has none
    from typing_extensions import TypeVar

    StateT = TypeVar("StateT", default=Any)
else:
    StateT = typing.TypeVar("StateT")

_KINDS = {"typeddict": "TypedDict", "dataclass": "dataclass", "model": "pydantic model"}


def _is_typeddict(cls: Any) -> bool:
    return isinstance(cls, type) and issubclass(cls, dict) and hasattr(cls, "__required_keys__")


def _is_model(cls: Any) -> bool:
    """A pydantic model class (pydantic is never imported here: a model's
    module imported it already)."""
    pydantic = sys.modules.get("pydantic")
    return pydantic is not None and isinstance(cls, type) and issubclass(cls, pydantic.BaseModel)


class StateType:
    """What a state type says, read once: its kind, each key's annotation,
    which keys are required, the defaults of the others, the merge rules;
    and whether values are validated when nodes write them.

    Attributes:
        cls: The class given (a TypedDict, dataclass or pydantic model).
        kind: ``"typeddict"``, ``"dataclass"`` or ``"model"``.
        hints: Each key's annotation, ``Annotated`` metadata included.
        rules: Each key's merge rule, from its ``Annotated`` metadata.
        required: The keys a store must hold when a run starts.
        defaults: For a dataclass or model: how to make each other key's
            default (a store that lacks the key gets it).
        writable: The keys nodes may write: all of them but a model's
            frozen fields (``Field(frozen=True)``).
        validate: Check values when nodes write them (``Flow(validate=True)``).
    """

    __slots__ = (
        "__weakref__",
        "_adapters",
        "_exact",
        "_fields",
        "cls",
        "defaults",
        "hints",
        "kind",
        "name",
        "required",
        "rules",
        "validate",
        "view_class",
        "writable",
    )

    def __init__(self, cls: type, kind: str, owner: str, validate: bool) -> None:
        self.cls = cls
        self.kind = kind
        self.name = cls.__name__
        self.validate = validate
        self._adapters: dict[str, Any] = {}
        self._fields: Any = None  # a model's (False: it has none), made when first used
        try:
            hints = typing.get_type_hints(cls, include_extras=True)
        except Exception as error:  # a name the annotations use cannot be found
            raise InvalidParameterError(
                f"{owner}: state={self.name}: its annotations cannot be read ({error!r}); "
                "define the types they name where the class is defined (at module level, "
                "for a class whose module says `from __future__ import annotations`)"
            ) from None
        self.defaults: dict[str, Callable[[], Any]] = {}
        if kind == "typeddict":
            self.hints = hints
            self.required = frozenset(cls.__required_keys__)  # type: ignore[attr-defined]
        elif kind == "dataclass":
            self._read_dataclass(cls, hints, owner)
        else:
            self._read_model(cls, hints, owner)
        self.writable = frozenset(self.hints)
        if kind == "model":  # a frozen field: refused at the write, as pydantic refuses it
            fields = cls.model_fields  # type: ignore[attr-defined]
            self.writable -= {key for key in self.hints if fields[key].frozen}
        self.rules: dict[str, Rule] = {}
        for key, annotation in self.hints.items():
            rule = _rule_in(strip(annotation)[1], key, self.name, owner)
            if rule is not None:
                self.rules[key] = rule
        # Keys whose type is a plain class: a value of exactly that class fits
        # (validate=True checks it with one comparison; measured in bench/).
        self._exact: dict[str, type] = {}
        if kind != "model":
            for key, annotation in self.hints.items():
                plain = strip(annotation)[0]
                if isinstance(plain, type) and typing.get_origin(plain) is None:
                    self._exact[key] = plain
        self.view_class = view_class(self)
        for annotation in self.hints.values():
            _note_value_classes(annotation)

    def _read_dataclass(self, cls: type, hints: dict[str, Any], owner: str) -> None:
        if cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            raise InvalidParameterError(
                f"{owner}: state={self.name} is a frozen dataclass, and nodes write the "
                f"state; declare it with a plain @dataclass"
            )
        self.hints = {}
        required = set()
        for field in dataclasses.fields(cls):
            self.hints[field.name] = hints.get(field.name, Any)
            if field.default is not dataclasses.MISSING:
                self.defaults[field.name] = _constant(field.default)
            elif field.default_factory is not dataclasses.MISSING:
                self.defaults[field.name] = field.default_factory
            elif field.init:
                required.add(field.name)
        self.required = frozenset(required)

    def _read_model(self, cls: Any, hints: dict[str, Any], owner: str) -> None:
        if cls.model_config.get("frozen"):
            raise InvalidParameterError(
                f"{owner}: state={self.name} is a frozen pydantic model, and nodes write the "
                "state; leave frozen=True out of its model_config"
            )
        self.hints = {}
        required = set()
        for name, field in cls.model_fields.items():
            self.hints[name] = hints.get(name, field.annotation)
            if field.is_required():
                required.add(name)
            else:
                self.defaults[name] = _model_default(field)
        self.required = frozenset(required)

    def __repr__(self) -> str:
        return f"<state type {self.name} ({_KINDS[self.kind]})>"

    # -- the store a run works on ----------------------------------------------------

    def store_of(self, shared: Any, owner: Any) -> tuple[Any, Any]:
        """The store a run of this state works on, and the instance to write
        it back to when the run ends (``None``): for an instance of a
        dataclass or model, a dict of its fields; for a mapping, itself, with
        the defaults of the keys it lacks set in it.

        Raises:
            StateError: For something that is neither the state nor a dict.
        """
        if self.kind != "typeddict" and isinstance(shared, self.cls):
            store = {}
            for key in self.hints:
                try:
                    store[key] = getattr(shared, key)
                except AttributeError:  # a field never set (init=False, no default)
                    continue
            return store, shared
        if not isinstance(shared, Mapping):
            raise StateError(
                f"{owner._describe()}: shared is a {type(shared).__name__}, and this flow's "
                f"state is {self.name}; give "
                + (
                    "a dict of its keys"
                    if self.kind == "typeddict"
                    else f"a {self.name}, or a dict of its keys"
                ),
                node=owner._display_name(),
            )
        assume = shared.assume if type(shared) is SharedView else None
        for key, make in self.defaults.items():
            if key not in shared:
                if assume is not None:  # a branch's: as if at the fork, not its own write
                    assume(key, make())
                else:
                    shared[key] = make()  # type: ignore[index]
        return shared, None

    def view(self, store: Any) -> Any:
        """What the nodes get as ``shared`` over ``store``: a view, or the store itself."""
        made = self.view_class
        return store if made is None else made(store)

    def write_back(self, store: dict[Any, Any], instance: Any, owner: Any) -> None:
        """Bring the instance a run was given up to date with the run's store:
        all of it, or none of it.

        Only the keys whose value the run changed are assigned. For a model,
        a frozen field the run left as it was is not assigned; one that
        validates each assignment is validated whole first, and gets
        pydantic's values without validating each field again (one field at
        a time, its model validators would see old and new values mixed).

        Raises:
            StateError: For a model, if the run changed a frozen field, or
                the store does not fit a model that validates each
                assignment (a write the flow did not validate); the
                instance is left as it was then.
        """
        changed = {}
        for key in self.hints:
            if key in store and store[key] is not getattr(instance, key, _NO_KEY):
                changed[key] = store[key]
        if self.kind == "model":
            self._write_back_model(changed, instance, owner)
            return
        for key, value in changed.items():
            setattr(instance, key, value)

    def _write_back_model(self, changed: dict[str, Any], instance: Any, owner: Any) -> None:
        cls = type(instance)
        fields = cls.model_fields
        for key in [key for key in changed if fields[key].frozen]:
            before = getattr(instance, key)
            if _equal(changed[key], before):  # left as it was (or a copy: a durable run's)
                del changed[key]
                continue
            raise StateError(
                f"{owner._describe()}: the run changed {self.name}.{key}, a frozen field "
                f"({before!r}, then {changed[key]!r}), so the {self.name} it was given is "
                f"left as it was; leave {key} as it is, or declare it without `frozen=True`",
                node=owner._display_name(),
                key=key,
            )
        if not changed:
            return
        if not cls.model_config.get("validate_assignment"):
            for key, value in changed.items():  # (pydantic checks nothing but frozen here)
                setattr(instance, key, value)
            return
        try:  # all of it first: one value that does not fit changes nothing
            whole = model_from_fields(cls, {**instance.__dict__, **changed})
        except Exception as error:
            raise StateError(
                f"{owner._describe()}: the run ended with a shared that does not fit "
                f"{self.name}, so the {self.name} it was given is left as it was: "
                f"{' '.join(str(error).split())}; validate each write as it is made with "
                f"`{type(owner).__name__}(..., state={self.name}, validate=True)`",
                node=owner._display_name(),
            ) from error
        instance.__dict__.update({key: whole.__dict__[key] for key in changed})
        instance.__pydantic_fields_set__.update(changed)

    # -- checking ----------------------------------------------------------------------

    def check(self, store: Mapping[Any, Any], owner: Any) -> None:
        """Check a store against the type when a run (or the typed flow) starts;
        with ``validate`` on, a model's values are validated (and replaced by
        what pydantic makes of them).

        Raises:
            StateError: Naming each key missing, unknown or of another type.
        """
        found: list[tuple[Any, str]] = []
        for key in sorted(self.required - store.keys()):
            found.append((key, f"shared has no key {key!r} ({describe(self.hints[key])})"))
        items = dict.items(store) if isinstance(store, dict) else store.items()
        validating = self.validate and self.kind == "model"
        values = {}
        for key, value in items:
            if key not in self.hints:
                found.append((key, f"shared[{key!r}] is not a key of {self.name}"))
            elif validating:  # by pydantic, all together (below)
                values[key] = value
            else:
                wrong = problem(value, self.hints[key], f"shared[{key!r}]")
                if wrong is not None:
                    found.append((key, wrong))
        validated = self._model_values(values, found) if validating else {}
        if found:
            unknown = any(key not in self.hints for key, _ in found)
            keys = ", ".join(repr(key) for key in self.hints)
            raise StateError(
                f"{owner._describe()}: shared does not fit its state type {self.name}: "
                + "; ".join(text for _, text in found)
                + (f" ({self.name}'s keys: {keys})" if unknown else ""),
                node=owner._display_name(),
                key=found[0][0],
            )
        for key, value in validated.items():  # what pydantic made of them
            store[key] = value  # type: ignore[index]

    def validated(self, key: Any, value: Any, store: Any) -> Any:
        """``value`` as a node writes it to ``key`` (``validate=True``): checked
        by its annotation; for a model, pydantic's value, as pydantic validates
        an assignment to that field: its type, constraints and config, its
        field validators (``@field_validator``, ``info.data`` the other
        values in ``store``), coercion included. Not its model validators:
        they check the model whole, and a write is of one key (a node writing
        two related keys would be refused between them).

        Raises:
            StateError: For a key the type does not have, or a value that does not fit.
        """
        if type(value) is self._exact.get(key):
            return value
        annotation = self.hints.get(key, _NO_KEY)
        if annotation is _NO_KEY:
            raise StateError(
                f"shared[{key!r}] is not a key of {self.name} "
                f"({self.name}'s keys: {', '.join(map(repr, self.hints))})",
                key=key,
            )
        if self.kind == "model":
            try:
                return self._model_value(key, value, store)
            except ValueError as error:  # pydantic's ValidationError
                raise StateError(self._unfit(key, error), key=key) from None
        wrong = problem(value, annotation, f"shared[{key!r}]")
        if wrong is not None:
            raise StateError(f"{wrong} ({self.name}.{key})", key=key)
        return value

    def check_step(self, store: Any, keys: Any, flow: Any = None, stage: str = "") -> None:
        """A step of a durable run (``validate=True``) is to be recorded: the
        keys it touched (``keys``: read, written or deleted) hold values of
        their types in ``store`` (a `TrackingDict` or a branch's view). So a
        value changed in place (``shared["items"].append(5)`` for a
        ``list[str]``), which no write checked, is refused before the store
        holds a state its resume would refuse. Only checked: the values are
        left as they are. What a ``flow``'s own ``stage`` (``"prep"``,
        ``"post"``) changed is checked alike, and the error names the flow.

        Raises:
            StateError: Naming the first key whose value does not fit.
        """
        # Read as they are: not noted as read by a durable run's dict, nor
        # copied by a branch's view.
        read = store._peek if type(store) is SharedView else partial(dict.__getitem__, store)
        writable = self.writable
        for key in keys:
            if key not in writable or key not in store:
                # (a view refuses to write an unknown key or a frozen field, to
                # delete a required one; a frozen field is only ever read)
                continue
            value = read(key)
            if type(value) in _UNCHANGING:  # checked when it was written: nothing changes it
                continue
            try:
                self.validated(key, value, store)
            except StateError as error:
                after, kept, node = "the step", "the step is", None
                if flow is not None:
                    after = f"the {stage} of {flow._describe()}"
                    kept, node = "what it changed is", flow._display_name()
                raise StateError(
                    f"{error} after {after}; {kept} not recorded, as a resume would "
                    "refuse what it left (a change in place, which no write checks): change "
                    f"shared[{key!r}] only to values of its type",
                    node=node,
                    key=key,
                ) from None

    def _model_value(self, key: str, value: Any, store: Any) -> Any:
        """What pydantic makes of ``value`` assigned to the field ``key`` of a
        model whose other fields hold ``store``'s values."""
        fields = self._fields_validator()
        if fields is None:
            adapter = self._adapters.get(key)
            if adapter is None:
                adapter = self._adapters[key] = field_adapter(self.cls, key)
            return adapter.validate_python(value)
        # The values its field validators get as ``info.data``, in a dict of
        # their own (pydantic writes the value in it), read as they are: not
        # noted as read by a durable run's dict, nor copied by a branch's view.
        if isinstance(store, dict):
            values = dict(dict.items(store))
        else:
            read = store._peek if type(store) is SharedView else store.__getitem__
            values = {name: read(name) for name in self.hints if name in store}
        return fields.validate_assignment(values, key, value)[0][key]

    def _model_values(self, values: dict[str, Any], found: list[tuple[Any, str]]) -> Any:
        """A model's ``values`` (by field name) as pydantic validates them
        together (``model_validate``, its model validators left out, as on a
        write); what does not fit is added to ``found``."""
        fields = self._fields_validator()
        if fields is None:
            validated = {}
            for key, value in values.items():
                try:
                    validated[key] = self.validated(key, value, values)
                except StateError as error:
                    found.append((key, str(error)))
            return validated
        try:
            made = fields.validate_python(values, by_alias=False, by_name=True)[0]
        except ValueError as error:  # pydantic's ValidationError
            errors = error.errors()  # type: ignore[attr-defined]
            for key in dict.fromkeys(each["loc"][0] for each in errors if each["loc"]):
                if key in values:  # (a key missing is said already)
                    found.append((key, self._unfit(key, error)))
            return {}
        return {key: made[key] for key in values}

    def _fields_validator(self) -> Any:
        """The model's `fields_validator`, made once (``None``: none found)."""
        fields = self._fields
        if fields is None:
            fields = self._fields = fields_validator(self.cls) or False
        return fields or None

    def _unfit(self, key: str, error: Any) -> str:
        """What pydantic's ``error`` says of the value of ``key``."""
        said = []
        for each in error.errors():
            where = each["loc"]
            if len(where) > 1 and where[0] == key:  # inside the value: where
                said.append(f"{''.join(f'[{part!r}]' for part in where[1:])}: {each['msg']}")
            elif where[:1] == (key,) or not where:
                said.append(each["msg"])
        return (
            f"shared[{key!r}] should be {describe(self.hints[key])} "
            f"({self.name}.{key}): {'; '.join(said)}"
        )

    def rule_advice(self, key: Any, rule: str, elsewhere: str) -> str:
        """How a conflict on ``key`` is told to give it a rule: on the state
        type, once (if it is one of its keys), or ``elsewhere``."""
        if key not in self.hints:
            return elsewhere
        marker = "add" if rule == "sum" else rule
        inner = describe(self.hints[key])
        return (
            f"once on the state type (`{key}: Annotated[{inner}, braidflow.merge.{marker}]` "
            f"in {self.name}), or at this join: {elsewhere}"
        )


_NO_KEY: Any = object()


def _equal(value: Any, other: Any) -> bool:
    try:
        return bool(value == other)
    except Exception:  # an equality that cannot tell (an array's): taken as changed
        return False


def _constant(value: Any) -> Callable[[], Any]:
    return lambda: value


def _model_default(field: Any) -> Callable[[], Any]:
    return lambda: field.get_default(call_default_factory=True)


def _rule_in(metadata: list[Any], key: str, name: str, owner: str) -> Rule | None:
    rules = [item for item in metadata if isinstance(item, MergeRule)]
    for item in metadata:
        if isinstance(item, types.FunctionType | types.BuiltinFunctionType):
            raise InvalidParameterError(
                f"{owner}: state={name}: key {key!r} has the function "
                f"{getattr(item, '__name__', item)!r} in its Annotated[...]; a merge rule "
                "is braidflow.merge.extend, .add, .update, .last, or "
                "braidflow.merge.rule(function) for a function (value before the fork, "
                "list of the branches' values) -> merged value (a LangGraph reducer such as "
                "operator.add takes (current, update): for a list, use braidflow.merge.extend)"
            )
    if len(rules) > 1:
        raise InvalidParameterError(
            f"{owner}: state={name}: key {key!r} has {len(rules)} merge rules "
            f"({', '.join(map(repr, rules))}); give it one"
        )
    return rules[0].applied if rules else None


# -- the classes of values a durable run may rebuild --------------------------------------

# Each dataclass and pydantic model a state type's keys hold (in their
# annotations, at any depth), by "module.qualname": a durable run's JSON
# checkpoints write such a value tagged with that name, and rebuild it only
# if the name is here (never importing a class a checkpoint names). Weak: a
# class made per request goes with its state type.
VALUE_CLASSES: weakref.WeakValueDictionary[str, type] = weakref.WeakValueDictionary()


def _note_value_classes(annotation: Any) -> None:
    annotation = strip(annotation)[0]
    if isinstance(annotation, type) and (
        dataclasses.is_dataclass(annotation) or _is_model(annotation)
    ):
        name = f"{annotation.__module__}.{annotation.__qualname__}"
        if VALUE_CLASSES.get(name) is annotation:
            return
        VALUE_CLASSES[name] = annotation
        try:
            inner = typing.get_type_hints(annotation, include_extras=True)
        except Exception:  # its annotations name what cannot be found: not followed
            return
        for hint in inner.values():
            _note_value_classes(hint)
        return
    for arg in typing.get_args(annotation):
        _note_value_classes(arg)


# -- reading a type once -----------------------------------------------------------------

# A class's StateTypes (by ``validate``) are kept in the class itself, under
# this name: a StateType holds its class (and its hints may name it), so a
# cache outside it would keep a class made per request alive for good.
_READ = "_bf_state_types"


def state_type(cls: Any, validate: bool, owner: str) -> StateType:
    """The `StateType` of ``cls`` (read once per class and ``validate``).

    Raises:
        InvalidParameterError: For a class that is not a TypedDict, a
            dataclass or a pydantic model, or whose declarations cannot work.
    """
    if not isinstance(validate, bool):
        raise InvalidParameterError(f"{owner}: validate={validate!r} must be True or False")
    if _is_typeddict(cls):
        kind = "typeddict"
    elif isinstance(cls, type) and dataclasses.is_dataclass(cls):
        kind = "dataclass"
    elif _is_model(cls):
        kind = "model"
    else:
        shown = getattr(cls, "__qualname__", None) or repr(cls)
        raise InvalidParameterError(
            f"{owner}: state={shown} must be the class of the shared state: a TypedDict, a "
            "dataclass or a pydantic model (pydantic.BaseModel)"
        )
    known: dict[bool, StateType] | None = cls.__dict__.get(_READ)
    if known is None:  # (type's own setattr: past a metaclass's, as pydantic's)
        known = {}
        type.__setattr__(cls, _READ, known)
    read = known.get(validate)
    if read is None:
        read = known[validate] = StateType(cls, kind, owner, validate)
    return read


def declared_state(cls: type) -> Any:
    """The state type a node class's generic bases give, if any: ``State``
    for ``class Ask(Node[str, str, State])``."""
    for klass in cls.__mro__:
        for base in klass.__dict__.get("__orig_bases__", ()):
            origin = typing.get_origin(base)
            parameters = getattr(origin, "__parameters__", ())
            args = typing.get_args(base)
            if not parameters or len(args) != len(parameters):
                continue
            for parameter, arg in zip(parameters, args, strict=True):
                if parameter is not StateT:
                    continue
                if arg is Any or isinstance(arg, typing.TypeVar):
                    break
                return arg
    return None
