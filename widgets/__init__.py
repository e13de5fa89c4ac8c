"""Interactive JupyterLab panels over ftkit, imported as ``ftkit.widgets``.

The panels are thin views: each builds its controls, calls one ftkit function on a click and
subscribes to ftkit's events. The core (``ftkit``) never imports this package or ipywidgets.
"""
