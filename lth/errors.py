"""User-facing errors: one line naming the bad value and what is allowed (the CLI exits 2)."""


class UserError(ValueError):
    """A problem with the user's input (config, arguments, files), reported without a traceback."""


def check_choice(what: str, value, allowed) -> None:
    """Raise UserError unless `value` is one of `allowed`."""
    allowed = sorted(allowed)
    if value not in allowed:
        raise UserError(f"unknown {what} {value!r}; allowed: {', '.join(map(str, allowed))}")
