"""The compiled kernels as machine code of their own: built once from Numba's output, kept on disk,
loaded by later processes without importing Numba (``pip install 'rnnlab[fast]'``).

Importing Numba and initialising its CPU target costs a fresh process 0.5-0.9 s even when every
kernel comes from Numba's cache (docs/performance.md, "Start-up"); loading a relocatable object
file with LLVM's MCJIT (llvmlite, which Numba itself uses) takes milliseconds.  So:

* :func:`build` takes each entry point's LLVM IR as Numba compiled it (the native function of
  :mod:`rnnlab.fast.jit`, with everything it calls linked in), adds a C-callable wrapper
  ``int64_t rnnlab_kernel_<name>(int64_t, ...)`` that returns the entry's result, or -1 when the
  native function reports an error, keeps only those wrappers visible (everything else becomes
  internal and what nothing calls is removed: Numba's Python wrappers, which call into Numba's
  own runtime, are gone) and emits one object file for this CPU;
* :func:`store` writes it to the cache directory of its key, atomically (the object under a name
  made of its SHA-256, then ``manifest.json`` naming it), while holding the directory's lock, so
  two processes never write one cache at once;
* :func:`load` reads the manifest, checks the object's SHA-256, checks that every symbol the
  object leaves undefined (read from its ELF symbol table: the C functions of
  :data:`rnnlab.fast.compiled.SYMBOLS`, libm's) resolves in this process, then loads it into an
  MCJIT engine and returns a callable per entry (through cffi, which releases the GIL during the
  call, as the kernels need).  Anything wrong is :class:`CacheDamaged`: the caller then deletes
  this key's files and builds again.

The arguments are ``int64`` values (addresses, sizes, counts) or ``int64_t *`` (a job array, passed
as a buffer) and the results ``int64``, so the calls need no knowledge of Numba's array
layout.  Object files are ELF (Linux); elsewhere :func:`load` refuses
and the kernels are built in each process (:func:`cacheable`).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ARGS", "FORMAT", "CacheDamaged", "Entry", "NativeKernels", "build", "cacheable", "host",
           "int64_buffer", "load", "locked", "purge", "read", "store", "undefined_symbols",
           "wrapper_name"]

FORMAT = 1
"""The manifest's format; a manifest of another format is not read."""

MANIFEST = "manifest.json"
_LOCK = ".lock"
_engines: list[Any] = []        # every engine loaded in this process: its code lives as long


class CacheDamaged(RuntimeError):
    """A cached object that cannot be used as it is (unreadable, altered, for another key)."""


@dataclass(frozen=True)
class Entry:
    """One entry point as Numba compiled it: its LLVM IR (the whole library, callees linked in),
    the symbol of its native function (whose arguments are all ``int64``) and the C signature
    of its wrapper, one letter per argument (:data:`ARGS`): ``"i"`` an ``int64_t``, ``"p"`` an
    ``int64_t *`` (an address the caller passes as a buffer, e.g. a job array, which is
    cheaper from Python than its address as an int)."""

    ir: str
    symbol: str
    args: str

    def __post_init__(self) -> None:
        if set(self.args) - set(ARGS):
            raise ValueError(f"an entry's arguments are letters of {sorted(ARGS)}; got "
                             f"{self.args!r}")


ARGS = {"i": "i64", "p": "ptr"}
"""The wrapper's argument kinds: their LLVM types."""


def wrapper_name(name: str) -> str:
    """The exported C symbol of entry ``name``."""
    return f"rnnlab_kernel_{name}"


def _llvm() -> Any:
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    return llvm


def host() -> dict[str, str]:
    """What the machine code is built for: LLVM's process triple, host CPU name and features
    (part of the cache key: a build for another CPU is never loaded)."""
    llvm = _llvm()
    return {"triple": llvm.get_process_triple(), "cpu": llvm.get_host_cpu_name(),
            "features": llvm.get_host_cpu_features().flatten()}


def _target_machine(llvm: Any) -> Any:
    # as Numba's JIT codegen makes it (numba.core.codegen.JITCPUCodegen): this CPU, static
    # relocations on x86, the JIT code model
    h = host()
    target = llvm.Target.from_triple(h["triple"])
    reloc = "static" if target.name.startswith("x86") else (
        "pic" if target.name.startswith("ppc") else "default")
    return target.create_target_machine(cpu=h["cpu"], features=h["features"], opt=3,
                                        reloc=reloc, codemodel="jitdefault", jit=True)


def _wrapper_ir(name: str, e: Entry) -> str:
    # Numba's native calling convention: i32 status = f(ptr result, ptr exception info, args);
    # status 0 is success (numba.core.callconv.CPUCallConv)
    params = ", ".join(f"{ARGS[k]} %a{i}" for i, k in enumerate(e.args))
    args = "".join(f", i64 %v{i}" for i in range(len(e.args)))
    types = "".join(", i64" for _ in e.args)
    # the native function takes every argument as an int64
    casts = "".join(f"  %v{i} = ptrtoint ptr %a{i} to i64\n" if k == "p" else
                    f"  %v{i} = add i64 %a{i}, 0\n" for i, k in enumerate(e.args))
    return (f'declare i32 @"{e.symbol}"(ptr, ptr{types})\n\n'
            f'define i64 @"{wrapper_name(name)}"({params}) {{\n'
            f"entry:\n{casts}"
            f"  %res = alloca i64, align 8\n"
            f"  %exc = alloca ptr, align 8\n"
            f"  store i64 0, ptr %res, align 8\n"
            f"  store ptr null, ptr %exc, align 8\n"
            f'  %st = call i32 @"{e.symbol}"(ptr %res, ptr %exc{args})\n'
            f"  %ok = icmp eq i32 %st, 0\n"
            f"  %v = load i64, ptr %res, align 8\n"
            f"  %out = select i1 %ok, i64 %v, i64 -1\n"
            f"  ret i64 %out\n"
            f"}}\n")


# Numba's reference counting: a decref that reaches zero calls the runtime's destructor.  The
# kernels' arrays are views of memory Numba never allocated (``carray``: no meminfo, so the count
# is never touched), so the call is unreachable; it is defined as a trap, not left to resolve
# into a runtime this process does not load.
_UNREACHABLE = ("NRT_MemInfo_call_dtor",)
# symbols an object must not leave undefined: Numba's runtime and Python's C API, which a
# process that loads the object without Numba may not have (rnnlab's own and the C library's
# are what it may leave)
_RUNTIME_PREFIXES = ("NRT_", "numba_", "Py", "_Py")


def _stub_ir(symbol: str) -> str:
    return (f'define void @"{symbol}"(ptr %m) {{\nentry:\n  call void @llvm.trap()\n'
            f"  unreachable\n}}\n\ndeclare void @llvm.trap()\n")


def build(entries: Mapping[str, Entry]) -> bytes:
    """One object file holding a C wrapper per entry (see the module's description);
    RuntimeError when the code would need Numba's runtime or Python's."""
    llvm = _llvm()
    tm = _target_machine(llvm)
    keep = {wrapper_name(n) for n in entries}
    main: Any = None
    for name, e in entries.items():
        mod = llvm.parse_assembly(e.ir)
        extra = [_wrapper_ir(name, e)]
        extra += [_stub_ir(f.name) for f in mod.functions
                  if f.is_declaration and f.name in _UNREACHABLE]
        for text in extra:
            wrap = llvm.parse_assembly(text)
            wrap.triple, wrap.data_layout = mod.triple, mod.data_layout
            mod.link_in(wrap)
        for g in [*mod.functions, *mod.global_variables]:
            if not g.is_declaration and g.name not in keep:
                g.linkage = "internal"          # renamed by the linker on a clash
        if main is None:
            main = mod
        else:
            main.link_in(mod)
    if main is None:
        raise ValueError("no entries to build")
    pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=0))
    mpm = llvm.create_new_module_pass_manager()
    mpm.add_global_dead_code_eliminate_pass()
    mpm.run(main, pb)
    main.verify()
    missing = keep - {f.name for f in main.functions if not f.is_declaration}
    if missing:
        raise RuntimeError(f"the built module lacks {sorted(missing)}")
    obj = bytes(tm.emit_object(main))
    if cacheable():
        runtime = [u for u in undefined_symbols(obj) if u.startswith(_RUNTIME_PREFIXES)]
        if runtime:
            raise RuntimeError(f"the kernels' object needs Numba's or Python's runtime: {runtime}")
    return obj


def cacheable() -> bool:
    """Whether this platform's object files are ELF, the format :func:`undefined_symbols`
    reads (a cache is kept only then)."""
    return str(_llvm().get_object_format()).upper() == "ELF"


def undefined_symbols(obj: bytes) -> list[str]:
    """The named symbols a 64-bit little-endian ELF object file uses without defining (its
    ``.symtab`` entries with section index 0); CacheDamaged when ``obj`` is not such a file."""
    try:
        if obj[:4] != b"\x7fELF" or obj[4] != 2 or obj[5] != 1:
            raise CacheDamaged("not a 64-bit little-endian ELF object")
        shoff, = struct.unpack_from("<Q", obj, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", obj, 0x3A)
        sections = [struct.unpack_from("<IIQQQQIIQQ", obj, shoff + i * shentsize)
                    for i in range(shnum)]
        names: set[str] = set()
        for s in sections:
            if s[1] != 2:                                       # SHT_SYMTAB
                continue
            strtab = sections[s[6]]                             # sh_link: its string table
            str_off, str_size = strtab[4], strtab[5]
            entsize = s[9] or 24
            for k in range(1, s[5] // entsize):
                st_name, _info, _other, shndx, _v, _size = struct.unpack_from(
                    "<IBBHQQ", obj, s[4] + k * entsize)
                if shndx == 0 and st_name:
                    if st_name >= str_size:
                        raise CacheDamaged("a symbol name lies outside the string table")
                    end = obj.index(b"\0", str_off + st_name)
                    names.add(obj[str_off + st_name:end].decode())
        return sorted(names)
    except (struct.error, IndexError, ValueError, UnicodeDecodeError) as exc:
        raise CacheDamaged(f"unreadable object file: {exc}") from exc


def _resolve(llvm: Any, symbol: str) -> bool:
    """Whether LLVM finds ``symbol`` in this process: among the symbols registered with it
    (rnnlab's, :func:`rnnlab.fast.compiled.link`), else in the process's global C namespace
    (the C library's ``memset``, libm), which is then registered too."""
    if llvm.address_of_symbol(symbol):
        return True
    try:
        fn = getattr(ctypes.CDLL(None), symbol)
    except (OSError, AttributeError):
        return False
    addr = ctypes.cast(fn, ctypes.c_void_p).value
    if not addr:
        return False
    llvm.add_symbol(symbol, addr)
    return True


def _cffi() -> Any:
    """cffi's own C backend (what ``cffi.FFI().cast`` builds on), without cffi's C parser, whose
    import alone took 40-60 ms of a start-up; its calls release the GIL."""
    import _cffi_backend

    return _cffi_backend


def int64_buffer() -> Callable[[Any], Any]:
    """``f(a)``: a C-contiguous int64 array as the ``int64_t *`` argument (``"p"``) of an entry,
    without copying (0.3 us, where ``a.ctypes.data`` takes 1.5-2.5 us)."""
    ffi = _cffi()
    array = ffi.new_array_type(ffi.new_pointer_type(ffi.new_primitive_type("int64_t")), None)
    return functools.partial(ffi.from_buffer, array)


class NativeKernels(dict[str, Callable[..., int]]):
    """The loaded entry points by name: ``kernels[name](*args) -> int64`` (-1: the kernel
    reported an error); ``origin`` says whether they were ``"built"`` here or ``"loaded"`` from
    the cache."""

    origin: str = "built"


def load(obj: bytes, signatures: Mapping[str, str]) -> NativeKernels:
    """Load ``obj`` (from :func:`build`) into an MCJIT engine of this process and return its
    entries; CacheDamaged when a symbol it needs does not resolve here or an entry is missing
    (checked before LLVM resolves anything, which would abort the process instead)."""
    llvm = _llvm()
    if cacheable():
        unresolved = [s for s in undefined_symbols(obj) if not _resolve(llvm, s)]
        if unresolved:
            raise CacheDamaged(f"symbols that do not resolve in this process: {unresolved}")
    ffi = _cffi()
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), _target_machine(llvm))
    engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
    engine.finalize_object()
    i64 = ffi.new_primitive_type("int64_t")
    kinds = {"i": i64, "p": ffi.new_pointer_type(i64)}
    out = NativeKernels()
    for name, sig in signatures.items():
        addr = engine.get_function_address(wrapper_name(name))
        if not addr or set(sig) - set(kinds):
            raise CacheDamaged(f"the object has no entry {wrapper_name(name)}{sig!r}")
        ftype = ffi.new_function_type(tuple(kinds[k] for k in sig), i64, False)
        out[name] = ffi.cast(ftype, addr)
    _engines.append(engine)
    return out


@contextlib.contextmanager
def locked(where: Path) -> Iterator[None]:
    """Hold the cache directory's lock file (an exclusive ``flock``: waits for another process
    that holds it): who builds and writes a cache does it under this, so one process builds
    and the others wait and load.  Not re-entrant."""
    import fcntl

    with open(where / _LOCK, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read(where: Path, key: str) -> tuple[bytes, dict[str, str]] | None:
    """The object and the entries' signatures cached in ``where`` for ``key``: None when
    nothing is cached; CacheDamaged when what is there cannot be used."""
    try:
        raw = (where / MANIFEST).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:              # unreadable (a directory in its place, permissions)
        raise CacheDamaged(f"unreadable manifest in {where}: {exc}") from exc
    try:
        m = json.loads(raw)
        if m.get("format") != FORMAT or m.get("key") != key:
            raise CacheDamaged(f"a manifest of format {m.get('format')} for key {m.get('key')}")
        obj = (where / m["object"]).read_bytes()
        signatures = {str(k): str(v) for k, v in m["entries"].items()}
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise CacheDamaged(f"unreadable manifest or object in {where}: {exc}") from exc
    if hashlib.sha256(obj).hexdigest() != m.get("sha256"):
        raise CacheDamaged(f"{where / m['object']} does not match its manifest's SHA-256")
    return obj, signatures


def store(where: Path, key: str, obj: bytes, signatures: Mapping[str, str],
          about: Mapping[str, Any]) -> Path:
    """Write ``obj`` and its manifest into ``where``, each atomically (call it under
    :func:`locked`); returns the object's path."""
    digest = hashlib.sha256(obj).hexdigest()
    path = where / f"kernels-{digest[:16]}.o"
    manifest = {"format": FORMAT, "key": key, "object": path.name, "sha256": digest,
                "entries": dict(signatures), "about": dict(about)}
    _atomic_write(path, obj)
    _atomic_write(where / MANIFEST, json.dumps(manifest, indent=1).encode())
    return path


def purge(where: Path) -> bool:
    """Delete what :func:`store` wrote in ``where`` (the manifest and ``kernels-*.o``; call it
    under :func:`locked`); False when there was nothing."""
    found = False
    for f in [where / MANIFEST, *where.glob("kernels-*.o")]:
        with contextlib.suppress(OSError):      # gone already, or not ours to remove
            f.unlink()
            found = True
    return found


