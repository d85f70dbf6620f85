"""napari face of phenoadapt: reader, sample data and dock widgets.

Nothing here computes science: widgets gather parameters, run the pipeline in a
worker thread and put its results into layers.  This is the only package that
imports napari and Qt.
"""
