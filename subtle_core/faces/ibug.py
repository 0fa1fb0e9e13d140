"""The iBUG / 300-W 68-point landmark mark-up: index groups, the mirror permutation, the eyes.

Indices are 0-based. Left and right are the subject's: the subject's right side is on the image
left of a frontal face.

* 0-16 jaw (image left to image right);
* 17-21 the right brow (outer to inner), 22-26 the left brow (inner to outer);
* 27-30 nose bridge (top to tip), 31-35 lower nose (image left to image right);
* 36-41 the right eye (36 outer corner, 39 inner corner), 42-47 the left eye (42 inner corner,
  45 outer corner), each clockwise in the image from its image-left corner;
* 48-59 outer lips (48 and 54 the corners), 60-67 inner lips (60 and 64 the corners).

The pupils are taken as the means of the six points of each eye: the inter-pupil distance is the
distance between those means, the inter-ocular distance the distance between the outer eye
corners 36 and 45.
"""
from __future__ import annotations

import numpy as np


def _frozen(array: np.ndarray) -> np.ndarray:
  array.flags.writeable = False  # shared by both systems: an in-place edit would leak
  return array


NUM_LANDMARKS = 68
JAW = _frozen(np.arange(0, 17))
RIGHT_BROW = _frozen(np.arange(17, 22))
LEFT_BROW = _frozen(np.arange(22, 27))
NOSE_BRIDGE = _frozen(np.arange(27, 31))
NOSE_LOWER = _frozen(np.arange(31, 36))
RIGHT_EYE = _frozen(np.arange(36, 42))
LEFT_EYE = _frozen(np.arange(42, 48))
OUTER_LIPS = _frozen(np.arange(48, 60))
INNER_LIPS = _frozen(np.arange(60, 68))

RIGHT_EYE_OUTER_CORNER = 36
LEFT_EYE_OUTER_CORNER = 45

# MIRROR_INDEX[i] is the landmark that point i becomes after a horizontal flip (the same point on
# the other side of the face; points on the midline map to themselves). It is an involution.
# Flipping an image mirrors the x coordinates and permutes the points with it, so that e.g. the
# flipped right outer eye corner (36) is stored as the left one (45); unilateral action units use
# it to find a point's counterpart.
MIRROR_INDEX = _frozen(np.array(
    list(range(16, -1, -1))  # jaw
    + list(range(26, 21, -1)) + list(range(21, 16, -1))  # brows
    + [27, 28, 29, 30] + [35, 34, 33, 32, 31]  # nose
    + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]  # eyes
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]  # outer lips
    + [64, 63, 62, 61, 60, 67, 66, 65],  # inner lips
    dtype=np.int64))
