"""Faces as both systems see them.

* :mod:`subtle_core.faces.ibug`: the iBUG / 300-W 68-landmark conventions (index groups, the
  mirror permutation of a horizontal flip, the eye points of inter-pupil and inter-ocular
  distances);
* :mod:`subtle_core.faces.detect`: OpenCV's Haar cascade, one classifier per thread, with a
  second, more sensitive pass before an image is called faceless;
* :mod:`subtle_core.faces.render`: the parametric face renderer (68 landmarks known by
  construction, action units, lighting) behind every synthetic database.

Import the submodules, e.g. ``from subtle_core.faces import detect, ibug, render``.
"""
