"""Key map of the annotator: the default shortcuts shipped in `shortcuts.yaml`, overridden by the
user's config file (`~/.config/vca-toolkit/annotator.yaml` or `--config PATH`). Qt-free: key
sequences stay strings here and are parsed by the window."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

USER_CONFIG = Path("~/.config/vca-toolkit/annotator.yaml")

# Human-readable description of every action, in the order the help dialog lists them.
ACTIONS: dict[str, str] = {
    "label_moving": "Label the selected track moving",
    "label_static": "Label the selected track static",
    "label_ignore": "Label the selected track ignore",
    "clear_label": "Remove the label of the selected track",
    "accept_proposal": "Accept the proposal of the selected track",
    "mark_range": "Mark the current frame as the start of a frame range (again: clear the mark)",
    "range_moving": "Label the selected track moving from the mark to the current frame",
    "range_static": "Label the selected track static from the mark to the current frame",
    "range_ignore": "Label the selected track ignore from the mark to the current frame",
    "next_frame": "Next frame",
    "previous_frame": "Previous frame",
    "jump_forward": "Jump 10 frames forward",
    "jump_back": "Jump 10 frames back",
    "first_frame": "First frame",
    "last_frame": "Last frame",
    "next_unlabelled": "Select the next unlabelled track",
    "next_track": "Select the next track in the list",
    "previous_track": "Select the previous track in the list",
    "play_pause": "Play / pause",
    "undo": "Undo",
    "redo": "Redo",
    "fit_to_window": "Fit the frame to the window",
    "zoom_in": "Zoom in",
    "zoom_out": "Zoom out",
    "help": "Show this help",
    "open_folder": "Open a sequence folder",
    "run_proposals": "Run motion proposals on this sequence",
    "quit": "Quit",
}


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the entry."""


def default_shortcuts() -> dict[str, list[str]]:
    """The key map shipped with the package."""
    text = resources.files("annotator").joinpath("shortcuts.yaml").read_text(encoding="utf-8")
    return _parse_shortcuts(yaml.safe_load(text), "annotator/shortcuts.yaml")


def load_shortcuts(path: str | Path | None = None) -> dict[str, list[str]]:
    """Defaults overridden by the `shortcuts:` mapping of `path`, or of the user config file when
    `path` is None and that file exists. An explicit `path` that does not exist is an error."""
    shortcuts = default_shortcuts()
    if path is None:
        path = USER_CONFIG.expanduser()
        if not path.exists():
            return shortcuts
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if data is None:
        return shortcuts
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with a `shortcuts:` key, got {type(data).__name__}")
    unknown_keys = set(data) - {"shortcuts"}
    if unknown_keys:
        raise ConfigError(f"{path}: unknown top-level keys {sorted(unknown_keys)}; expected `shortcuts`")
    shortcuts.update(_parse_shortcuts(data.get("shortcuts") or {}, str(path)))
    _check_unique(shortcuts, path)
    return shortcuts


def _check_unique(shortcuts: dict[str, list[str]], source: Path) -> None:
    """One key bound to two actions would make Qt ignore both (an ambiguous shortcut)."""
    owner: dict[str, str] = {}
    for action, keys in shortcuts.items():
        for key in keys:
            norm = key.replace(" ", "").lower()
            if norm in owner and owner[norm] != action:
                raise ConfigError(f"{source}: key {key!r} is bound to both {owner[norm]} and {action}; "
                                  f"rebind one of them")
            owner[norm] = action


def _parse_shortcuts(data: object, source: str) -> dict[str, list[str]]:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: `shortcuts` must map action names to key lists")
    parsed: dict[str, list[str]] = {}
    for action, keys in data.items():
        if action not in ACTIONS:
            raise ConfigError(f"{source}: unknown action {action!r}; known actions: {', '.join(ACTIONS)}")
        if isinstance(keys, str):
            keys = [keys]
        if not isinstance(keys, list) or not all(isinstance(k, str) and k.strip() for k in keys):
            raise ConfigError(f"{source}: {action} must be a key sequence or a list of them, got {keys!r}")
        parsed[action] = [k.strip() for k in keys]
    return parsed
