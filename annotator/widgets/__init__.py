"""Widgets of the annotator window: they draw what the session holds and forward input as signals."""

from annotator.widgets.frame_view import FrameView
from annotator.widgets.help_dialog import HelpDialog
from annotator.widgets.timeline import Timeline
from annotator.widgets.track_list import TrackList

__all__ = ["FrameView", "HelpDialog", "Timeline", "TrackList"]
