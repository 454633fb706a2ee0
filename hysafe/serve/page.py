"""The search page of ``hysafe serve``: plain HTML, CSS and JavaScript files under ``static/``, no
build step. With ``?q=...`` in the URL it runs that query on load (what the browser test does).
"""

from importlib import resources

#: the files the page is made of: name -> media type (served under ``/static/``)
STATIC_FILES = {"page.css": "text/css", "search.js": "text/javascript"}


def static_text(name: str) -> str:
    """The text of one of the page's files (``index.html`` or one of :data:`STATIC_FILES`)."""
    return resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")
