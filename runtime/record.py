"""Record: the engine's plain data classes, cheap to define.

@dataclass generates and compiles an __init__, __repr__ and __eq__ for every class (and
imports inspect): ~0.5 ms a class, ~18 ms for the engine's ~40 at import time, paid by every
CLI command. A Record subclass instead lists its fields as annotations, with defaults as class
attributes (field() for a mutable default), and shares one generic constructor, repr and eq:

    class Mount(Record, frozen=True):
        target: str
        flags: int = 0
        options: list = field(list)

Semantics kept from dataclasses as the engine uses them: positional or keyword construction in
field order (inherited fields first), a missing argument or an unknown keyword is a TypeError,
== compares the class and the fields (not those with compare=False), repr shows the fields
(not those with repr=False), frozen=True refuses assignment and makes instances hashable, and
replace(obj, **changes) makes a modified copy. Annotations are never evaluated.
"""

_MISSING = object()


class field:  # noqa: N801 - reads like dataclasses.field at the use sites
    """A field's default when it is not a plain immutable value: default_factory() per
    instance; compare/repr=False leave it out of == / repr."""
    __slots__ = ("factory", "default", "compare", "repr")

    def __init__(self, default_factory=None, *, default=_MISSING, compare: bool = True,
                 repr: bool = True):
        self.factory, self.default = default_factory, default
        self.compare, self.repr = compare, repr


class Record:
    _fields: tuple = ()  # names, in constructor order
    _defaults: dict = {}  # name -> value
    _factories: dict = {}  # name -> callable
    _compare: tuple = ()
    _repr: tuple = ()
    _frozen = False

    def __init_subclass__(cls, frozen: bool = False, **kw):
        super().__init_subclass__(**kw)
        fields = list(cls._fields)
        defaults, factories = dict(cls._defaults), dict(cls._factories)
        no_compare = {n for n in fields if n not in cls._compare}
        no_repr = {n for n in fields if n not in cls._repr}
        for name in cls.__dict__.get("__annotations__", {}):
            if name not in fields:
                fields.append(name)
            value = cls.__dict__.get(name, _MISSING)
            if isinstance(value, field):
                if not value.compare:
                    no_compare.add(name)
                if not value.repr:
                    no_repr.add(name)
                if value.factory is not None:
                    factories[name] = value.factory
                    delattr(cls, name)
                    continue
                value = value.default
                if value is _MISSING:
                    delattr(cls, name)
                else:
                    setattr(cls, name, value)
            if value is not _MISSING:
                defaults[name] = value
        cls._fields = tuple(fields)
        cls._defaults, cls._factories = defaults, factories
        cls._compare = tuple(n for n in fields if n not in no_compare)
        cls._repr = tuple(n for n in fields if n not in no_repr)
        cls._frozen = frozen or cls._frozen
        if cls._frozen:
            cls.__hash__ = Record._hash
        else:
            cls.__hash__ = None  # mutable and compared by value, as a dataclass

    def __init__(self, *args, **kwargs):
        names = self._fields
        if len(args) > len(names):
            raise TypeError(f"{type(self).__name__}() takes {len(names)} arguments, "
                            f"got {len(args)}")
        put = object.__setattr__
        for name, value in zip(names, args):
            put(self, name, value)
        for name in names[len(args):]:
            if name in kwargs:
                put(self, name, kwargs.pop(name))
            elif name in self._factories:
                put(self, name, self._factories[name]())
            elif name in self._defaults:
                put(self, name, self._defaults[name])
            else:
                raise TypeError(f"{type(self).__name__}() missing argument {name!r}")
        if kwargs:
            name = next(iter(kwargs))
            if name in names[:len(args)]:
                raise TypeError(f"{type(self).__name__}() got multiple values for {name!r}")
            raise TypeError(f"{type(self).__name__}() got an unexpected keyword {name!r}")

    def __setattr__(self, name, value):
        if self._frozen:
            raise AttributeError(f"cannot assign to field {name!r} of a frozen "
                                 f"{type(self).__name__}")
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        if self._frozen:
            raise AttributeError(f"cannot delete field {name!r} of a frozen "
                                 f"{type(self).__name__}")
        object.__delattr__(self, name)

    def _key(self) -> tuple:
        return tuple(getattr(self, n) for n in self._compare)

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()

    def _hash(self) -> int:
        return hash((self.__class__, self._key()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._repr)
        return f"{type(self).__qualname__}({inner})"


def replace(obj: Record, **changes) -> Record:
    """A copy of obj with some fields changed (dataclasses.replace)."""
    for name in changes:
        if name not in obj._fields:
            raise TypeError(f"{type(obj).__name__} has no field {name!r}")
    return obj.__class__(**{n: changes.get(n, getattr(obj, n)) for n in obj._fields})
