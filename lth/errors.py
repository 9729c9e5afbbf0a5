"""User-facing errors: one line naming the bad value and what is allowed (the CLI exits 2)."""


class UserError(ValueError):
    """A problem with the user's input (config, arguments, files), reported without a traceback."""


class NotPrepared(UserError):
    """A dataset whose files are not on this machine (a sweep that trains nothing may use stand-ins)."""


class Corrupt(UserError):
    """A checkpoint or record of a run that cannot be read back as written (torn, truncated, bit-flipped
    or of another config). `redo`: the directory that, moved to RUN/quarantine/, is recomputed from what
    it depends on by a rerun with --repair (None when this command cannot recompute it)."""

    def __init__(self, path: str, reason: str, redo: str | None = None):
        self.path, self.reason, self.redo = path, reason, redo
        todo = ("rerun with --repair to move it to the run's quarantine/ and recompute it" if redo
                else "recompute it with the command that made it (with --repair)")
        super().__init__(f"{path} is {reason}; {todo}")


def check_choice(what: str, value, allowed) -> None:
    """Raise UserError unless `value` is one of `allowed`."""
    allowed = sorted(allowed)
    if value not in allowed:
        raise UserError(f"unknown {what} {value!r}; allowed: {', '.join(map(str, allowed))}")


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (at most `limit` characters), or its type's name."""
    text = str(e).strip()
    return text.splitlines()[0][:limit] if text else type(e).__name__


DISK_FULL_EXIT = 4


def disk_full(e: BaseException):
    """The OSError(ENOSPC) behind `e` (orbax and tensorstore wrap it), or None."""
    import errno

    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno == errno.ENOSPC or "No space left on device" in str(e):
            return e
        e = e.__cause__ or e.__context__
    return None
