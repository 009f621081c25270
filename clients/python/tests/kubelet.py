"""A stand-in for the kubelet's atomic writer (pkg/volume/util/atomic_writer.go).

A Secret volume looks like this inside the container::

    <dir>/..2026_11_28_12_00_00.123456789/token   the data, in a timestamped directory
    <dir>/..data -> ..2026_11_28_12_00_00.123456789
    <dir>/token  -> ..data/token                  what the pod reads

An update writes a new timestamped directory, points a temporary symlink ``..data_tmp`` at it,
renames that over ``..data`` (one atomic rename) and then removes the old directory.
"""

import itertools
import os
import time

_seq = itertools.count()


def _ts_dir_name():
    t = time.gmtime()
    return "..%s.%09d" % (time.strftime("%Y_%m_%d_%H_%M_%S", t), next(_seq))


def project(dirpath, data):
    """Write ``data`` (key -> str) into ``dirpath`` with the kubelet's layout, atomically."""
    os.makedirs(dirpath, exist_ok=True)
    new = _ts_dir_name()
    os.mkdir(os.path.join(dirpath, new))
    for key, value in data.items():
        with open(os.path.join(dirpath, new, key), "w") as f:
            f.write(value)
    data_link = os.path.join(dirpath, "..data")
    old = os.readlink(data_link) if os.path.islink(data_link) else None
    tmp = os.path.join(dirpath, "..data_tmp")
    if os.path.lexists(tmp):
        os.remove(tmp)
    os.symlink(new, tmp)
    os.rename(tmp, data_link)
    for key in data:
        user = os.path.join(dirpath, key)
        if not os.path.lexists(user):
            os.symlink(os.path.join("..data", key), user)
    if old:
        old_dir = os.path.join(dirpath, old)
        for name in os.listdir(old_dir):
            os.remove(os.path.join(old_dir, name))
        os.rmdir(old_dir)
