"""Embedded, no-download multi-task benchmarks: ray-cast scenes in the MTAN/LibMTL .npy layout.

Three deterministic generators write ``ROOT/{train,val}/{image,<task folders>}/{i}.npy`` plus
``ROOT/meta.json``:

- ``synthetic-indoor`` (NYUv2-like): rooms (floor, walls, ceiling) furnished with cabinets, tables,
  chairs, beds, balls, columns, bins, pictures and small clutter. Tasks: ``segmentation`` (folder
  ``label``), ``depth`` (metres along the optical axis, 0 = invalid, like a Kinect: out of range,
  holes, shadows at depth edges) and ``normal`` (unit vectors in the camera frame, 0 where depth is
  invalid).
- ``synthetic-street`` (Cityscapes-like): a road seen from a car, with sidewalks, buildings,
  vegetation, poles, vehicles and sky. Tasks: ``segmentation`` (folder ``label_7``, -1 on "void"
  street furniture) and ``depth`` (inverse depth in 1/m, 0 = invalid: sky, beyond 150 m, holes).
- ``synthetic-context`` (PASCAL-Context-like, five tasks): people, animals, vehicles, furniture,
  bottles and plants on the ground, before a wall (indoors) or the sky (outdoors). Tasks:
  ``segmentation`` (folder ``label``, 9 classes), ``parts`` (folder ``human_parts``: head, torso,
  upper / lower arm, upper / lower leg on people, -1 everywhere else, as PASCAL-Context ignores
  non-person pixels), ``saliency`` (folder ``saliency``, 1 on the prominent objects: those whose
  visible area is at least half the largest object's and 1% of the image), ``edges`` (folder
  ``edge``, 1 on the boundaries of the segmentation, one pixel thick) and ``normal`` (camera
  frame, 0 on the sky).
- ``synthetic-conflict-low`` and ``synthetic-conflict-high``: two tasks that compete for one cue,
  by construction. Each image holds four smooth random fields, each stretched to [0, 1]: a
  *tone* shown as luminance, dimmed or brightened by an unseen *light* (so the tone can only be
  estimated, and both tasks share the error of that estimate), and two own cues shown as the
  red-green and blue-yellow colour-opponent channels (chroma never changes the mean of R, G, B).
  Two per-pixel regressions of kind depth (units a.u., 0.5 to 2.5, every pixel valid):
  ``brightness`` reads conflict x tone + (1 - conflict) x red-green, ``darkness`` the *inverted*
  tone, conflict x (1 - tone) + (1 - conflict) x blue-yellow (`_mix`). At conflict 0 each task
  has a cue of its own; at 1 both map the same cue to opposite outputs, so whatever moves the
  trunk's estimate of the tone moves both. The levels (`CONFLICT_LEVELS`) share every image (one
  random stream, "synthetic-conflict") and differ only in the targets.

Labels, depth and normals of the scenes are exact per pixel (one ray through each pixel centre;
analytic ray-plane, ray-box slab, ray-sphere and ray-cylinder intersections; nearest hit wins).
Their images are Lambertian-shaded with procedural textures, random colours per object (colour never tells the
class), random lights with cast shadows, colour jitter and sensor noise, in [0, 1].

Camera frame of the normals: x to the right, y up, z towards the camera (visible surfaces have
z > 0 mostly). Every image comes from its own generator
``np.random.default_rng([seed, split_code, index, name_code])``, so the bytes do not depend on the
worker count or order. A change to the output must bump ``GENERATOR_VERSION``.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import warnings
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from core.data.npy import DatasetError

CONFLICT_LEVELS = {"synthetic-conflict-low": 0.0, "synthetic-conflict-high": 1.0}
"""The registered levels of the conflict benchmark: its name -> the generator's `conflict`."""
BENCHMARKS = ("synthetic-indoor", "synthetic-street", "synthetic-context", *CONFLICT_LEVELS)
GENERATOR_VERSION = 1

INDOOR_CLASSES = ("floor", "wall", "ceiling", "cabinet", "table", "chair", "bed", "ball",
                  "column", "bin", "picture", "clutter")
STREET_CLASSES = ("road", "sidewalk", "building", "vegetation", "pole", "vehicle", "sky")
CONTEXT_CLASSES = ("ground", "wall", "sky", "person", "animal", "vehicle", "furniture", "bottle",
                   "plant")
CONTEXT_PARTS = ("head", "torso", "upper arm", "lower arm", "upper leg", "lower leg")
VOID = -1

MAX_IMAGES = 100_000
"""The most images `generate` writes per split."""
SIZE_RANGE = (8, 2048)
"""Smallest and largest image side, in pixels, that `generate` accepts."""

_SPLIT_CODES = {"train": 0, "val": 1}
_EPS = 1e-4
_IND = {name: i for i, name in enumerate(INDOOR_CLASSES)}
_STR = {name: i for i, name in enumerate(STREET_CLASSES)}
_CTX = {name: i for i, name in enumerate(CONTEXT_CLASSES)}
_PART = {name: i for i, name in enumerate(CONTEXT_PARTS)}


# --- materials -------------------------------------------------------------------------------

def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """A random RGB albedo from a uniform hue, any saturation, mid to high value. Shape (3,)."""
    hue, sat, val = rng.random(), rng.uniform(0.0, 0.85), rng.uniform(0.15, 0.95)
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6.0) % 6.0
    return val - val * sat * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _value_noise(x: np.ndarray, lattice: np.ndarray) -> np.ndarray:
    """Trilinear value noise on a periodic (L, L, L) lattice: points (M, 3) -> (M,) in [0, 1]."""
    size = lattice.shape[0]
    base = np.floor(x)
    f = x - base
    f = f * f * (3.0 - 2.0 * f)
    i = base.astype(np.int64) % size
    j = (i + 1) % size
    out = np.zeros(len(x))
    for cx in (0, 1):
        wx, ix = (f[:, 0], j[:, 0]) if cx else (1.0 - f[:, 0], i[:, 0])
        for cy in (0, 1):
            wy, iy = (f[:, 1], j[:, 1]) if cy else (1.0 - f[:, 1], i[:, 1])
            for cz in (0, 1):
                wz, iz = (f[:, 2], j[:, 2]) if cz else (1.0 - f[:, 2], i[:, 2])
                out += wx * wy * wz * lattice[ix, iy, iz]
    return out


class _Material:
    """A procedural solid texture: two colours mixed by a pattern of the local surface point."""

    PATTERNS = ("plain", "noise", "stripes", "checker", "grid")

    def __init__(self, rng: np.random.Generator, size: float):
        self.pattern = self.PATTERNS[rng.integers(len(self.PATTERNS))]
        self.c1 = _random_colour(rng)
        self.c2 = _random_colour(rng) if rng.random() < 0.6 else self.c1 * rng.uniform(0.4, 0.9)
        self.scale = size * rng.uniform(0.08, 0.5)
        self.offset = rng.uniform(0.0, 8.0, 3)
        self.direction = rng.normal(size=3)
        self.direction /= np.linalg.norm(self.direction)
        self.lattice = rng.random((8, 8, 8))
        self.grain = rng.uniform(0.0, 0.25)

    def colour(self, q: np.ndarray) -> np.ndarray:
        """Albedo at local points q (M, 3) -> (M, 3)."""
        x = q / self.scale + self.offset
        if self.pattern == "plain":
            mix = np.zeros(len(q))
        elif self.pattern == "noise":
            mix = _value_noise(x, self.lattice)
        elif self.pattern == "stripes":
            mix = 0.5 + 0.5 * np.sin(2.0 * np.pi * (x @ self.direction))
        elif self.pattern == "checker":
            mix = np.floor(x).sum(axis=1) % 2.0
        else:
            cell = (x[:, [0, 1]] + x[:, [2, 2]] * np.array([1.0, 0.0])) % 1.0
            mix = ((np.abs(cell - 0.5) < 0.32).all(axis=1)).astype(float)
        mix = np.clip(mix + self.grain * (_value_noise(4.0 * x, self.lattice) - 0.5), 0.0, 1.0)
        return self.c1 + (self.c2 - self.c1) * mix[:, None]


# --- shapes: ray origins o (3,) or (N, 3), unnormalised directions d (N, 3) -> t (N,), inf = miss

def _rotate_y(v: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    x, z = v[..., 0], v[..., 2]
    return np.stack([c * x + s * z, v[..., 1], -s * x + c * z], axis=-1)


class _Shape:
    label: int
    material: _Material
    occludes = True

    def hit(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def normal(self, p: np.ndarray) -> np.ndarray:
        """Outward unit normals (M, 3) at surface points p (M, 3)."""
        raise NotImplementedError

    def local(self, p: np.ndarray) -> np.ndarray:
        """Texture coordinates of surface points: the points in the shape's own frame."""
        return p


class _Plane(_Shape):
    """The infinite plane p[axis] = offset, facing along sign * e_axis."""

    occludes = False

    def __init__(self, axis: int, offset: float, sign: float, label: int, material: _Material):
        self.axis, self.offset, self.sign = axis, offset, sign
        self.label, self.material = label, material

    def hit(self, o, d):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (self.offset - o[..., self.axis]) / d[:, self.axis]
        return np.where(t > _EPS, t, np.inf)

    def normal(self, p):
        n = np.zeros_like(p)
        n[:, self.axis] = self.sign
        return n


class _Box(_Shape):
    """A box with centre c (3,), half sizes (3,), turned by yaw about the vertical axis."""

    def __init__(self, centre, half, yaw: float, label: int, material: _Material):
        self.centre, self.half, self.yaw = np.asarray(centre, float), np.asarray(half, float), yaw
        self.label, self.material = label, material

    def hit(self, o, d):
        rel = o - self.centre
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        ox, oy, oz = rel[..., 0], rel[..., 1], rel[..., 2]
        dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
        if self.yaw != 0.0:  # into the box frame: turn by -yaw
            ox, oz = c * ox - s * oz, s * ox + c * oz
            dx, dz = c * dx - s * dz, s * dx + c * dz
        near, far = np.full(len(d), -np.inf), np.full(len(d), np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            for oa, da, half in ((ox, dx, self.half[0]), (oy, dy, self.half[1]),
                                 (oz, dz, self.half[2])):
                t1 = (-half - oa) / da
                t2 = (half - oa) / da
                near = np.maximum(near, np.minimum(t1, t2))
                far = np.minimum(far, np.maximum(t1, t2))
        return np.where((far >= near) & (near > _EPS), near, np.inf)

    def local(self, p):
        return _rotate_y(p - self.centre, -self.yaw)

    def normal(self, p):
        q = self.local(p) / self.half
        axis = np.abs(q).argmax(axis=1)
        n = np.zeros_like(p)
        n[np.arange(len(p)), axis] = np.sign(q[np.arange(len(p)), axis])
        return _rotate_y(n, self.yaw)


class _Sphere(_Shape):
    def __init__(self, centre, radius: float, label: int, material: _Material):
        self.centre, self.radius = np.asarray(centre, float), radius
        self.label, self.material = label, material

    def hit(self, o, d):
        oc = o - self.centre
        a = (d * d).sum(axis=-1)
        b = (oc * d).sum(axis=-1)
        c = (oc * oc).sum(axis=-1) - self.radius**2
        disc = b * b - a * c
        t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
        return np.where((disc >= 0.0) & (t > _EPS), t, np.inf)

    def local(self, p):
        return p - self.centre

    def normal(self, p):
        return (p - self.centre) / self.radius


class _Cylinder(_Shape):
    """A vertical cylinder standing on base (3,) with a radius and a height, with caps."""

    def __init__(self, base, radius: float, height: float, label: int, material: _Material):
        self.base, self.radius, self.height = np.asarray(base, float), radius, height
        self.label, self.material = label, material

    def hit(self, o, d):
        ol = o - self.base
        ox, oy, oz = ol[..., 0], ol[..., 1], ol[..., 2]
        dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
        a = dx * dx + dz * dz
        b = ox * dx + oz * dz
        c = ox * ox + oz * oz - self.radius**2
        disc = b * b - a * c
        with np.errstate(divide="ignore", invalid="ignore"):
            t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
            y = oy + t_side * dy
            t_side = np.where((disc >= 0) & (t_side > _EPS) & (y >= 0) & (y <= self.height),
                              t_side, np.inf)
            best = t_side
            for cap in (0.0, self.height):
                t_cap = (cap - oy) / dy
                x, z = ox + t_cap * dx, oz + t_cap * dz
                inside = (x * x + z * z <= self.radius**2) & (t_cap > _EPS)
                best = np.minimum(best, np.where(inside, t_cap, np.inf))
        return best

    def local(self, p):
        return p - self.base

    def normal(self, p):
        q = p - self.base
        radial = np.hypot(q[:, 0], q[:, 2]) / self.radius
        cap = np.minimum(q[:, 1], self.height - q[:, 1]) / max(self.radius, 1e-9)
        on_cap = cap < 1.0 - radial
        n = np.stack([q[:, 0], np.zeros(len(p)), q[:, 2]], axis=1) / self.radius
        n[on_cap] = 0.0
        n[on_cap, 1] = np.where(q[on_cap, 1] > self.height / 2, 1.0, -1.0)
        return n / np.linalg.norm(n, axis=1, keepdims=True).clip(1e-9)


# --- camera, ray casting, shading ------------------------------------------------------------

def _camera(size: tuple[int, int], hfov: float, yaw: float, pitch: float, roll: float):
    """Unnormalised world ray directions (H*W, 3) with camera-z component -1 (so the hit
    parameter t is the depth along the optical axis), and R = world_from_camera (3, 3)."""
    h, w = size
    f = (w / 2.0) / np.tan(hfov / 2.0)
    u = (np.arange(w) + 0.5 - w / 2.0) / f
    v = -(np.arange(h) + 0.5 - h / 2.0) / f
    uu, vv = np.meshgrid(u, v)
    d_cam = np.stack([uu, vv, -np.ones_like(uu)], axis=-1).reshape(-1, 3)

    def rot(axis: int, a: float) -> np.ndarray:
        c, s = np.cos(a), np.sin(a)
        i, j = [k for k in range(3) if k != axis]
        m = np.eye(3)
        m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
        return m

    r = rot(1, yaw) @ rot(0, pitch) @ rot(2, roll)
    return d_cam @ r.T, r


def _cast(shapes: Sequence[_Shape], o: np.ndarray, d: np.ndarray):
    """Nearest hit of each ray: t (N,), index of the shape hit (N,), -1 for none."""
    best = np.full(len(d), np.inf)
    which = np.full(len(d), -1)
    for k, shape in enumerate(shapes):
        t = shape.hit(o, d)
        closer = t < best
        best[closer] = t[closer]
        which[closer] = k
    return best, which


def _shadowed(shapes: Sequence[_Shape], p: np.ndarray, to_light: np.ndarray, t_max: float):
    """True where the segment p + t * to_light, 0 < t < t_max, meets an occluding shape."""
    blocked = np.zeros(len(p), dtype=bool)
    for shape in shapes:
        if shape.occludes:
            blocked |= shape.hit(p, to_light) < t_max
    return blocked


def _surfaces(shapes, t, which, o, d):
    """Per-pixel world normals (facing the camera) and albedo for the rays that hit something."""
    normals = np.zeros_like(d)
    albedo = np.zeros_like(d)
    points = o + t[:, None] * d
    for k in np.unique(which[which >= 0]):
        mask = which == k
        n = shapes[k].normal(points[mask])
        facing = (n * d[mask]).sum(axis=1) > 0
        n[facing] *= -1.0
        normals[mask] = n
        albedo[mask] = shapes[k].material.colour(shapes[k].local(points[mask]))
    return points, normals, albedo


def _labels(shapes, which, background: int) -> np.ndarray:
    table = np.array([s.label for s in shapes] + [background])
    return table[which]


def _upsample(coarse: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear interpolation of a (h, w) grid, h, w >= 2, spread over (H, W) pixels."""
    h, w = size
    ch, cw = coarse.shape
    y = np.linspace(0, ch - 1, h)
    x = np.linspace(0, cw - 1, w)
    y0, x0 = np.minimum(y.astype(int), ch - 2), np.minimum(x.astype(int), cw - 2)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    return (coarse[y0][:, x0] * (1 - fy) * (1 - fx) + coarse[y0 + 1][:, x0] * fy * (1 - fx)
            + coarse[y0][:, x0 + 1] * (1 - fy) * fx + coarse[y0 + 1][:, x0 + 1] * fy * fx)


def _blobs(rng: np.random.Generator, size: tuple[int, int], share: float) -> np.ndarray:
    """A boolean (H, W) mask of smooth random blobs covering about `share` of the pixels."""
    field = _upsample(rng.random((6, 6)), size) + 0.15 * rng.random(size)
    return field > np.quantile(field, 1.0 - share)


def _finish_image(rng: np.random.Generator, linear: np.ndarray) -> np.ndarray:
    """Exposure, white balance, gamma, Gaussian sensor noise; (H, W, 3) float32 in [0, 1]."""
    img = linear * rng.uniform(0.7, 1.4) * (1.0 + rng.normal(0.0, 0.06, 3))
    img = np.clip(img, 0.0, None) ** (1.0 / rng.uniform(1.8, 2.4))
    img = img + rng.normal(0.0, rng.uniform(0.005, 0.035), img.shape)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


# --- indoor ----------------------------------------------------------------------------------

class _Floorplan:
    """Footprints of what stands on the floor, to place objects without overlaps."""

    def __init__(self, rng, half_w: float, half_d: float):
        self.rng, self.half_w, self.half_d = rng, half_w, half_d
        self.taken: list[tuple[float, float, float]] = []

    def free(self, x: float, z: float, radius: float, margin: float) -> bool:
        inside = abs(x) + margin <= self.half_w and abs(z) + margin <= self.half_d
        return inside and all(np.hypot(x - a, z - b) >= radius + r for a, b, r in self.taken)

    def place(self, radius: float, against_wall: bool, gap: float = 0.0):
        """(x, z, yaw) of a free spot for a footprint of this radius, or None after a few tries.
        Against a wall, the object's local -z side faces the wall, its centre `gap` from it."""
        margin = gap if against_wall else radius
        for _ in range(12):
            if against_wall:
                side = int(self.rng.integers(4))
                along = self.rng.uniform(-1.0, 1.0)
                yaw = side * np.pi / 2 + self.rng.normal(0.0, 0.03)
                if side % 2 == 0:
                    sgn = 1.0 if side == 0 else -1.0
                    x, z = along * (self.half_w - radius), -sgn * (self.half_d - gap - 0.02)
                else:
                    sgn = 1.0 if side == 1 else -1.0
                    x, z = -sgn * (self.half_w - gap - 0.02), along * (self.half_d - radius)
            else:
                x = self.rng.uniform(-self.half_w, self.half_w)
                z = self.rng.uniform(-self.half_d, self.half_d)
                yaw = self.rng.uniform(0.0, np.pi)
            if self.free(x, z, radius, margin):
                self.taken.append((x, z, radius))
                return x, z, yaw
        return None


def _indoor_scene(rng: np.random.Generator):
    """Sample a furnished room. Returns (shapes, camera position, ray params, light position)."""
    half_w, half_d = rng.uniform(1.5, 3.8), rng.uniform(1.5, 4.2)
    height = rng.uniform(2.3, 3.4)
    floor_mat = _Material(rng, rng.uniform(0.5, 3.0))
    wall_mat = _Material(rng, rng.uniform(0.5, 3.0))
    ceiling_mat = _Material(rng, rng.uniform(1.0, 4.0))
    shapes: list[_Shape] = [
        _Plane(1, 0.0, 1.0, _IND["floor"], floor_mat),
        _Plane(1, height, -1.0, _IND["ceiling"], ceiling_mat),
    ]
    for axis, half in ((0, half_w), (2, half_d)):
        for sign in (1.0, -1.0):
            mat = wall_mat if rng.random() < 0.75 else _Material(rng, rng.uniform(0.5, 3.0))
            shapes.append(_Plane(axis, sign * half, -sign, _IND["wall"], mat))

    plan = _Floorplan(rng, half_w, half_d)
    cam_x = rng.uniform(-half_w + 0.4, half_w - 0.4)
    cam_z = rng.uniform(-half_d + 0.4, half_d - 0.4)
    plan.taken.append((cam_x, cam_z, 0.45))
    surfaces: list[tuple[float, float, float, float, float, float]] = []  # x, z, yaw, hx, hz, y

    def add_box(centre, half, yaw, label, mat=None):
        shapes.append(_Box(centre, half, yaw, label, mat or _Material(rng, 2 * max(half))))

    for _ in range(rng.integers(0, 6)):  # cabinets, mostly against a wall
        hx, hz, hy = rng.uniform(0.2, 0.7), rng.uniform(0.15, 0.35), rng.uniform(0.3, 1.1)
        spot = plan.place(float(np.hypot(hx, hz)), rng.random() < 0.8, gap=hz)
        if spot:
            x, z, yaw = spot
            add_box((x, hy, z), (hx, hy, hz), yaw, _IND["cabinet"])
            surfaces.append((x, z, yaw, hx, hz, 2 * hy))
    for _ in range(rng.integers(0, 3)):  # tables: a top and four legs
        hx, hz, top = rng.uniform(0.35, 0.9), rng.uniform(0.3, 0.5), rng.uniform(0.55, 0.8)
        spot = plan.place(float(np.hypot(hx, hz)), rng.random() < 0.3, gap=hz)
        if spot:
            x, z, yaw = spot
            mat = _Material(rng, 2 * hx)
            thick, leg = rng.uniform(0.02, 0.05), rng.uniform(0.02, 0.05)
            add_box((x, top - thick, z), (hx, thick, hz), yaw, _IND["table"], mat)
            for sx, sz in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                off = _rotate_y(np.array([sx * (hx - leg), 0.0, sz * (hz - leg)]), yaw)
                add_box((x + off[0], (top - thick) / 2, z + off[2]),
                        (leg, (top - thick) / 2, leg), yaw, _IND["table"], mat)
            surfaces.append((x, z, yaw, hx, hz, top))
    for _ in range(rng.integers(0, 6)):  # chairs: seat, back, legs
        hs, seat = rng.uniform(0.18, 0.27), rng.uniform(0.4, 0.5)
        spot = plan.place(hs * 1.5, False)
        if spot:
            x, z, yaw = spot
            mat = _Material(rng, 2 * hs)
            leg = rng.uniform(0.015, 0.03)
            add_box((x, seat, z), (hs, 0.025, hs), yaw, _IND["chair"], mat)
            back = _rotate_y(np.array([0.0, 0.0, -hs + 0.02]), yaw)
            back_h = rng.uniform(0.2, 0.4)
            add_box((x + back[0], seat + back_h, z + back[2]), (hs, back_h, 0.02), yaw,
                    _IND["chair"], mat)
            for sx, sz in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                off = _rotate_y(np.array([sx * (hs - leg), 0.0, sz * (hs - leg)]), yaw)
                add_box((x + off[0], seat / 2, z + off[2]), (leg, seat / 2, leg), yaw,
                        _IND["chair"], mat)
    if rng.random() < 0.45:  # a bed: base, mattress, headboard
        hx, hz = rng.uniform(0.45, 0.95), rng.uniform(0.9, 1.1)
        spot = plan.place(float(np.hypot(hx, hz)), True, gap=hz)
        if spot:
            x, z, yaw = spot
            base = rng.uniform(0.15, 0.3)
            add_box((x, base, z), (hx, base, hz), yaw, _IND["bed"])
            add_box((x, 2 * base + 0.08, z), (hx - 0.03, 0.08, hz - 0.03), yaw, _IND["bed"])
            head = _rotate_y(np.array([0.0, 0.0, -hz + 0.04]), yaw)
            head_h = rng.uniform(0.4, 0.6)
            add_box((x + head[0], head_h, z + head[2]), (hx, head_h, 0.04), yaw, _IND["bed"])
    for _ in range(rng.integers(0, 3)):  # columns, floor to ceiling
        r = rng.uniform(0.08, 0.3)
        spot = plan.place(r, rng.random() < 0.4, gap=r)
        if spot:
            shapes.append(_Cylinder((spot[0], 0.0, spot[1]), r, height, _IND["column"],
                                    _Material(rng, 2 * r)))

    def support():
        """A spot on a table or cabinet top (x, y, z, room radius), else on the floor."""
        if surfaces and rng.random() < 0.5:
            x, z, yaw, hx, hz, y = surfaces[rng.integers(len(surfaces))]
            off = _rotate_y(np.array([rng.uniform(-0.8, 0.8) * hx, 0.0,
                                      rng.uniform(-0.8, 0.8) * hz]), yaw)
            return x + off[0], y, z + off[2], min(hx, hz)
        return None

    def small_object(radius_range, make):
        r = rng.uniform(*radius_range)
        spot = support()
        if spot and r < spot[3]:
            make(spot[0], spot[1], spot[2], r)
            return
        place = plan.place(r, rng.random() < 0.3, gap=r)
        if place:
            make(place[0], 0.0, place[1], r)

    def ball(x, y, z, r):
        shapes.append(_Sphere((x, y + r, z), r, _IND["ball"], _Material(rng, 2 * r)))

    def bin_(x, y, z, r):
        shapes.append(_Cylinder((x, y, z), r, r * rng.uniform(1.2, 3.5), _IND["bin"],
                                _Material(rng, 2 * r)))

    def clutter(x, y, z, r):
        kind = rng.integers(3)
        mat = _Material(rng, 2 * r)
        if kind == 0:
            half = r * rng.uniform(0.4, 1.0, 3)
            add_box((x, y + half[1], z), half, rng.uniform(0, np.pi), _IND["clutter"], mat)
        elif kind == 1:
            shapes.append(_Cylinder((x, y, z), r * 0.6, r * rng.uniform(0.3, 1.5),
                                    _IND["clutter"], mat))
        else:
            shapes.append(_Sphere((x, y + r * 0.6, z), r * 0.6, _IND["clutter"], mat))

    for _ in range(rng.integers(0, 5)):
        small_object((0.1, 0.35), ball)
    for _ in range(rng.integers(0, 5)):
        small_object((0.08, 0.25), bin_)
    for _ in range(rng.integers(5, 26)):
        small_object((0.04, 0.18), clutter)
    for _ in range(rng.integers(0, 6)):  # pictures on the walls
        pw, ph = rng.uniform(0.15, 0.7), rng.uniform(0.15, 0.5)
        y = rng.uniform(max(ph + 0.3, 0.9), max(height - ph - 0.1, 1.0))
        side = rng.integers(4)
        if side < 2:
            x = rng.uniform(-1, 1) * max(half_w - pw, 0.0)
            z = (half_d - 0.015) * (1 if side == 0 else -1)
            half = (pw, ph, 0.015)
        else:
            x = (half_w - 0.015) * (1 if side == 2 else -1)
            z = rng.uniform(-1, 1) * max(half_d - pw, 0.0)
            half = (0.015, ph, pw)
        add_box((x, y, z), half, 0.0, _IND["picture"])

    cam_y = rng.uniform(0.8, min(1.9, height - 0.3))
    toward_centre = np.arctan2(-cam_x, cam_z)  # yaw that looks at the room centre (-z forward)
    view = dict(hfov=np.radians(rng.uniform(55.0, 85.0)),
                yaw=toward_centre + rng.uniform(-1.0, 1.0),
                pitch=np.radians(rng.uniform(-35.0, 5.0)), roll=np.radians(rng.normal(0.0, 3.0)))
    light = np.array([rng.uniform(-half_w, half_w) * 0.8, height - rng.uniform(0.1, 0.6),
                      rng.uniform(-half_d, half_d) * 0.8])
    return shapes, np.array([cam_x, cam_y, cam_z]), view, light


def _render_indoor(rng: np.random.Generator, size: tuple[int, int]) -> dict[str, np.ndarray]:
    shapes, cam, view, light = _indoor_scene(rng)
    d, r = _camera(size, **view)
    t, which = _cast(shapes, cam, d)
    points, normals, albedo = _surfaces(shapes, t, which, cam, d)

    to_light = light - points
    dist = np.linalg.norm(to_light, axis=1)
    lambert = np.clip((normals * to_light).sum(axis=1) / dist, 0.0, None)
    shadow = _shadowed(shapes, points + 1e-3 * normals, to_light, 1.0)
    power = rng.uniform(4.0, 12.0)
    light_colour = 1.0 + rng.normal(0.0, 0.08, 3)
    diffuse = power * lambert * ~shadow / (1.0 + dist**2)
    ambient = rng.uniform(0.12, 0.4)
    linear = albedo * (ambient + diffuse[:, None] * light_colour)
    image = _finish_image(rng, linear.reshape(*size, 3))

    depth = t.reshape(size)
    invalid = (depth > rng.uniform(7.0, 10.0)) | (depth < 0.4) | _blobs(rng, size,
                                                                         rng.uniform(0.0, 0.04))
    edge = np.zeros(size, dtype=bool)
    edge[:, 1:] = np.abs(np.diff(depth, axis=1)) > 0.15 * depth[:, 1:]
    invalid |= edge & (rng.random(size) < 0.6)
    depth = np.where(invalid, 0.0, depth)
    normal_cam = (normals @ r).reshape(*size, 3)
    normal_cam[invalid] = 0.0
    return {"image": image,
            "label": _labels(shapes, which, VOID).reshape(size).astype(np.float32),
            "depth": depth[..., None].astype(np.float32),
            "normal": normal_cam.astype(np.float32)}


# --- street ----------------------------------------------------------------------------------

def _street_scene(rng: np.random.Generator):
    road = rng.uniform(3.5, 8.0)  # half width
    curb = rng.uniform(0.08, 0.2)
    walk = rng.uniform(2.0, 5.0)
    shapes: list[_Shape] = [_Plane(1, 0.0, 1.0, _STR["road"], _Material(rng, rng.uniform(1, 8)))]
    for side in (1.0, -1.0):
        shapes.append(_Box((side * (road + 500.0), curb / 2 - 0.5, -900.0), (500.0, 0.5 + curb / 2,
                           1000.0), 0.0, _STR["sidewalk"], _Material(rng, rng.uniform(0.5, 4))))

    def add(shape):
        shapes.append(shape)

    for side in (1.0, -1.0):
        z = rng.uniform(-5.0, 20.0)
        line = road + walk
        end = -rng.uniform(120.0, 350.0)
        while z > end:
            width = rng.uniform(8.0, 30.0)
            if rng.random() < 0.15:  # a gap with vegetation, or a hedge, in front of the line
                if rng.random() < 0.5:
                    crown = rng.uniform(1.5, 4.0)
                    add(_Sphere((side * (line + crown + 1.0), crown * 1.3, z - width / 2), crown,
                                _STR["vegetation"], _Material(rng, crown)))
                else:
                    hh = rng.uniform(0.4, 1.2)
                    add(_Box((side * (line + 0.6), hh, z - width / 2), (0.6, hh, width / 2), 0.0,
                             _STR["vegetation"], _Material(rng, 2.0)))
            else:
                setback = rng.uniform(0.0, 3.0) if rng.random() < 0.4 else 0.0
                depth = rng.uniform(8.0, 20.0)
                h = rng.uniform(6.0, 40.0)
                add(_Box((side * (line + setback + depth), h / 2, z - width / 2),
                         (depth, h / 2, width / 2), 0.0, _STR["building"],
                         _Material(rng, rng.uniform(2.0, 8.0))))
            z -= width + (rng.uniform(0.5, 8.0) if rng.random() < 0.3 else 0.0)
    if rng.random() < 0.5:  # a block across the road at the end of the street
        far = rng.uniform(80.0, 300.0)
        h = rng.uniform(8.0, 40.0)
        add(_Box((rng.uniform(-20, 20), h / 2, -far - 10.0), (60.0, h / 2, 10.0), 0.0,
                 _STR["building"], _Material(rng, rng.uniform(2.0, 8.0))))

    for _ in range(rng.integers(0, 9)):  # trees on the sidewalks: trunk and crown
        side = 1.0 if rng.random() < 0.5 else -1.0
        x, z = side * (road + rng.uniform(0.6, walk - 0.3)), -rng.uniform(3.0, 120.0)
        trunk_h, crown = rng.uniform(1.8, 4.0), rng.uniform(0.8, 2.2)
        add(_Cylinder((x, curb, z), rng.uniform(0.08, 0.25), trunk_h, _STR["vegetation"],
                      _Material(rng, 0.5)))
        add(_Sphere((x, curb + trunk_h + crown * 0.7, z), crown, _STR["vegetation"],
                    _Material(rng, crown)))
    for _ in range(rng.integers(0, 9)):  # poles, some with a sign or a traffic light box
        side = 1.0 if rng.random() < 0.5 else -1.0
        x, z = side * (road + rng.uniform(0.3, 1.0)), -rng.uniform(2.0, 60.0)
        h = rng.uniform(2.5, 9.0)
        add(_Cylinder((x, curb, z), rng.uniform(0.08, 0.25), h, _STR["pole"], _Material(rng, 1.0)))
        if rng.random() < 0.6:
            sw, sh = rng.uniform(0.3, 0.9), rng.uniform(0.3, 0.9)
            add(_Box((x - side * sw, curb + h - sh, z), (sw, sh, rng.uniform(0.03, 0.3)), 0.0,
                     _STR["pole"], _Material(rng, 0.5)))
    for _ in range(rng.integers(0, 4)):  # void street furniture
        side = 1.0 if rng.random() < 0.5 else -1.0
        half = rng.uniform(0.2, 0.8, 3)
        add(_Box((side * (road + rng.uniform(0.5, walk)), curb + half[1], -rng.uniform(3, 80)),
                 half, rng.uniform(0, np.pi), VOID, _Material(rng, 1.0)))

    lanes = np.arange(-road + 1.6, road - 1.0, 3.2)
    vehicles: list[tuple[float, float, float, float]] = []  # x, half width, z, half length
    for _ in range(rng.integers(1, 11)):  # vehicles: body, cabin, wheels
        parked = rng.random() < 0.35
        x = (rng.choice([-1.0, 1.0]) * (road - 1.1)) if parked else rng.choice(lanes)
        x += rng.normal(0.0, 0.15)
        z = -rng.uniform(4.0, 90.0)
        yaw = rng.normal(0.0, 0.04) + (np.pi if rng.random() < 0.5 else 0.0)
        big = rng.random() < 0.15
        hw, hl = (rng.uniform(1.1, 1.3), rng.uniform(3.0, 6.0)) if big else \
            (rng.uniform(0.8, 1.0), rng.uniform(1.9, 2.5))
        body_h = rng.uniform(1.1, 1.6) if big else rng.uniform(0.3, 0.45)
        if any(abs(x - a) < hw + b and abs(z - c) < hl + e + 0.5 for a, b, c, e in vehicles):
            continue
        vehicles.append((x, hw, z, hl))
        mat = _Material(rng, 2.0)
        add(_Box((x, 0.3 + body_h, z), (hw, body_h, hl), yaw, _STR["vehicle"], mat))
        if not big or rng.random() < 0.5:
            cab_l = hl * (0.3 if big else rng.uniform(0.45, 0.65))
            cab_h = rng.uniform(0.25, 0.35)
            off = _rotate_y(np.array([0.0, 0.0, rng.uniform(-0.3, 0.3) * hl]), yaw)
            add(_Box((x + off[0], 0.3 + 2 * body_h + cab_h, z + off[2]), (hw * 0.85, cab_h, cab_l),
                     yaw, _STR["vehicle"], _Material(rng, 1.0)))
        for sx, sz in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
            off = _rotate_y(np.array([sx * (hw - 0.15), 0.0, sz * (hl - 0.6)]), yaw)
            add(_Box((x + off[0], 0.32, z + off[2]), (0.12, 0.32, 0.32), yaw, _STR["vehicle"], mat))

    cam = np.array([rng.uniform(-road + 1.2, road - 1.2), rng.uniform(1.2, 1.9), 0.0])
    view = dict(hfov=np.radians(rng.uniform(60.0, 95.0)), yaw=np.radians(rng.normal(0.0, 8.0)),
                pitch=np.radians(rng.uniform(-8.0, 3.0)), roll=np.radians(rng.normal(0.0, 1.5)))
    return shapes, cam, view


def _render_street(rng: np.random.Generator, size: tuple[int, int]) -> dict[str, np.ndarray]:
    shapes, cam, view = _street_scene(rng)
    d, r = _camera(size, **view)
    t, which = _cast(shapes, cam, d)
    hit = which >= 0
    t_hit = np.where(hit, t, 0.0)
    points, normals, albedo = _surfaces(shapes, t_hit, which, cam, d)

    elevation, azimuth = rng.uniform(0.25, 1.2), rng.uniform(0.0, 2 * np.pi)
    sun = np.array([np.cos(elevation) * np.sin(azimuth), np.sin(elevation),
                    np.cos(elevation) * np.cos(azimuth)])
    lambert = np.clip(normals @ sun, 0.0, None)
    shadow = np.zeros(len(d), dtype=bool)
    shadow[hit] = _shadowed(shapes, points[hit] + 1e-3 * normals[hit],
                            np.broadcast_to(sun * 100.0, (hit.sum(), 3)), 10.0)
    sky_top, sky_low = _random_colour(rng) * 0.5 + 0.5, _random_colour(rng) * 0.4 + 0.6
    ambient = rng.uniform(0.25, 0.5)
    linear = albedo * (ambient * sky_low + rng.uniform(0.7, 1.2) * (lambert * ~shadow)[:, None])

    up = np.clip(d[:, 1] / np.linalg.norm(d, axis=1), 0.0, 1.0)[:, None]
    clouds = _value_noise(d / np.abs(d[:, 1:2]).clip(0.05) * rng.uniform(1, 4),
                          rng.random((8, 8, 8)))
    sky = sky_low + (sky_top - sky_low) * up ** rng.uniform(0.3, 1.0)
    sky = sky + rng.uniform(0.0, 0.4) * (clouds[:, None] - 0.5)
    fog = np.exp(-t_hit / rng.uniform(120.0, 600.0))[:, None]
    linear = np.where(hit[:, None], linear * fog + sky_low * (1 - fog), sky)
    image = _finish_image(rng, linear.reshape(*size, 3))

    depth = t_hit.reshape(size)
    invalid = ~hit.reshape(size) | (depth > 150.0) | _blobs(rng, size, rng.uniform(0.0, 0.05))
    inverse = np.where(invalid, 0.0, 1.0 / np.where(invalid, 1.0, depth))
    return {"image": image,
            "label_7": _labels(shapes, which, _STR["sky"]).reshape(size).astype(np.float32),
            "depth": inverse[..., None].astype(np.float32)}


# --- context (PASCAL-Context-like) ---------------------------------------------------------------

def _person(rng, x: float, z: float, parts: list[tuple[_Shape, int]]) -> None:
    """A standing person at (x, 0, z): legs, arms, torso and head, each shape tagged with its part."""
    s, yaw = rng.uniform(0.75, 1.1), rng.uniform(0.0, 2 * np.pi)
    skin, shirt, trousers = (_Material(rng, 0.3), _Material(rng, 0.5), _Material(rng, 0.5))
    person = _CTX["person"]

    def at(dx: float, dz: float = 0.0) -> np.ndarray:
        off = _rotate_y(np.array([dx, 0.0, dz]), yaw)
        return np.array([x + off[0], 0.0, z + off[2]])

    for side in (1.0, -1.0):
        leg, arm = at(side * 0.1 * s), at(side * 0.27 * s)
        parts.append((_Cylinder(leg, 0.07 * s, 0.45 * s, person, trousers), _PART["lower leg"]))
        parts.append((_Cylinder(leg + [0, 0.45 * s, 0], 0.075 * s, 0.45 * s, person, trousers),
                      _PART["upper leg"]))
        parts.append((_Cylinder(arm + [0, 0.8 * s, 0], 0.045 * s, 0.32 * s, person, skin),
                      _PART["lower arm"]))
        parts.append((_Cylinder(arm + [0, 1.12 * s, 0], 0.05 * s, 0.36 * s, person, shirt),
                      _PART["upper arm"]))
    parts.append((_Box(at(0.0) + [0, 1.2 * s, 0], (0.2 * s, 0.3 * s, 0.12 * s), yaw, person, shirt),
                  _PART["torso"]))
    parts.append((_Sphere(at(0.0) + [0, 1.63 * s, 0], 0.12 * s, person, skin), _PART["head"]))


def _context_object(rng, label: str, x: float, z: float) -> list[_Shape]:
    """The shapes of one non-person object standing at (x, 0, z)."""
    c, yaw = _CTX[label], rng.uniform(0.0, np.pi)
    mat = _Material(rng, 1.0)
    base = np.array([x, 0.0, z])
    if label == "animal":  # body, head and four legs
        hl, hw, leg = rng.uniform(0.25, 0.5), rng.uniform(0.1, 0.2), rng.uniform(0.15, 0.35)
        shapes = [_Box(base + [0, leg + hw, 0], (hl, hw, hw), yaw, c, mat),
                  _Sphere(base + _rotate_y(np.array([hl + 0.08, leg + 2.2 * hw, 0.0]), yaw),
                          hw * 1.1, c, mat)]
        for sx, sz in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
            foot = base + _rotate_y(np.array([sx * (hl - 0.05), 0.0, sz * (hw - 0.04)]), yaw)
            shapes.append(_Cylinder(foot, 0.035, leg, c, mat))
        return shapes
    if label == "vehicle":  # body, cabin and wheels
        hw, hl, body = rng.uniform(0.7, 0.95), rng.uniform(1.6, 2.3), rng.uniform(0.3, 0.45)
        shapes = [_Box(base + [0, 0.3 + body, 0], (hw, body, hl), yaw, c, mat),
                  _Box(base + [0, 0.3 + 2 * body + 0.28, 0], (hw * 0.85, 0.28, hl * 0.55), yaw, c,
                       _Material(rng, 1.0))]
        for sx, sz in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
            off = _rotate_y(np.array([sx * (hw - 0.12), 0.0, sz * (hl - 0.5)]), yaw)
            shapes.append(_Box(base + off + [0, 0.3, 0], (0.12, 0.3, 0.3), yaw, c, mat))
        return shapes
    if label == "furniture":  # a table (top and legs) or a cabinet
        hx, hz, top = rng.uniform(0.3, 0.8), rng.uniform(0.25, 0.5), rng.uniform(0.45, 0.9)
        if rng.random() < 0.5:
            return [_Box(base + [0, top / 2, 0], (hx, top / 2, hz), yaw, c, mat)]
        shapes = [_Box(base + [0, top - 0.03, 0], (hx, 0.03, hz), yaw, c, mat)]
        for sx, sz in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
            off = _rotate_y(np.array([sx * (hx - 0.04), 0.0, sz * (hz - 0.04)]), yaw)
            shapes.append(_Box(base + off + [0, top / 2, 0], (0.03, top / 2, 0.03), yaw, c, mat))
        return shapes
    if label == "bottle":
        r = rng.uniform(0.04, 0.1)
        return [_Cylinder(base, r, r * rng.uniform(2.5, 4.5), c, mat)]
    pot = rng.uniform(0.1, 0.2)  # plant: a pot and its foliage
    return [_Cylinder(base, pot, pot * 1.4, c, mat),
            _Sphere(base + [0, pot * 1.4 + pot * 1.6, 0], pot * 2.0, c, _Material(rng, 0.5))]


def _context_scene(rng: np.random.Generator):
    """Ground, a back wall (indoors) or sky (outdoors), 0-3 people and 1-6 other objects.

    Returns (shapes, part of each shape (-1 off people), object instance of each shape, camera
    position, view parameters, sun direction, whether the scene is indoors)."""
    indoors = rng.random() < 0.5
    shapes: list[_Shape] = [_Plane(1, 0.0, 1.0, _CTX["ground"], _Material(rng, rng.uniform(0.5, 3)))]
    if indoors:
        shapes.append(_Plane(2, -rng.uniform(6.0, 14.0), 1.0, _CTX["wall"],
                             _Material(rng, rng.uniform(0.5, 3))))
    part_of, instance_of = [-1] * len(shapes), [-1] * len(shapes)
    taken: list[tuple[float, float, float]] = []

    def spot(radius: float, near: float):
        for _ in range(10):
            z = -rng.uniform(near, 6.5)
            x = rng.uniform(-0.6, 0.6) * (-z)
            if all(np.hypot(x - a, z - b) >= radius + r for a, b, r in taken):
                taken.append((x, z, radius))
                return x, z
        return None

    objects = [("person", 0.35)] * int(rng.choice(4, p=[0.15, 0.45, 0.25, 0.15]))
    objects += [(label, size) for label, size in
                zip(rng.choice(["animal", "vehicle", "furniture", "bottle", "plant"],
                               int(rng.integers(1, 7))), rng.uniform(0.3, 0.6, 6))]
    for label, size in objects:
        where = spot(2.6 if label == "vehicle" else size, 1.6 if label == "person" else 2.0)
        if where is None:
            continue
        instance = max(instance_of) + 1
        if label == "person":
            tagged: list[tuple[_Shape, int]] = []
            _person(rng, *where, tagged)
        else:
            tagged = [(shape, -1) for shape in _context_object(rng, label, *where)]
        for shape, part in tagged:
            shapes.append(shape)
            part_of.append(part)
            instance_of.append(instance)

    cam = np.array([rng.uniform(-0.5, 0.5), rng.uniform(0.9, 1.8), 0.0])
    view = dict(hfov=np.radians(rng.uniform(45.0, 65.0)), yaw=np.radians(rng.normal(0.0, 6.0)),
                pitch=np.radians(rng.uniform(-25.0, -5.0)), roll=np.radians(rng.normal(0.0, 2.0)))
    elevation, azimuth = rng.uniform(0.4, 1.3), rng.uniform(0.0, 2 * np.pi)
    sun = np.array([np.cos(elevation) * np.sin(azimuth), np.sin(elevation),
                    np.cos(elevation) * np.cos(azimuth)])
    return shapes, np.array(part_of), np.array(instance_of), cam, view, sun, indoors


def _semantic_edges(label: np.ndarray) -> np.ndarray:
    """1 where a pixel's class differs from its right or lower neighbour: one-pixel-thick
    boundaries of the segmentation, on the upper-left side of each. (H, W) -> (H, W) float32."""
    edge = np.zeros(label.shape, dtype=bool)
    edge[:, :-1] |= label[:, :-1] != label[:, 1:]
    edge[:-1] |= label[:-1] != label[1:]
    return edge.astype(np.float32)


def _salient(instance: np.ndarray) -> np.ndarray:
    """The prominent objects: every object whose visible area is at least half the largest one's
    (and at least 1% of the image). (H, W) instance ids, -1 = none -> (H, W) float32 in {0, 1}."""
    areas = np.bincount(instance[instance >= 0].ravel(), minlength=1)
    keep = (areas >= 0.5 * areas.max()) & (areas >= 0.01 * instance.size) & (areas > 0)
    return (instance >= 0) & keep[np.maximum(instance, 0)]


def _render_context(rng: np.random.Generator, size: tuple[int, int]) -> dict[str, np.ndarray]:
    shapes, part_of, instance_of, cam, view, sun, indoors = _context_scene(rng)
    d, r = _camera(size, **view)
    t, which = _cast(shapes, cam, d)
    hit = which >= 0
    t_hit = np.where(hit, t, 0.0)
    points, normals, albedo = _surfaces(shapes, t_hit, which, cam, d)

    lambert = np.clip(normals @ sun, 0.0, None)
    shadow = np.zeros(len(d), dtype=bool)
    shadow[hit] = _shadowed(shapes, points[hit] + 1e-3 * normals[hit],
                            np.broadcast_to(sun * 50.0, (hit.sum(), 3)), 10.0)
    sky_colour = _random_colour(rng) * 0.4 + 0.6
    ambient = rng.uniform(0.2, 0.45) * (1.5 if indoors else 1.0)
    linear = albedo * (ambient * sky_colour + rng.uniform(0.6, 1.1) * (lambert * ~shadow)[:, None])
    up = np.clip(d[:, 1] / np.linalg.norm(d, axis=1), 0.0, 1.0)[:, None]
    linear = np.where(hit[:, None], linear, sky_colour * (1.0 - 0.4 * up))
    image = _finish_image(rng, linear.reshape(*size, 3))

    label = _labels(shapes, which, _CTX["sky"]).reshape(size)
    parts = np.append(part_of, -1)[which].reshape(size)
    instance = np.append(instance_of, -1)[which].reshape(size)
    normal_cam = np.where(hit[:, None], normals @ r, 0.0).reshape(*size, 3)
    return {"image": image,
            "label": label.astype(np.float32),
            "human_parts": parts.astype(np.float32),
            "saliency": _salient(instance).astype(np.float32),
            "edge": _semantic_edges(label),
            "normal": normal_cam.astype(np.float32)}


# --- conflict ---------------------------------------------------------------------------------

def _smooth_field(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A smooth random (H, W) field stretched to [0, 1]: bilinear on a grid of 3 to 6 cells a
    side (each image its own scale)."""
    cells = rng.integers(3, 7, 2)
    field = _upsample(rng.random((int(cells[0]), int(cells[1]))), size)
    low, high = field.min(), field.max()
    return (field - low) / max(high - low, 1e-9)


def _mix(contested: np.ndarray, own: np.ndarray, conflict: float) -> np.ndarray:
    """conflict x the contested cue + (1 - conflict) x a task's own cue, about 0.5, divided by
    the norm of the weights so that the spread of two independent cues is kept; in [0, 1]."""
    scale = np.hypot(conflict, 1.0 - conflict)
    return np.clip(0.5 + (conflict * (contested - 0.5) + (1 - conflict) * (own - 0.5)) / scale,
                   0.0, 1.0)


def _render_conflict(rng: np.random.Generator, size: tuple[int, int], conflict: float
                     ) -> dict[str, np.ndarray]:
    tone, red_green, blue_yellow, light = (_smooth_field(rng, size) for _ in range(4))
    luminance = (0.1 + 0.5 * tone) * (0.6 + 0.8 * light)  # an unseen light blurs the tone
    image = (luminance[..., None] + 0.25 * (red_green - 0.5)[..., None] * np.array([1.0, -1.0, 0.0])
             + 0.25 * (blue_yellow - 0.5)[..., None] * np.array([-0.5, -0.5, 1.0]))
    image = image + rng.normal(0.0, 0.02, image.shape)
    brightness = 0.5 + 2.0 * _mix(tone, red_green, conflict)
    darkness = 0.5 + 2.0 * _mix(1.0 - tone, blue_yellow, conflict)
    return {"image": np.clip(image, 0.0, 1.0).astype(np.float32),
            "brightness": brightness[..., None].astype(np.float32),
            "darkness": darkness[..., None].astype(np.float32)}


# --- benchmark files -------------------------------------------------------------------------

_RENDERERS: dict[str, Callable[[np.random.Generator, tuple[int, int]], dict[str, np.ndarray]]] = {
    "synthetic-indoor": _render_indoor,
    "synthetic-street": _render_street,
    "synthetic-context": _render_context,
    **{name: functools.partial(_render_conflict, conflict=level)
       for name, level in CONFLICT_LEVELS.items()},
}


def _task_table(name: str) -> dict[str, dict]:
    """meta.json "tasks": task name -> {"folder", "kind", "channels", "class_names", ...}."""
    if name == "synthetic-indoor":
        return {
            "segmentation": {"folder": "label", "kind": "segmentation",
                             "channels": len(INDOOR_CLASSES), "class_names": list(INDOOR_CLASSES)},
            "depth": {"folder": "depth", "kind": "depth", "channels": 1, "class_names": [],
                      "units": "m"},
            "normal": {"folder": "normal", "kind": "normal", "channels": 3, "class_names": []},
        }
    if name in CONFLICT_LEVELS:
        return {
            "brightness": {"folder": "brightness", "kind": "depth", "channels": 1, "class_names": [],
                           "units": "a.u."},
            "darkness": {"folder": "darkness", "kind": "depth", "channels": 1, "class_names": [],
                         "units": "a.u."},
        }
    if name == "synthetic-context":
        return {
            "segmentation": {"folder": "label", "kind": "segmentation",
                             "channels": len(CONTEXT_CLASSES), "class_names": list(CONTEXT_CLASSES)},
            "parts": {"folder": "human_parts", "kind": "parts", "channels": len(CONTEXT_PARTS),
                      "class_names": list(CONTEXT_PARTS)},
            "saliency": {"folder": "saliency", "kind": "saliency", "channels": 1, "class_names": []},
            "edges": {"folder": "edge", "kind": "edges", "channels": 1, "class_names": []},
            "normal": {"folder": "normal", "kind": "normal", "channels": 3, "class_names": []},
        }
    return {
        "segmentation": {"folder": "label_7", "kind": "segmentation",
                         "channels": len(STREET_CLASSES), "class_names": list(STREET_CLASSES)},
        "depth": {"folder": "depth", "kind": "depth", "channels": 1, "class_names": [],
                  "units": "1/m"},
    }


def _check_name(name: str) -> None:
    if name not in _RENDERERS:
        raise ValueError(f"unknown benchmark {name!r}; available: {', '.join(BENCHMARKS)}")


def render(name: str, seed: int, split: str, index: int, size: tuple[int, int] = (64, 64)):
    """Render one image of a benchmark: {folder name: array}, as `generate` writes it.

    Args:
        name: one of BENCHMARKS.
        seed: the benchmark seed; split: "train" or "val"; index: the instance id.
        size: (H, W) in pixels.
    Returns:
        {"image": (H, W, 3) float32, "<label folder>": (H, W) float32 with -1 = ignore,
        then for indoor "depth": (H, W, 1) and "normal": (H, W, 3); for street "depth";
        for context "human_parts": (H, W) with -1 = ignore, "saliency" and "edge": (H, W) in
        {0, 1}, "normal": (H, W, 3); for the conflict levels "brightness" and "darkness":
        (H, W, 1); all float32}.
    """
    _check_name(name)
    if split not in _SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(_SPLIT_CODES)}")
    family = "synthetic-conflict" if name in CONFLICT_LEVELS else name  # levels share images
    rng = np.random.default_rng([seed, _SPLIT_CODES[split], index, zlib.crc32(family.encode())])
    return _RENDERERS[name](rng, (int(size[0]), int(size[1])))


def _write_one(job: tuple[str, int, str, int, tuple[int, int], str]) -> None:
    name, seed, split, index, size, root = job
    for folder, array in render(name, seed, split, index, size).items():
        np.save(Path(root, split, folder, f"{index}.npy"), array, allow_pickle=False)


def _pool_context():
    # On Linux, fork: workers start at once and the caller's script needs no __main__ guard
    # (forkserver and spawn re-import it). The workers only run numpy, so threads that torch
    # may have started in the parent are harmless there.
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


def _check_arguments(n_train: int, n_val: int, size: Sequence[int]) -> tuple[int, int]:
    """(H, W) after checking the image counts and size against MAX_IMAGES and SIZE_RANGE."""
    for label, value in (("n_train", n_train), ("n_val", n_val)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_IMAGES:
            raise DatasetError(f"{label}={value!r} is not accepted; give an integer from 1 to "
                               f"{MAX_IMAGES}")
    low, high = SIZE_RANGE
    if (len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)
            or not all(low <= v <= high for v in size)):
        raise DatasetError(f"size={list(size)!r} is not accepted; give [height, width] with each "
                           f"from {low} to {high}")
    return int(size[0]), int(size[1])


def _check_space(name: str, root: Path, images: int, size: tuple[int, int]) -> None:
    """Refuse when the files would not fit on the disk that holds `root` (estimated from one
    8x8 instance: the arrays' bytes scale with the pixel count)."""
    small = render(name, 0, "train", 0, (8, 8))
    per_pixel = sum(array.nbytes for array in small.values()) / 64
    needed = images * (per_pixel * size[0] * size[1] + 128 * len(small))  # 128: a .npy header
    existing = next(p for p in (root, *root.absolute().parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise DatasetError(f"{images} images of {size[0]}x{size[1]} would write about "
                           f"{needed / 1e12:.2f} TB to {root}, which has {free / 1e12:.2f} TB free; "
                           "choose fewer or smaller images")


def generate(name: str, root: str | os.PathLike, *, seed: int = 0, n_train: int = 800,
             n_val: int = 600, size: tuple[int, int] = (64, 64), workers: int | None = None
             ) -> Path:
    """Write a synthetic benchmark into `root` (created; must be empty) and return it.

    Args:
        name: one of BENCHMARKS.
        root: the folder to write ``{train,val}/<folder>/{i}.npy`` and ``meta.json`` into.
        seed: the benchmark seed; the same arguments give the same bytes.
        n_train, n_val: images per split (ids 0..n-1), each from 1 to MAX_IMAGES.
        size: (H, W) of the images, each within SIZE_RANGE.
        workers: processes to render with (default os.cpu_count()); does not change the output.
    """
    _check_name(name)
    h, w = _check_arguments(n_train, n_val, size)
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DatasetError(f"{root} exists and is not a folder; generate into a new or empty folder")
    if root.exists():
        held = sorted(p.name for p in root.iterdir())
        if held:
            raise DatasetError(f"{root} is not empty (it holds {', '.join(held[:3])}"
                               f"{', ...' if len(held) > 3 else ''}); generate into a new or "
                               "empty folder")
    _check_space(name, root, n_train + n_val, (h, w))
    tasks = _task_table(name)
    folders = ["image"] + [spec["folder"] for spec in tasks.values()]
    for split in _SPLIT_CODES:
        for folder in folders:
            (root / split / folder).mkdir(parents=True, exist_ok=True)
    jobs = [(name, seed, split, i, (h, w), str(root))
            for split, n in (("train", n_train), ("val", n_val)) for i in range(n)]
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    if workers <= 1 or multiprocessing.current_process().daemon:  # a job's process has no children
        for job in jobs:
            _write_one(job)
    else:
        chunk = max(1, len(jobs) // (8 * workers))
        with warnings.catch_warnings(), ProcessPoolExecutor(workers, _pool_context()) as pool:
            warnings.filterwarnings("ignore", "This process .* is multi-threaded",
                                    DeprecationWarning)
            for _ in pool.map(_write_one, jobs, chunksize=chunk):
                pass
    meta = {"benchmark": name, "generator_version": GENERATOR_VERSION, "seed": seed,
            "n_train": n_train, "n_val": n_val, "size": [h, w], "tasks": tasks}
    if name in CONFLICT_LEVELS:
        meta["conflict"] = CONFLICT_LEVELS[name]
    (root / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return root


def default_cache_dir() -> Path:
    """$MTU_CACHE_DIR if set, else ~/.cache/mtu."""
    return Path(os.environ.get("MTU_CACHE_DIR") or Path.home() / ".cache" / "mtu")


def get_benchmark(name: str, *, cache_dir: str | os.PathLike | None = None, seed: int = 0,
                  n_train: int = 800, n_val: int = 600, size: tuple[int, int] = (64, 64)) -> Path:
    """The folder of a synthetic benchmark in the cache, generated on first use.

    The folder is named from the arguments and GENERATOR_VERSION. It is generated into a hidden
    temporary sibling and renamed into place when complete, so an interrupted or concurrent
    generation never leaves a half-written folder under the final name.
    """
    _check_name(name)
    h, w = (int(s) for s in size)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = cache / f"{name}-v{GENERATOR_VERSION}-seed{seed}-{n_train}+{n_val}-{h}x{w}"
    if (final / "meta.json").is_file():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    if final.exists():  # not written by a completed generation: never use it
        shutil.rmtree(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=cache))
    try:
        generate(name, tmp, seed=seed, n_train=n_train, n_val=n_val, size=(h, w))
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "meta.json").is_file():  # lost a race only if the winner finished
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return final


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m core.data.synthetic",
                                     description="Write a synthetic multi-task benchmark.")
    parser.add_argument("name", choices=BENCHMARKS)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=800)
    parser.add_argument("--n-val", type=int, default=600)
    parser.add_argument("--size", default="64x64", help="HxW, e.g. 64x128")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        h, w = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size must look like 64x128, got {args.size!r}")
    out = generate(args.name, args.out, seed=args.seed, n_train=args.n_train, n_val=args.n_val,
                   size=(h, w), workers=args.workers)
    print(f"wrote {args.name} to {out}")


if __name__ == "__main__":
    main()
