"""The workspace: safe paths for ELN entries and notebooks made from templates.

Owns where an entry's notebook and data live (under ``workspace_dir``; every
path from a token goes through :mod:`.paths`), and the creation of notebooks
from templates through the server's ContentsManager.

It must never write outside the workspace, never overwrite an existing file,
and never run code from a template: templates are rendered in a sandboxed
Jinja2 environment whose every placeholder is escaped for its cell type.
"""

from __future__ import annotations

import asyncio
import functools
import json
import platform
import re
import sys
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import nbformat
from jinja2 import TemplateError, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jupyter_core.utils import ensure_async

from .claims import OpenRequest
from .errors import LimsError
from .paths import DATA_DIR, contained, sanitize_component

BUILTIN_TEMPLATES = Path(__file__).parent / "notebook_templates"
MAX_PATH_DEPTH = 16
#: How many ``<stem>-N.ipynb`` names ``notebook.new`` tries before giving up.
MAX_NEW_COPIES = 1000

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|$~<>&])")


# ---------------------------------------------------------------------------
# the notebook's path


def relative_notebook_path(request: OpenRequest) -> PurePosixPath:
    """The notebook path of ``request`` relative to the workspace, sanitised.

    ``notebook.path`` is split on ``/``; absolute paths, ``..``, backslashes and
    NUL are refused rather than rewritten (they signal a confused or hostile
    LIMS); every other component is sanitised. Without ``notebook.path`` the
    default is ``<entity.type>-<entity.id>/<entity.id>.ipynb``.
    """
    raw = request.notebook.path
    if raw is None:
        entity = request.entity
        folder = sanitize_component(f"{entity.type}-{entity.id}")
        return PurePosixPath(folder, sanitize_component(entity.id) + ".ipynb")
    if raw.startswith(("/", "~")) or "\\" in raw or "\x00" in raw or re.match(r"^[A-Za-z]:", raw):
        raise LimsError("path_not_allowed", "notebook.path must be relative to the workspace.")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise LimsError("path_not_allowed", "notebook.path must not contain '..'.")
    if not parts or len(parts) > MAX_PATH_DEPTH:
        raise LimsError("path_not_allowed", "notebook.path is empty or too deep.")
    clean = [sanitize_component(p) for p in parts]
    if not clean[-1].endswith(".ipynb"):
        clean[-1] = clean[-1] + ".ipynb"
    return PurePosixPath(*clean)


# ---------------------------------------------------------------------------
# templates


class SafeText(str):
    """Text a template filter already escaped; the finaliser passes it through."""


def markdown_escape(value: Any) -> str:
    text = "" if value is None else str(value)
    text = " ".join(text.splitlines())
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def url_escape(value: Any) -> SafeText:
    """A URL safe inside Markdown link parentheses: only http(s), special chars encoded."""
    text = "" if value is None or isinstance(value, Undefined) else str(value)
    if not re.match(r"^https?://", text, re.IGNORECASE):
        return SafeText("")
    return SafeText(re.sub(r"[\s()<>\[\]\"'`\\]", lambda m: f"%{ord(m.group()):02X}", text))


def _plain(value: Any) -> Any:
    return None if isinstance(value, Undefined) else value


def _code_literal(value: Any) -> str:
    # repr() of JSON-like values is a valid Python literal, and escapes quotes
    # and newlines, so a title like "x'\nimport os" cannot become code
    if isinstance(value, SafeText):
        return value
    return repr(_plain(value))


def _markdown_text(value: Any) -> str:
    if isinstance(value, SafeText):
        return value
    return markdown_escape(_plain(value))


def _make_environment(finalize: Any) -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        finalize=finalize, undefined=Undefined, autoescape=False, keep_trailing_newline=True
    )
    env.filters["url"] = url_escape
    env.filters["md"] = lambda v: SafeText(markdown_escape(_plain(v)))
    env.filters["py"] = lambda v: SafeText(repr(_plain(v)))
    return env


CODE_ENV = _make_environment(_code_literal)
MARKDOWN_ENV = _make_environment(_markdown_text)


@functools.lru_cache(maxsize=512)
def _compiled(is_code: bool, source: str) -> Any:
    # compiling a cell template costs milliseconds; the same few templates
    # serve every open
    return (CODE_ENV if is_code else MARKDOWN_ENV).from_string(source)


#: The kernelspec of a template that names none: the Python kernel every Jupyter has.
DEFAULT_KERNELSPEC = {
    "name": "python3",
    "display_name": "Python 3 (ipykernel)",
    "language": "python",
}


def python_language_info() -> dict[str, Any]:
    """What ipykernel reports as ``language_info`` when it runs this interpreter."""
    return {
        "name": "python",
        "version": platform.python_version(),
        "mimetype": "text/x-python",
        "codemirror_mode": {"name": "ipython", "version": sys.version_info[0]},
        "pygments_lexer": f"ipython{sys.version_info[0]}",
        "nbconvert_exporter": "python",
        "file_extension": ".py",
    }


def complete_kernel_metadata(metadata: dict[str, Any]) -> None:
    """Fill the kernel and language metadata the way the kernel will report them.

    JupyterLab writes what the kernel reports into the notebook as soon as it
    starts; anything missing or different in the file then shows as an unsaved
    change on a notebook nobody touched. A Python template gets the full
    ``language_info`` of this server's interpreter (the one the default
    ``python3`` kernel runs); a field the template sets is kept.
    """
    kernelspec = metadata.setdefault("kernelspec", dict(DEFAULT_KERNELSPEC))
    info = metadata.setdefault("language_info", {"name": kernelspec.get("language", "python")})
    if info.get("name") == "python" and kernelspec.get("name") == "python3":
        for key, value in python_language_info().items():
            info.setdefault(key, value)


def render_notebook(template: dict[str, Any], context: dict[str, Any]) -> Any:
    """Render each cell of a template notebook with ``context``; returns a NotebookNode."""
    nb = nbformat.from_dict(template)
    complete_kernel_metadata(nb.metadata)
    for cell in nb.cells:
        cell.setdefault("id", uuid.uuid4().hex[:8])
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(source)
        try:
            cell["source"] = _compiled(cell.get("cell_type") == "code", source).render(**context)
        except TemplateError as e:
            raise RuntimeError(f"notebook template cannot be rendered: {e}") from None
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return nb


@functools.lru_cache(maxsize=64)
def _load_template(path: Path, mtime_ns: int) -> dict[str, Any]:
    # keyed by mtime: an operator's edit of a template takes effect at once
    return json.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------
# the workspace


@dataclass(frozen=True)
class NotebookPlan:
    """Where an open will put its notebook, before anything is written."""

    api_path: str  # relative to the server root, "/"-separated (for the ContentsManager)
    os_path: Path  # resolved and contained
    folder_api_path: str
    folder_os_path: Path

    @property
    def data_dir(self) -> Path:
        return self.folder_os_path / DATA_DIR

    @property
    def data_api_dir(self) -> str:
        return f"{self.folder_api_path}/{DATA_DIR}"


class Workspace:
    """Notebooks of ELN entries under ``<root_dir>/<workspace_dir>``."""

    def __init__(
        self,
        *,
        root_dir: Path,
        workspace_dir: str,
        templates_dir: str | None,
        contents_manager: Any,
    ) -> None:
        self.root_dir = Path(root_dir).resolve()
        rel = PurePosixPath(workspace_dir)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise ValueError("workspace_dir must be a relative path inside the server root")
        self.workspace_api_dir = rel.as_posix()
        self.workspace_root = (self.root_dir / rel).resolve()
        self.templates_dir = Path(templates_dir).resolve() if templates_dir else None
        self.contents_manager = contents_manager
        # one lock per notebook path while an open of it is under way
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def plan(self, request: OpenRequest) -> NotebookPlan:
        """Resolve and check where ``request``'s notebook goes; writes nothing."""
        rel = relative_notebook_path(request)
        os_path = contained(self.workspace_root / rel, self.workspace_root)
        folder = contained(os_path.parent, self.workspace_root)
        api_path = f"{self.workspace_api_dir}/{rel.as_posix()}"
        return NotebookPlan(
            api_path=api_path,
            os_path=os_path,
            folder_api_path=api_path.rsplit("/", 1)[0],
            folder_os_path=folder,
        )

    def template(self, name: str) -> dict[str, Any]:
        """Load template ``name`` from ``templates_dir``, else the built-in one."""
        for folder in (self.templates_dir, BUILTIN_TEMPLATES):
            if folder is None:
                continue
            # both sides resolved: the package itself may sit behind a symlink
            # (a symlinked checkout, some conda or nix layouts)
            folder = folder.resolve()
            candidate = (folder / f"{name}.ipynb").resolve()
            if candidate.is_relative_to(folder) and candidate.is_file():
                return _load_template(candidate, candidate.stat().st_mtime_ns)
        raise LimsError("bad_claims", f"There is no notebook template named {name!r}.")

    async def exists(self, api_path: str) -> bool:
        return bool(await ensure_async(self.contents_manager.file_exists(api_path)))

    async def would_create(self, plan: NotebookPlan, request: OpenRequest) -> bool:
        """Whether a real open would create a notebook (for dry runs)."""
        return request.notebook.new or not await self.exists(plan.api_path)

    async def create(
        self, plan: NotebookPlan, request: OpenRequest, context: dict[str, Any]
    ) -> tuple[str, bool]:
        """Create the notebook (or find the existing one). Returns ``(api_path, created)``.

        One lock per notebook path makes concurrent opens of one entry create
        exactly one notebook; an existing file is never written to.
        """
        template = self.template(request.notebook.template)
        lock = self._locks.get(plan.api_path)
        if lock is None:
            lock = self._locks[plan.api_path] = asyncio.Lock()
        async with lock:
            api_path = await self._free_path(plan, request.notebook.new)
            if api_path is None:
                return plan.api_path, False
            await self._ensure_directories(plan.folder_api_path)
            nb = render_notebook(template, context)
            nb.metadata["lims"] = context["provenance"]
            model = {"type": "notebook", "format": "json", "content": nb}
            await ensure_async(self.contents_manager.save(model, api_path))
            return api_path, True

    async def _free_path(self, plan: NotebookPlan, new: bool) -> str | None:
        """The path to create, or None when the existing notebook is to be reused."""
        if not await self.exists(plan.api_path):
            return plan.api_path
        if not new:
            return None
        stem = plan.api_path[: -len(".ipynb")]
        for n in range(1, MAX_NEW_COPIES + 1):
            candidate = f"{stem}-{n}.ipynb"
            if not await self.exists(candidate):
                # the numbered name must stay inside the workspace too
                contained(self.root_dir / candidate, self.workspace_root)
                return candidate
        raise LimsError("path_not_allowed", "Too many copies of this notebook already exist.")

    async def _ensure_directories(self, folder_api_path: str) -> None:
        cm = self.contents_manager
        parts = folder_api_path.split("/")
        for depth in range(1, len(parts) + 1):
            sub = "/".join(parts[:depth])
            contained(self.root_dir / sub, self.root_dir)
            if not await ensure_async(cm.dir_exists(sub)):
                if await ensure_async(cm.file_exists(sub)):
                    raise LimsError("path_not_allowed", f"{sub!r} is a file, not a folder.")
                await ensure_async(cm.save({"type": "directory"}, sub))
