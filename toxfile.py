"""tox's inline plugin for this project (tox loads ``toxfile.py`` beside ``tox.ini``).

It adds the runner ``shared-venv``: the runner tox would use anyway (tox-uv's when tox-uv is
installed, else virtualenv's), except that the environment's name is left out of the state tox
keeps in ``<env_dir>/.tox-info.json``. tox 4 records that name and recreates a virtualenv that
another environment's name wrote, so two environments with one ``env_dir`` would rebuild it
for each other on every run. With this runner, ``torch`` and ``check-torch`` (same ``env_dir``,
deps and ``set_env``: tox.ini defines each pair in one section) use one virtualenv; tox still
recreates or updates it when what is compared besides the name changes (the interpreter, the
deps, the installer's environment variables).
"""
from contextlib import contextmanager

from tox.plugin import impl
from tox.tox_env.api import ToxEnv
from tox.tox_env.info import Info

RUNNER = "shared-venv"


class _InfoWithoutName(Info):
    @contextmanager
    def compare(self, value, section, sub_section=None):
        if section == ToxEnv.__name__ and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k != "name"}
        with super().compare(value, section, sub_section) as result:
            yield result


@impl(trylast=True)   # after tox-uv has made its runner the default
def tox_register_tox_env(register):
    base = register.runner(register.default_env_runner)

    class SharedVenvRunner(base):
        @staticmethod
        def id():
            return RUNNER

        @property
        def cache(self):
            return _InfoWithoutName(self.env_dir)

    register.add_run_env(SharedVenvRunner)
