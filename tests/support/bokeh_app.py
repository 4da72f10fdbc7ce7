"""A tiny Bokeh server app for the dashboard browser test (tests/ui/test_dashboard.py),
run by ``bokeh serve`` as jupyter-server-proxy launches it.

A Button and a Div: the click goes browser → websocket → this Python callback in
the Bokeh server → the Div's new text back over the websocket. Nothing in the
browser computes the text, so a changed Div proves the websocket round trip.
"""

from __future__ import annotations

from bokeh.io import curdoc
from bokeh.layouts import column
from bokeh.models import Button, Div

button = Button(label="Count", name="count")
result = Div(text="no clicks yet", name="result")
clicks = 0


def on_click() -> None:
    global clicks
    clicks += 1
    result.text = f"the server counted {clicks} click{'s' if clicks > 1 else ''}"


button.on_click(on_click)
document = curdoc()
document.title = "LIMS dashboard"
document.add_root(column(button, result))
