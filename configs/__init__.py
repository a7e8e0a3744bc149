"""The experiment configs shipped with jaxseg, installed as the package ``jaxseg.configs``.

Each ``NAME.py`` here (names starting with ``_`` excepted) defines ``get_config(arg)`` and is what
``jaxseg train NAME[:arg]`` and ``jaxseg config NAME`` load (``jaxseg.config.available_configs()`` lists them).
The folder stays at the top of the repository; setup.py's ``package_dir`` installs it inside the package.
"""
