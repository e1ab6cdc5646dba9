"""A template loader that reads only files inside its folder, wherever a symbolic link points.

Jinja's :class:`~jinja2.FileSystemLoader` refuses ``..`` in a template name
but follows symbolic links. A link committed with the templates
(``partials/footer.html -> /proc/self/environ``, or to the DKIM key file)
would put the sending machine's secrets into every e-mail, the preview and
the report. :class:`ContainedLoader` resolves each file it reads and refuses
one whose real path is outside the real path of its folder; a link from one
template to another in the same folder still works.
"""

from __future__ import annotations

import os

from jinja2 import FileSystemLoader

from ..errors import TemplateError


class TemplateOutsideFolder(TemplateError):
    """A template file (through a symbolic link) lies outside the templates folder."""


class ContainedLoader(FileSystemLoader):
    """:class:`~jinja2.FileSystemLoader` over one folder that never reads a file outside it."""

    def __init__(self, folder: str | os.PathLike):
        super().__init__(str(folder))
        self.folder = str(folder)
        self.real_folder = os.path.realpath(folder)

    def get_source(self, environment, template: str):
        source, filename, uptodate = super().get_source(environment, template)
        real = os.path.realpath(filename)
        try:
            inside = os.path.commonpath([real, self.real_folder]) == self.real_folder
        except ValueError:  # another drive (Windows)
            inside = False
        if not inside:
            raise TemplateOutsideFolder(
                f"{filename}: refused, it leads outside {self.folder} (to {real}); "
                "a template must be a file inside the templates folder, not a link out of it", filename)
        return source, filename, uptodate
