"""What the launch and error pages tell a scientist when a link cannot be opened.

Owns the wording: for each stable reason of ``errors.py``, a heading and a line
of advice in a scientist's words, and which way out the page offers (back to
the ELN entry, or JupyterLab's home). The technical message and the reason stay
on the page, small, for whoever helps. Must not hold HTTP or decide anything
about a token: the pages pass a reason, this module answers with words.
"""

from __future__ import annotations

from typing import TypedDict


class Wording(TypedDict):
    heading: str
    advice: str
    #: ``entry``: the way out is back to the ELN entry (when a verified token named
    #: it); ``home``: JupyterLab's home (the token said nothing we may trust)
    way_out: str


_AGAIN = 'Go back to the entry in the ELN and click "Open in Jupyter" again.'

WORDS: dict[str, Wording] = {
    "token_expired": {
        "heading": "This link has expired",
        "advice": "Links from the ELN work for a few minutes only. " + _AGAIN,
        "way_out": "entry",
    },
    "token_replayed": {
        "heading": "This link has already been used",
        "advice": "Each link from the ELN opens a notebook once. " + _AGAIN,
        "way_out": "entry",
    },
    "wrong_user": {
        "heading": "This link was made for someone else",
        "advice": "You are signed in to Jupyter as another person than the one the ELN made "
        "this link for. Sign in as yourself, or open the entry in the ELN under your own name.",
        "way_out": "entry",
    },
    "token_missing": {
        "heading": "This link is incomplete",
        "advice": "The link carries no ELN token; it may have been cut when it was copied. "
        'Open the entry in the ELN and use its "Open in Jupyter" button.',
        "way_out": "home",
    },
    "token_invalid": {
        "heading": "This Jupyter cannot check this link",
        "advice": "The link may have been copied only in part, or made for another Jupyter. "
        'Open the entry in the ELN and use its "Open in Jupyter" button, '
        "or continue to your JupyterLab.",
        "way_out": "home",
    },
    "wrong_audience": {
        "heading": "This link is meant for another service",
        "advice": "The ELN made this link for something other than this Jupyter. "
        "Ask the ELN's administrators which Jupyter it should open.",
        "way_out": "home",
    },
    "unknown_issuer": {
        "heading": "This link comes from an ELN this Jupyter does not know",
        "advice": "This Jupyter accepts links from its own ELN only. "
        "Ask the ELN's administrators which Jupyter it should open.",
        "way_out": "home",
    },
    "bad_claims": {
        "heading": "The ELN sent this link with something missing",
        "advice": "The entry's details in the link are incomplete. "
        "Tell the ELN's administrators; the code below says what went wrong.",
        "way_out": "entry",
    },
    "unknown_mount": {
        "heading": "The entry's data is not available on this Jupyter",
        "advice": "The data store the entry names is not connected to your Jupyter server. "
        "Tell the ELN's administrators, or ask for a server with that store.",
        "way_out": "entry",
    },
    "data_missing": {
        "heading": "The entry's data could not be found",
        "advice": "A file or folder the entry names does not exist in the data store. "
        "Check the entry in the ELN.",
        "way_out": "entry",
    },
    "path_not_allowed": {
        "heading": "The entry asks for a place this Jupyter does not allow",
        "advice": "Tell the ELN's administrators; the code below says what went wrong.",
        "way_out": "entry",
    },
    "url_not_allowed": {
        "heading": "The entry's data comes from a place this Jupyter does not allow",
        "advice": "Tell the ELN's administrators; the code below says what went wrong.",
        "way_out": "entry",
    },
}

_DEFAULT: Wording = {
    "heading": "This entry could not be opened",
    "advice": _AGAIN + " If it happens again, tell the ELN's administrators the code below.",
    "way_out": "entry",
}


def explain(reason: str | None) -> Wording:
    """The wording for ``reason`` (a stable reason of ``errors.py``), or a general one."""
    return WORDS.get(reason or "", _DEFAULT)
