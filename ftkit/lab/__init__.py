"""The Jupyter Server extension behind the runs sidebar and the launcher; the built front end is ftkit/labextension/."""
